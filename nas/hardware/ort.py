"""Timing ONNX files with onnxruntime, under the protocol of :mod:`nas.hardware.measure`.

An int8 network runs in onnxruntime, not in torch (which has no int8 CPU inference
for these layers), so its latency is measured there: each layer (or whole network)
exported to float32 ONNX, quantized to int8 with :func:`nas.compress.int8.quantize_int8`
when the precision is int8, and timed as one ``InferenceSession.run`` call. A layer
timed alone pays the quantize of its input and the dequantize of its output, which a
whole int8 network pays once; the linear calibration of a table
(``nas hardware calibrate --precision int8``) corrects that, like the per-call overheads
of torch tables.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.compress.int8 import export_onnx, quantize_int8, session
from nas.errors import HardwareError
from nas.models import build_model
from nas.spec import ArchSpec, Layer

#: Runtimes a table may be measured with, and the precisions each runs.
RUNTIMES = {"torch": ("float32",), "onnxruntime": ("float32", "int8")}
CALIBRATION_BATCHES = 4


def check_runtime(runtime: str, precision: str) -> None:
    """One-line error unless ``runtime`` is known and runs ``precision``."""
    if runtime not in RUNTIMES:
        raise HardwareError(f"runtime must be one of {list(RUNTIMES)}, but got {runtime!r}.")
    if precision not in RUNTIMES[runtime]:
        raise HardwareError(f"runtime {runtime!r} runs {list(RUNTIMES[runtime])}, not {precision!r}; "
                            f"int8 latency is measured with `--runtime onnxruntime --precision int8`.")


def runtime_version(runtime: str) -> str:
    if runtime == "torch":
        return torch.__version__
    import onnxruntime as ort  # imported here: the `nas` command should not pay for it at start-up

    return str(ort.__version__)


class OrtCall:
    """An ONNX file in an ``InferenceSession``, callable like a torch module by :class:`nas.hardware.measure.Timer`."""

    def __init__(self, path: str | Path, threads: int) -> None:
        self.session = session(path, threads=threads)
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> OrtCall:
        return self

    def __call__(self, x: np.ndarray) -> Any:
        return self.session.run(None, {self.input_name: x})


def onnx_file(model: torch.nn.Module, input_shape: tuple[int, ...], precision: str, folder: Path, stem: str,
              *, seed: int = 0) -> Path:
    """``model`` as ``folder/stem.onnx`` (float32) or ``folder/stem.int8.onnx`` (int8, calibrated on random
    normal inputs: the ranges matter for accuracy, not for the time an int8 kernel takes)."""
    fp32 = folder / f"{stem}.onnx"
    export_onnx(model, fp32, input_shape)
    if precision == "float32":
        return fp32
    gen = torch.Generator().manual_seed(seed)
    calibration = [torch.randn(8, *input_shape, generator=gen) for _ in range(CALIBRATION_BATCHES)]
    return quantize_int8(fp32, folder / f"{stem}.int8.onnx", calibration)


def layer_call(layer: Layer, shape: tuple[int, ...], batch: int, precision: str, threads: int, folder: Path,
               stem: str, *, lowrank: float | None = None) -> tuple[OrtCall, np.ndarray]:
    """The layer's own module (``layers.0`` of a one-layer network, factorized at ``lowrank``) as an ONNX
    session at ``precision``, and its input."""
    torch.manual_seed(0)
    module = build_model(ArchSpec(shape, (layer,), lowrank=lowrank)).layers[0]
    path = onnx_file(module, shape, precision, folder, stem)
    return OrtCall(path, threads), np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)


def network_calls(archs: Sequence[ArchSpec], batch: int, threads: int, folder: Path
                  ) -> list[tuple[OrtCall, np.ndarray]]:
    """Whole networks as ONNX sessions, each at its ``precision`` (random weights: timing only)."""
    items = []
    for i, arch in enumerate(archs):
        torch.manual_seed(0)
        path = onnx_file(build_model(arch), arch.input_shape, arch.precision, folder, f"net{i}")
        items.append((OrtCall(path, threads),
                      np.random.default_rng(0).standard_normal((batch, *arch.input_shape), dtype=np.float32)))
    return items


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the ONNX files of one measurement (removed afterwards)."""
    return tempfile.TemporaryDirectory(prefix="nas-onnx-")
