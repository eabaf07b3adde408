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
from pydantic import ValidationError

from nas.checkpoint import read_checkpoint
from nas.compress import StageOptions
from nas.device import resolve_device
from nas.errors import CompressError, NasError, describe_validation_error
from nas.experiment import DatasetConfig
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
def add_data_arguments(group: argparse._ArgumentGroup, split_seed_default: int | None = None) -> None:
    """``--dataset``, ``--data-root``, ``--split-seed`` and, for image folders, ``--data-workers``."""
    group.add_argument("--dataset", default=None,
                       help="dataset name (default: digits; see `nas datasets`), or imagefolder: a folder of class "
                            "sub-folders given by --data-root, resized to the network's input")
    group.add_argument("--data-root", default=None, help="folder holding the dataset files (the image folder)")
    group.add_argument("--split-seed", type=int, default=split_seed_default,
                       help="seed of the train/val split; keep it equal for teacher and student (default: 0)")
    group.add_argument("--data-workers", type=int, default=None,
                       help="DataLoader processes that decode an image folder (default: 0, in this process)")


def dataset_of(args: argparse.Namespace, augment: Any = None) -> DatasetConfig:
    """The dataset settings ``--dataset``, ``--data-root``, ``--split-seed``, ``--data-workers`` (and
    ``augment``, a JSON object) give, checked as an experiment file's ``dataset:`` is."""
    settings: dict[str, Any] = {"name": args.dataset or "digits", "root": args.data_root,
                                "split_seed": args.split_seed or 0}
    if args.data_workers is not None:
        settings["workers"] = args.data_workers
    if augment is not None:
        settings["augment"] = augment
    try:
        return DatasetConfig.model_validate(settings)
    except ValidationError as exc:
        flags = {"workers": "--data-workers", "augment": "--augment"}
        text = describe_validation_error(exc).removeprefix("(top level): ")
        for key, flag in flags.items():
            text = text.replace(f"{key} is a setting", f"{flag} is a setting").replace(f"{key}.", f"{flag} ")
        raise NasError(f"{text}.") from None


def recorded_normalization(checkpoint: str | Path | None, dataset: str | None) -> dict[str, list[float]] | None:
    """The standardisation a checkpoint was trained with, when it was trained on ``dataset`` (None: not
    recorded, another dataset, or no checkpoint): a fine-tuned or compressed model sees its inputs as before."""
    if checkpoint is None or not str(checkpoint).endswith(".safetensors"):
        return None
    extra = read_checkpoint(checkpoint)[1].get("extra") or {}
    recorded = extra.get("normalization")
    if extra.get("dataset") != (dataset or "digits") or not isinstance(recorded, dict):
        return None
    return {"mean": list(recorded.get("mean", [])), "std": list(recorded.get("std", []))}


def add_stage_arguments(p: argparse.ArgumentParser) -> None:
    """How the compression stages work (:class:`nas.compress.StageOptions`): ``nas compress`` and ``nas finetune``."""
    g = p.add_argument_group("compression methods (how the spec's stages run)")
    g.add_argument("--prune-scope", choices=["layer", "global"], default="layer",
                   help="prune each layer to its sparsity, or rank all conv (and all linear) weights together "
                        "(default: %(default)s)")
    g.add_argument("--centroid-init", choices=["linear", "density", "random"], default="linear",
                   help="k-means centroid initialization of codebook_bits (Deep Compression's Figure 8; "
                        "default: %(default)s)")
    g.add_argument("--lowrank-method", choices=["two_component", "cp"], default="two_component",
                   help="factorization for lowrank_ratio: Jaderberg's two components or CP (default: %(default)s; "
                        "nas.size_bits prices two_component)")


def stage_options(args: argparse.Namespace) -> StageOptions:
    return StageOptions(scope=args.prune_scope, init=args.centroid_init, lowrank_method=args.lowrank_method)
