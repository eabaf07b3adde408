"""Where training runs: ``device: auto | cpu | cuda[:N]``, and the three helpers every training loop shares.

- :func:`resolve_device` turns the setting into a :class:`torch.device`: ``auto`` is the first CUDA GPU when
  torch sees one, else the CPU; ``cuda`` on a machine without one is a one-line :class:`DeviceError` that
  names the option it came from.
- :func:`to_device` moves a batch (a tuple of tensors) with ``non_blocking`` copies, which overlap with the
  GPU's work when the batch comes from pinned memory (:func:`pin_memory` says when a ``DataLoader`` should
  pin); in-memory datasets are staged on the device once per run (:func:`stage`).
- :class:`Precision` is automatic mixed precision: on CUDA, unless turned off (``amp: false``,
  ``--no-amp``), the forward pass runs under ``torch.autocast`` in float16 and the loss is scaled by a
  ``GradScaler``; on the CPU it is plain float32 and the same calls pass straight through.

Models are moved with ``model.to(device)`` by the loop that trains them; evaluation runs where the model is
(:func:`model_device`). Checkpoints and containers are always written from CPU tensors, so a file saved
from a CUDA run loads on a machine without one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import ContextManager

import torch
from torch import nn

from nas.errors import NasError

#: The settings ``device`` accepts (the experiment file's ``device:``, the commands' ``--device``).
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
#: The default everywhere: the CPU, which every test runs on.
DEFAULT_DEVICE = "cpu"


class DeviceError(NasError):
    """A device setting that is malformed or names a GPU this machine does not have."""


def check_device_name(name: str, option: str = "device") -> str:
    """``name`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else a DeviceError naming ``option``."""
    if not isinstance(name, str) or not re.match(DEVICE_PATTERN, name):
        raise DeviceError(f"{option} must be auto, cpu, cuda or cuda:N, but got {name!r}.")
    return name


def resolve_device(name: str | torch.device | None = None, option: str = "device") -> torch.device:
    """The :class:`torch.device` of a setting (None: :data:`DEFAULT_DEVICE`). ``option`` is how an error
    names the setting (``"--device"``, ``"experiment.yaml: device"``)."""
    if isinstance(name, torch.device):
        return name
    name = check_device_name(name or DEFAULT_DEVICE, option)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda", 0)
    if not torch.cuda.is_available():
        why = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceError(f"{option} {name}: this machine has no CUDA GPU ({why}; torch {torch.__version__}); "
                          f"use cpu instead, or auto to train on a GPU only where there is one.")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"{option} {name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                          f"(cuda:0 to cuda:{count - 1}); name one of them, or use cuda for the first.")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """How run.json and the commands' output name a device: ``cpu``, ``cuda:0 (NVIDIA H100)``."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a module without either)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Every tensor of ``batch`` on ``device`` (``non_blocking``: asynchronous from pinned memory; a tensor
    already there is returned as it is)."""
    return tuple(t.to(device, non_blocking=True) for t in batch)


def stage(columns: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """An in-memory dataset's columns on ``device`` for a whole run: one copy, then batches are sliced there."""
    return tuple(t.to(device) for t in columns)


def pin_memory(device: torch.device) -> bool:
    """Whether a ``DataLoader`` feeding ``device`` should pin its batches (``DataLoader(pin_memory=...)``)."""
    return device.type == "cuda"


class Precision:
    """Mixed precision of one training run: autocast to float16 and a ``GradScaler`` on CUDA when ``amp``,
    plain float32 otherwise. A loop calls ``with precision.autocast(): loss = ...``, then
    :meth:`backward` for each loss and :meth:`step` once per optimizer step."""

    def __init__(self, device: torch.device, amp: bool = True) -> None:
        self.device = device
        self.enabled = bool(amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled else None

    def autocast(self) -> ContextManager[object]:
        return torch.autocast("cuda", dtype=torch.float16) if self.enabled else nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, max_norm: float | None = None) -> bool:
        """One optimizer step, skipped when the gradients are not finite (the scaler's overflow, or on the
        CPU a step that blew up); ``max_norm`` clips the gradients' total norm first. Whether it stepped."""
        if max_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if self.scaler is None and not torch.isfinite(norm):
                optimizer.zero_grad(set_to_none=True)
                return False
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale  # the scaler lowers its scale when it skipped the step

    @property
    def name(self) -> str:
        """``"float16 (amp)"`` or ``"float32"``, as summaries record it."""
        return "float16 (amp)" if self.enabled else "float32"


def on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy (what files are written from: containers,
    ONNX exports)."""
    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


@contextmanager
def moved(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` on ``device`` for the block, back where it was afterwards (a calibration pass)."""
    home = model_device(model)
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)
