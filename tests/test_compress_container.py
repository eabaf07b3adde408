"""The NASZ container: round trips, size agreement with nas.size_bits, rejection of bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.compress import apply_compression, decode, encode, load, save
from nas.compress import huffman
from nas import storage
from nas.compress.container import positions_from_indices, relative_indices
from nas.cost import _index_stats
from nas.errors import CompressError

torch.set_num_threads(1)


def lenet300(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    arch = nas.ArchSpec((784,), (nas.Linear(300, act="relu"), nas.Linear(100, act="relu"), nas.Linear(10)))
    return nas.build_model(arch)


def small_conv(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = (nas.Conv(8, 3), nas.InvertedResidual(8, expansion=3), nas.GlobalAvgPool(), nas.Linear(5))
    return nas.build_model(nas.ArchSpec((3, 8, 8), layers))


def test_huffman_round_trip_and_near_entropy() -> None:
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.3, 5000) - 1, 31)
    freqs = np.bincount(symbols, minlength=32)
    lengths = huffman.code_lengths(freqs)
    data, nbits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, nbits, symbols.size, lengths), symbols)
    p = freqs[freqs > 0] / symbols.size
    entropy = float(-(p * np.log2(p)).sum())
    assert entropy <= nbits / symbols.size < entropy + 1


def test_relative_indices_with_fillers_round_trip() -> None:
    mask = np.zeros(500, dtype=bool)
    mask[[0, 3, 40, 41, 200, 499]] = True
    symbols = relative_indices(mask, 5)
    assert (symbols == 31).sum() == 1 + 5 + 9  # gaps 37, 159 and 299 need 1, 5 and 9 fillers of 31
    assert np.array_equal(positions_from_indices(symbols, 5, 500), np.flatnonzero(mask))


@pytest.mark.parametrize("spec", [
    nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5),
    nas.CompressionSpec(sparsity_linear=0.9, codebook_bits=4, huffman=False),
    nas.CompressionSpec(sparsity_linear=0.5, quantization="ternary"),
    nas.CompressionSpec(quantization="binary"),
    nas.CompressionSpec(sparsity_linear=0.8),
    nas.CompressionSpec(sparsity_linear=0.9, codebook_bits=5, layers={"layers.0": {"sparsity": 0.92, "bits": 6},
                                                                      2: {"sparsity": 0.74, "bits": 2}}),
])
def test_round_trip_is_bit_exact(spec: nas.CompressionSpec, tmp_path: Path) -> None:
    model = apply_compression(lenet300(), spec)
    model.eval()
    report = save(model, tmp_path / "m.nasz", huffman_coding=spec.huffman)
    loaded = load(tmp_path / "m.nasz")
    x = torch.randn(5, 784)
    assert torch.equal(loaded(x), model(x))
    for name, a in model.named_modules():
        if isinstance(a, (torch.nn.Linear, torch.nn.Conv2d)):
            assert torch.equal(a.weight, loaded.get_submodule(name).weight), name
    assert report.file_bytes == (tmp_path / "m.nasz").stat().st_size
    if spec.codebook_bits is not None or spec.quantization == "none":
        assert encode(loaded, huffman_coding=spec.huffman)[0] == (tmp_path / "m.nasz").read_bytes()


def test_round_trip_conv_lowrank_and_batch_norm(tmp_path: Path) -> None:
    model = small_conv()
    model.train()
    model(torch.randn(8, 3, 8, 8))  # non-trivial running statistics
    spec = nas.CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.5, codebook_bits=3, lowrank_ratio=0.25)
    model = apply_compression(model, spec)
    model.eval()
    save(model, tmp_path / "c.nasz")
    loaded = load(tmp_path / "c.nasz")
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("sparsity,width", [(0.25, 1), (0.5, 8), (0.9, 8), (0.92, 5), (0.97, 5), (0.75, 1)])
def test_expected_fillers_equal_the_encoders_count(sparsity: float, width: int) -> None:
    """One filler rule (nas.storage): the cost model's expected fillers and symbol frequencies are
    what the encoder writes for random masks of that density."""
    rng = np.random.default_rng(1)
    mask = rng.random(4_000_000) >= sparsity
    symbols = relative_indices(mask, width)
    kept = int(mask.sum())
    fillers, _, probs = _index_stats(sparsity, width)
    assert (symbols == storage.max_gap(width)).sum() / kept == pytest.approx(fillers, rel=0.01, abs=1e-4)
    counted = np.bincount(symbols, minlength=2**width) / symbols.size
    assert np.abs(counted - probs).sum() < 0.01


def gaussian(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Conv/linear weights redrawn from a Gaussian of their init's spread: what size_bits models."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, float(m.weight.std()))
    return model


def size_error(space: nas.Space, seed: int) -> float:
    cand = space.random(seed)
    model = apply_compression(gaussian(nas.build_model(cand.arch), seed), cand.compression)
    data, _ = encode(model, huffman_coding=cand.compression.huffman)
    return (nas.size_bits(cand.arch, cand.compression) / 8 - len(data)) / len(data)


@pytest.mark.parametrize("name,seeds", [("lenet", (0, 3, 4, 5)), ("mobilenetv2-tiny", (0, 1, 2, 4, 6, 7))])
def test_file_size_agrees_with_size_bits(name: str, seeds: tuple[int, ...]) -> None:
    """A few random candidates (binary, ternary, float and codebook, pruned and low-rank): within 3%."""
    space = nas.load_space(name)
    errors = {seed: size_error(space, seed) for seed in seeds}
    assert max(map(abs, errors.values())) <= 0.03, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet", "mobilenetv2-tiny", "mobilenetv2"])
def test_file_size_agrees_with_size_bits_on_many_candidates(name: str) -> None:
    """Within 3%, Huffman-coded k-means codebooks included (their code length comes from the container's
    own k-means run on a sample of the modelled survivors)."""
    space = nas.load_space(name)
    for seed in range(12):
        assert abs(size_error(space, seed)) <= 0.03, (seed, space.random(seed).compression)


@pytest.mark.parametrize("layers", [
    {0: {"sparsity": 0.92, "bits": 6}, 1: {"sparsity": 0.91, "bits": 6}, 2: {"sparsity": 0.74, "bits": 6}},
    {"layers.1.0": {"bits": 2}},  # one layer's bits, the spec's sparsity
    {0: {"sparsity": 0.5}},  # one layer's sparsity, the others' float32 weights dense
])
def test_per_layer_settings_are_in_the_file_and_in_size_bits(layers: dict) -> None:
    """Deep Compression's per-layer tables: each layer is pruned and shared at its own rate and bits, the
    file's records hold them, and size_bits prices them within 3% of the file."""
    spec = nas.CompressionSpec(sparsity_linear=0.8, codebook_bits=4 if len(layers) > 1 else None, layers=layers)
    model = apply_compression(gaussian(lenet300(), 0), spec)
    data, report = encode(model)
    for layer, record in zip(range(3), report.layers):
        assert record.kept == record.weights - round(record.weights * spec.sparsity_of(layer, "linear"))
        assert record.value_bits == (spec.bits_of(layer) or 32)
    assert abs(nas.size_bits(model.spec, spec) / 8 - len(data)) <= 0.03 * len(data)
    assert nas.size_bits(model.spec, spec) != nas.size_bits(model.spec, nas.CompressionSpec(
        sparsity_linear=0.8, codebook_bits=spec.codebook_bits))


