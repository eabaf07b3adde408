"""int8: fake-quantized training weights, float32 and int8 ONNX files run in a real onnxruntime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import nas
from nas.compress import apply_compression, stages
from nas.compress.int8 import (Int8Weight, OnnxModel, export_onnx, int8_levels, quantize_int8,
                               quantize_int8_weights, run_onnx)
from nas.data import Splits, load_dataset
from nas.errors import CompressError
from nas.spec import CompressionSpec
from nas.train import TrainConfig, evaluate, train


def _model() -> torch.nn.Module:
    arch = nas.load_space("mobilenetv2-tiny").random(0).arch
    torch.manual_seed(0)
    return nas.build_model(arch).eval()


def test_int8_levels_are_per_channel_symmetric() -> None:
    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.01]])
    codes, scale = int8_levels(w)
    assert codes.dtype == torch.int8 and scale.tolist() == pytest.approx([1 / 127, 1.0, 2 / 127])
    assert codes[0].tolist() == [64, -127, 32] and codes[1].tolist() == [0, 0, 0]  # an all-zero channel: scale 1
    assert codes[2].tolist() == [127, 64, -1]


def test_int8_weight_forward_is_the_grid_and_gradient_straight_through() -> None:
    layer = torch.nn.Conv2d(3, 4, 3)
    quantize_int8_weights(layer)
    assert isinstance(layer.parametrizations.weight[0], Int8Weight)
    latent = layer.parametrizations.weight.original
    codes, scale = int8_levels(latent)
    assert torch.equal(layer.weight, codes.float() * scale.reshape(-1, 1, 1, 1))
    assert (layer.weight - latent).abs().max() <= scale.max() / 2 + 1e-7  # at most half a step away
    layer(torch.randn(2, 3, 5, 5)).sum().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_int8_is_the_quantize_stage_and_keeps_pruned_weights_zero() -> None:
    spec = CompressionSpec(sparsity_conv=0.5, quantization="int8", huffman=False)
    assert [name for name, _ in stages(spec)] == ["prune", "quantize"]
    model = apply_compression(_model(), spec)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.kernel_size[0] > 1)
    quant = conv.parametrizations.weight[0]
    assert isinstance(quant, Int8Weight) and quant.mask is not None
    assert torch.all(conv.weight[~quant.mask] == 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module, Splits]:
    """A network trained briefly on digits (plumbing, not an accuracy claim), its int8 stage applied,
    exported to float32 ONNX and quantized to int8 with training inputs as calibration."""
    tmp = tmp_path_factory.mktemp("int8")
    splits = load_dataset("digits")
    arch = nas.load_space("mobilenetv2-tiny").with_input(splits.input_shape, splits.num_classes).random(0).arch
    torch.manual_seed(0)
    model = nas.build_model(arch)
    train(model, splits, TrainConfig(epochs=2, progress=False))
    model = apply_compression(model, CompressionSpec(quantization="int8")).eval()
    assert export_onnx(model, tmp / "m.onnx", arch.input_shape) < 1e-4  # bakes the int8 levels into plain weights
    quantize_int8(tmp / "m.onnx", tmp / "m.int8.onnx", splits.train[:256][0])
    return tmp / "m.onnx", tmp / "m.int8.onnx", model, splits


@pytest.mark.slow
def test_fp32_onnx_matches_torch_and_int8_stays_close(files: tuple[Path, Path, torch.nn.Module, Splits]) -> None:
    fp32, int8, model, splits = files
    x = splits.test[:][0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_onnx(fp32, x, threads=2) - ref).max() < 1e-4
    out = OnnxModel(int8).run(x)
    assert out.shape == ref.shape and not np.array_equal(out, ref)  # really quantized
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9  # a 2-epoch model: many near ties


@pytest.mark.slow
def test_int8_file_holds_the_trained_codes(files: tuple[Path, Path, torch.nn.Module, Splits]) -> None:
    """The trained grid is onnxruntime's: the int8 weights it writes are the codes training saw."""
    _, int8, model, _ = files
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    int8_weights = [a for a in (numpy_helper.to_array(i) for i in graph.initializer) if a.dtype == np.int8 and a.ndim == 4]
    assert int8_weights
    ours = [int8_levels(m.weight)[0].numpy() for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    matched = sum(any(o.shape == w.shape and np.array_equal(o, w) for o in ours) for w in int8_weights)
    assert matched == len(int8_weights)


@pytest.mark.slow
def test_onnx_accuracy_on_a_split(files: tuple[Path, Path, torch.nn.Module, Splits]) -> None:
    fp32, int8, model, splits = files
    torch_accuracy = evaluate(model, splits.test)
    assert OnnxModel(fp32).accuracy(splits.test, batch_size=100) == pytest.approx(torch_accuracy, abs=1e-9)
    assert abs(OnnxModel(int8).accuracy(splits.test) - torch_accuracy) <= 0.03


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CompressError, match="calibration must be one of"):
        quantize_int8(tmp_path / "a.onnx", tmp_path / "b.onnx", torch.zeros(1, 3), method="entropy")  # type: ignore[arg-type]
    with pytest.raises(CompressError, match="needs calibration inputs"):
        quantize_int8(tmp_path / "a.onnx", tmp_path / "b.onnx", [])
    with pytest.raises(CompressError, match="threads must be >= 1"):
        OnnxModel(tmp_path / "a.onnx", threads=0)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(CompressError, match="onnxruntime cannot load") as info:
        OnnxModel(tmp_path / "bad.onnx")
    assert "\n" not in str(info.value)


def test_int8_container_round_trips_and_matches_the_size_estimate(tmp_path: Path) -> None:
    from nas.compress import load, save

    arch = nas.load_space("mobilenetv2-tiny").random(0).arch
    torch.manual_seed(0)
    dense = nas.build_model(arch)
    x = torch.randn(4, *arch.input_shape)
    for spec in (CompressionSpec(quantization="int8", huffman=False),
                 CompressionSpec(quantization="int8", sparsity_conv=0.5, sparsity_linear=0.5)):
        model = apply_compression(dense, spec).eval()
        report = save(model, tmp_path / "a.nasz")
        estimate = nas.size_bits(arch, spec) / 8
        assert abs(report.file_bytes - estimate) <= 0.1 * estimate
        loaded = load(tmp_path / "a.nasz")
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))  # the same codes and scales
        save(loaded, tmp_path / "b.nasz")
        assert (tmp_path / "a.nasz").read_bytes() == (tmp_path / "b.nasz").read_bytes()
    rows = nas.size_report(arch, CompressionSpec(quantization="int8", huffman=False))
    weight_ops = [op for op in nas.ops(arch) if op.kind in ("conv", "linear")]
    assert [r.table_bits for r in rows] == [32 * op.cout for op in weight_ops]  # one scale per output channel
    assert all(r.value_bits == 8 for r in rows)
