"""Reading what a command-line argument names: a candidate file, a JSON object or JSON file, a device.

Only the command modules read these (their messages name the argument), so they live
here rather than in a library floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from nas.device import resolve_device
from nas.errors import CompressError, NasError
from nas.spec import Candidate


def read_candidate(path: str | Path) -> Candidate:
    """The :class:`~nas.spec.Candidate` in a JSON file (a line of ``nas sample --json``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise NasError(f"cannot read candidate file {str(path)!r}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise NasError(f"candidate file {str(path)!r} is not UTF-8 text (a binary or damaged file?).") from None
    return Candidate.from_json(text)


def read_json_arg(text_or_path: str, what: str) -> Any:
    """``text_or_path`` parsed as JSON: the text itself when it starts with ``{``, else the file it names.
    ``what`` names the argument in the error (``"--spec"``), which says whether the file is missing or
    not JSON."""
    if text_or_path.lstrip().startswith("{"):
        try:
            return json.loads(text_or_path)
        except json.JSONDecodeError as exc:
            raise CompressError(f"{what} is not a valid JSON object: {exc}.") from None
    path = Path(text_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompressError(f"{what} {text_or_path!r} is neither a JSON object (starting with '{{') nor an "
                            f"existing file (no {path.resolve()}).") from None
    except UnicodeDecodeError:
        raise CompressError(f"{what} file {text_or_path!r} is not JSON text (a binary file?).") from None
    except OSError as exc:
        raise CompressError(f"cannot read {what} {text_or_path!r}: {exc.strerror}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CompressError(f"{what} file {text_or_path!r} is not valid JSON: {exc}.") from None


def add_device_arguments(parser: argparse.ArgumentParser, default: str, amp: bool = True) -> None:
    """``--device`` and (unless not ``amp``: nothing trains) ``--no-amp`` (:mod:`nas.device`); ``default`` says in
    the help what applies without them."""
    g = parser.add_argument_group("device")
    g.add_argument("--device", default=None, metavar="auto|cpu|cuda[:N]",
                   help=f"where to run: cpu, auto (a CUDA GPU when there is one, else the CPU) or cuda[:N] "
                        f"(default: {default})")
    if not amp:
        return
    g.add_argument("--no-amp", action="store_true",
                   help="on CUDA, train in float32 (default: mixed precision, float16 autocast with gradient "
                        "scaling); the CPU always trains in float32")


def device_of(args: argparse.Namespace, setting: str, where: str) -> torch.device:
    """The device ``--device`` (else ``setting``, from ``where``: the experiment file's ``device:``) resolves to
    on this machine; a one-line error naming the option when it asks for a GPU this machine lacks."""
    if args.device is not None:
        return resolve_device(args.device, "--device")
    return resolve_device(setting, where)
