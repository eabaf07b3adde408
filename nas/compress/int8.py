"""int8: per-channel int8 weights while training, then a real int8 network through onnxruntime.

Training side (the ``quantize`` stage for ``quantization: int8``): each conv/linear
``weight`` becomes a :mod:`torch.nn.utils.parametrize` parametrization
:class:`Int8Weight` returning ``scale_c * q`` with ``q = clip(round(w / scale_c), -127, 127)``
and ``scale_c = max|w_c| / 127`` per output channel ``c`` (symmetric, zero point 0).
The gradient is the straight-through estimator: the backward pass is the identity,
so proxy training and the recovery fine-tune see the int8 rounding error while the
float latent weight keeps learning. That grid is onnxruntime's own for symmetric
per-channel int8 weights (``qmin, qmax = -127, 127``, ``scale = absmax / 127``), so the
weights :func:`quantize_int8` writes into the int8 ONNX are the codes trained here.

Inference side: :func:`export_onnx` (float32 ONNX by ``torch.onnx.export``, checked against
torch with onnxruntime), :func:`quantize_int8` (onnxruntime's ``quantize_static``: QDQ
format, per-channel int8 weights, int8 activations whose ranges are calibrated on input
batches), and :class:`OnnxModel` to run and score an ONNX file in an ``InferenceSession``.
onnxruntime fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into ``QLinearConv``
(and adds into ``QLinearAdd``): the network then runs in int8.

Nothing here is hand-written that a library does; :class:`Int8Weight` is, because
``torch.ao`` fake-quantization targets its own conversion flow and does not compose with
the other parametrizations (pruning masks) the container reads.
"""

from __future__ import annotations

import contextlib
import json
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from nas.compress.sharing import quantizable_layers
from nas.device import on_cpu
from nas.errors import CompressError
from nas.imagefolder import in_order

QMAX = 127
Calibration = Literal["minmax", "percentile"]
CALIBRATIONS = ("minmax", "percentile")


# --------------------------------------------------------------------------- training: fake-quantized weights


