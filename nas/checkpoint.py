"""Checkpoints: a model's weights as safetensors, with a JSON description in its header.

One file holds everything: the tensors of ``model.state_dict()`` and, in the
safetensors metadata under the key ``"nas"``, a JSON document with the
:class:`~nas.spec.Candidate` (``to_dict()``), the versions of ``nas`` and
``torch``, a SHA-256 digest of the tensor data and whatever ``extra`` the caller
adds (accuracies, the dataset, the teacher). Nothing is pickled, so loading a
file cannot run code; the digest and a strict shape check turn a truncated,
altered or foreign file into a clear :class:`~nas.errors.TrainError`.

Files are written to a temporary file in the same folder and moved into place
with ``os.replace``, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from nas.errors import NasError, TrainError
from nas.spec import Candidate

FORMAT = "nas-checkpoint"
FORMAT_VERSION = 1


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Clones: safetensors refuses tensors sharing memory, and this detaches from the graph.
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, model: nn.Module, candidate: Candidate,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and ``candidate``'s description to ``path`` atomically; returns the path.

    ``extra`` must be JSON-serialisable (numbers, strings, lists, dicts).
    """
    from nas import __version__

    path = Path(path)
    tensors = _state(model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "candidate": candidate.to_dict(),
        "versions": {"nas": __version__, "torch": torch.__version__},
        "sha256": _digest(tensors),
        "extra": extra or {},
    }
    try:
        header = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"save_checkpoint: extra must be JSON-serialisable, but {exc}.") from None
    data = st_save(tensors, metadata={"nas": header})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON description of a checkpoint, verified against the digest."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrainError(f"cannot read checkpoint {str(path)!r}: {exc.strerror}.") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise TrainError(f"{str(path)!r} is not a readable safetensors file (truncated or altered?): {exc}.") from None
    text = (header.get("__metadata__") or {}).get("nas")
    if text is None:
        raise TrainError(f"{str(path)!r} is a safetensors file but not a nas checkpoint: its header has no 'nas' "
                         f"description (save it with nas.checkpoint.save_checkpoint).")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainError(f"{str(path)!r}: the checkpoint description is not valid JSON: {exc}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainError(f"{str(path)!r}: the description's format must be {FORMAT!r}, but got "
                         f"{meta.get('format') if isinstance(meta, dict) else meta!r}.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TrainError(f"{str(path)!r}: checkpoint format_version {meta.get('format_version')!r} is not supported "
                         f"(this nas reads version {FORMAT_VERSION}).")
    if _digest(tensors) != meta.get("sha256"):
        raise TrainError(f"{str(path)!r}: the weights do not match the checkpoint's SHA-256 digest; the file was "
                         f"altered or damaged after it was written.")
    return tensors, meta


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``tensors`` into ``model``; every name and shape must match (another architecture is refused)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [f"{k}: model {tuple(own[k].shape)} vs file {tuple(tensors[k].shape)}"
             for k in sorted(set(own) & set(tensors)) if own[k].shape != tensors[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:3]}{' ...' if len(wrong) > 3 else ''}")
        raise TrainError(f"{source} holds weights of another architecture: {'; '.join(parts)}.")
    model.load_state_dict(tensors, strict=True)


def load_checkpoint(path: str | Path, *, expected: Candidate | None = None
                    ) -> tuple[nn.Module, Candidate, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights: ``(model, candidate, meta)``.

    ``meta`` is the JSON description (``extra``, ``versions`` ...). With
    ``expected``, a checkpoint of any other architecture is refused.
    """
    from nas.models import build_model

    tensors, meta = read_checkpoint(path)
    try:
        candidate = Candidate.from_dict(meta.get("candidate"))  # type: ignore[arg-type]
        model = build_model(candidate.arch)
    except NasError as exc:
        raise TrainError(f"{str(path)!r}: the checkpoint's candidate is invalid: {exc}") from None
    if expected is not None and expected.arch != candidate.arch:
        raise TrainError(f"{str(path)!r} holds another architecture than expected: file has "
                         f"{candidate.arch.family or 'an'} arch with {len(candidate.arch.layers)} layers and input "
                         f"{candidate.arch.input_shape}, expected {expected.arch.family or 'an'} arch with "
                         f"{len(expected.arch.layers)} layers and input {expected.arch.input_shape}.")
    load_weights(model, tensors, repr(str(path)))
    model.eval()
    return model, candidate, meta