def test_moderate_pruning_with_a_codebook_is_not_bigger_than_dense() -> None:
    """25-50% pruning + 4-bit codebook without Huffman: stored as a keep-bitmap, not 8/5-bit gaps, so it is
    no bigger than the unpruned codebook (at 25% a bitmap costs 1 + 0.75 * 4 = 4 bits a weight, a tie up to
    each layer's 4-byte symbol count); the cost model makes the same choice."""
    model = small_conv()
    for sparsity in (0.25, 0.5):
        spec = nas.CompressionSpec(sparsity_conv=sparsity, sparsity_linear=sparsity, codebook_bits=4, huffman=False)
        dense_spec = nas.CompressionSpec(codebook_bits=4, huffman=False)
        data, report = encode(apply_compression(model, spec), huffman_coding=False)
        dense, _ = encode(apply_compression(model, dense_spec), huffman_coding=False)
        assert len(data) <= (len(dense) + 4 * len(report.layers) if sparsity == 0.25 else len(dense) - 1)
        assert all(layer.index_bits == 1 for layer in report.layers)
        assert all(layer.index_bits == 1 for layer in nas.size_report(model.spec, spec))
        # the tie at 25%: each layer's symbol count, and the byte padding of its second stream (4 bits on average)
        slack = (8 * 4 + 4) * len(report.layers) if sparsity == 0.25 else 0
        assert nas.size_bits(model.spec, spec) <= nas.size_bits(model.spec, dense_spec) + slack
        assert abs(nas.size_bits(model.spec, spec) / 8 - len(data)) <= 0.03 * len(data)
        assert torch.equal(decode(data)(torch.ones(1, 3, 8, 8)), apply_compression(model, spec).eval()(
            torch.ones(1, 3, 8, 8)))


def test_compressed_file_is_really_smaller(tmp_path: Path) -> None:
    model = lenet300()
    dense = save(model, tmp_path / "dense.nasz")
    small = save(apply_compression(model, nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5)),
                 tmp_path / "small.nasz")
    assert dense.file_bytes >= 4 * nas.count(model.spec).params
    assert small.rate > 30 and small.file_bytes * 30 < dense.file_bytes


def test_truncated_and_altered_files_are_rejected(tmp_path: Path) -> None:
    model = apply_compression(lenet300(), nas.CompressionSpec(sparsity_linear=0.9, codebook_bits=5))
    data, _ = encode(model)
    for cut in (3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CompressError, match="truncated|checksum|magic"):
            decode(data[:cut])
    rng = np.random.default_rng(0)
    for pos in rng.integers(4, len(data), 20):
        altered = bytearray(data)
        altered[pos] ^= 0x40
        with pytest.raises(CompressError):
            decode(bytes(altered))
    with pytest.raises(CompressError, match="magic"):
        decode(b"PK\x03\x04" + data[4:])
    with pytest.raises(CompressError, match="cannot read"):
        load(tmp_path / "missing.nasz")


def test_model_without_arch_is_a_clear_error() -> None:
    with pytest.raises(CompressError, match="nas Network"):
        encode(torch.nn.Linear(3, 3))


def test_lenet300_reference_rate_is_reported() -> None:
    report = encode(apply_compression(lenet300(), nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5)))[1]
    assert math.isclose(report.rate, report.dense_bits / (8 * report.file_bytes))
    assert sum(layer.kept for layer in report.layers) == sum(
        layer.kept for layer in nas.size_report(lenet300().spec, nas.CompressionSpec(sparsity_linear=0.92)))