def int8_levels(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes with ``weight``'s shape, float32 scale per output channel), no gradient.

    An all-zero channel gets scale 1 (its codes are all 0), so no division by zero.
    """
    w = weight.detach().float()
    absmax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    codes = torch.clamp(torch.round(w / scale.reshape(shape)), -QMAX, QMAX).to(torch.int8)
    return codes, scale


class Int8Weight(nn.Module):
    """Parametrization ``weight = scale_c * q * mask`` with a straight-through gradient (module docstring)."""

    def __init__(self, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("mask", mask.bool().clone() if mask is not None else None)

    def levels(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, per-channel scales) of ``latent`` with pruned weights at code 0."""
        w = latent if self.mask is None else latent * self.mask
        return int8_levels(w)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        codes, scale = self.levels(latent)
        values = codes.to(latent.dtype) * scale.to(latent.dtype).reshape((-1,) + (1,) * (latent.dim() - 1))
        out = latent + (values - latent).detach()  # forward: the int8 grid; backward: identity
        return out * self.mask if self.mask is not None else out


def quantize_int8_weights(model: nn.Module, *, layers: list[str] | None = None) -> dict[str, Int8Weight]:
    """Give every conv/linear weight (or those in ``layers``) per-channel int8 levels, in place.

    Pruned layers keep their mask: pruned weights stay zero (code 0) and do not set the scale.
    """
    out: dict[str, Int8Weight] = {}
    for name, module, mask in quantizable_layers(model, layers, "int8 weights"):
        quant = Int8Weight(mask)
        parametrize.register_parametrization(module, "weight", quant)
        out[name] = quant
    return out


# --------------------------------------------------------------------------- inference: ONNX files


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """torch.onnx logs a warning per missing torchvision op and warns about its internals; keep the terminal clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def bake(model: nn.Module) -> nn.Module:
    """Fold every parametrization (pruning masks, codebooks, binary/ternary/int8 levels) of ``model`` into plain
    weights, in place: the same function, in ops every exporter knows. (Parametrized modules do not survive
    ``copy.deepcopy``, so this changes the model it is given.)"""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def session(path: str | Path, *, threads: int = 1) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU with ``threads`` intra-op threads (1 inter-op)."""
    import onnxruntime as ort  # imported here: the `nas` command should not pay for it at start-up

    if threads < 1:
        raise CompressError(f"onnxruntime threads must be >= 1, but got {threads}.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the NCHWc and QDQ fusions log warnings that say nothing wrong
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise CompressError(f"onnxruntime cannot load {str(path)!r}: {str(exc).splitlines()[0]}") from None


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                metadata: dict[str, Any] | None = None) -> float:
    """Write ``model`` as a float32 ONNX file (batch dimension dynamic); returns the largest output
    difference between onnxruntime and torch on two random inputs. ``metadata``: written into the file's
    ``metadata_props``, each value as JSON (the winners record their dataset's ``mean`` and ``std``,
    which the input must be standardised with, and its class names).

    The model's parametrizations are folded into its weights first (:func:`bake`, in place), so
    the file computes what the compressed model computes. ``torch.onnx.export`` with the
    ``torch.export`` exporter (the TorchScript one is deprecated), at its default opset.
    """
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    model = bake(on_cpu(model).eval())  # onnxruntime checks it on the CPU
    with torch.no_grad():
        ref = model(x)
    ref = ref[0] if isinstance(ref, tuple) else ref
    with quiet_export():
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False, input_names=["input"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    if metadata:
        import onnx

        proto = onnx.load(str(path))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=json.dumps(value))
        onnx.save(proto, str(path))
    out = OnnxModel(path).run(x.numpy())
    return float(np.abs(out - ref.numpy()).max())


def _batches(calibration: torch.Tensor | np.ndarray | Iterable[Any], batch_size: int) -> list[np.ndarray]:
    """Calibration input as float32 arrays of at most ``batch_size``: a tensor or array is split,
    an iterable yields batches (or ``(inputs, labels)`` pairs, as a DataLoader does)."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(calibration).float()
        return [b.numpy() for b in x.split(batch_size)]
    out = []
    for item in calibration:
        x = item[0] if isinstance(item, (tuple, list)) else item
        out.append(torch.as_tensor(x).float().numpy())
    return out


def quantize_int8(fp32_onnx: str | Path, int8_onnx: str | Path,
                  calibration: torch.Tensor | np.ndarray | Iterable[Any], *, method: Calibration = "minmax",
                  batch_size: int = 64) -> Path:
    """Write the int8 version of ``fp32_onnx`` to ``int8_onnx`` with onnxruntime's ``quantize_static``.

    QDQ format, symmetric per-channel int8 weights, int8 activations (asymmetric, per tensor)
    whose ranges come from running ``calibration`` (input batches: a tensor of inputs,
    or an iterable of batches or of ``(inputs, labels)``) through the model: ``minmax``
    takes the observed extremes, ``percentile`` clips the 0.01% tails. The model is first
    pre-processed (shape inference, batch norm folded into the convs) as onnxruntime advises.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATIONS:
        raise CompressError(f"int8 calibration must be one of {list(CALIBRATIONS)}, but got {method!r}.")
    batches = _batches(calibration, batch_size)
    if not batches or sum(len(b) for b in batches) == 0:
        raise CompressError("int8 quantization needs calibration inputs, but got none.")
    input_name = session(fp32_onnx).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {input_name: batch}

    target = Path(int8_onnx)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre))
        with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its progress
            quantize_static(str(pre), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax if method == "minmax"
                            else CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": 99.99})
    return target


class OnnxModel:
    """An ONNX file run with onnxruntime on the CPU: logits, predictions, accuracy on a dataset."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        self.path = Path(path)
        self.session = session(path, threads=threads)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = tuple(int(d) for d in first.shape[1:] if isinstance(d, int))

    def run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The model's output (logits) for a batch ``x``, reshaped to the model's input shape when it differs."""
        x = torch.as_tensor(x).float()
        if self.input_shape and tuple(x.shape[1:]) != self.input_shape:
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.session.run(None, {self.input_name: x.numpy()})[0]

    def accuracy(self, dataset: Dataset[tuple[torch.Tensor, ...]], *, batch_size: int = 256) -> float:
        """Top-1 accuracy on a dataset of ``(inputs, labels)`` (e.g. ``splits.test``)."""
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise CompressError("accuracy of an empty dataset is undefined.")
        hits = 0
        for x, y, *_ in in_order(dataset, batch_size):  # in-memory tensors or a streamed image folder
            hits += int((self.run(x).argmax(axis=1) == y.numpy()).sum())
        return hits / n


def run_onnx(path: str | Path, x: np.ndarray | torch.Tensor, *, threads: int = 1) -> np.ndarray:
    """Output of the ONNX file at ``path`` for the batch ``x`` (one session, ``threads`` intra-op threads)."""
    return OnnxModel(path, threads=threads).run(x)
