"""What ``nas train`` and ``nas finetune`` share: the candidate, data and training options,
and how a trained model is saved and reported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.checkpoint import read_checkpoint, save_checkpoint
from nas.cli._args import add_data_arguments, add_device_arguments, dataset_of, read_candidate, read_json_arg
from nas.cost import count
from nas.data import Splits, load_configured
from nas.device import describe, model_device, resolve_device
from nas.errors import NasError
from nas.factoring import lowrank_settings
from nas.space import load_space
from nas.spec import Candidate
from nas.train import TrainConfig, evaluate


#: The training options' values when not given. They are None on the command line, so that
#: ``nas finetune RUN`` can tell a given option (applied, or refused) from a default.
DEFAULTS: dict[str, Any] = {"dataset": "digits", "split_seed": 0, "seed": 0, "epochs": 10, "batch_size": 64,
                            "lr": 0.05, "schedule": "cosine", "threads": max(1, torch.get_num_threads()),
                            "device": "cpu", "lowrank_penalty": 0.0}


def add_training_arguments(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    """The candidate, data and training options, and ``-o/--out``."""
    src = p.add_argument_group("candidate")
    src.add_argument("--candidate", type=Path, default=None, help="Candidate JSON file")
    src.add_argument("--space", default=None, help="built-in space name or YAML file to draw the candidate from")
    src.add_argument("--seed", type=int, default=None, help="candidate seed (with --space) and training seed "
                                                            "(default: 0; a run's seed)")
    data = p.add_argument_group("data")
    add_data_arguments(data)
    data.add_argument("--augment", default=None,
                      help="train-time augmentation as JSON, e.g. '{\"crop\": 4, \"flip\": true}' (keys: crop, "
                           "flip, vflip, brightness, contrast, cutout; see nas.augment)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None,
                   help="training epochs, at least 1 (default: 10; a run's winners.epochs); 0 is refused: to "
                        "compress a checkpoint without training it, use `nas compress`")
    t.add_argument("--max-samples", type=int, default=None, help="budget in training samples (caps epochs)")
    t.add_argument("--batch-size", type=int, default=None, help="(default: 64; a run's proxy.batch_size)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05; a run's proxy.lr)")
    t.add_argument("--schedule", choices=["cosine", "step"], default=None, help="(default: cosine)")
    t.add_argument("--threads", type=int, default=None,
                   help=f"torch threads (default: {DEFAULTS['threads']}, this machine's; a run's proxy.threads)")
    t.add_argument("--lowrank-penalty", type=float, default=None, metavar="WEIGHT",
                   help="low-rank regularization: add WEIGHT times the truncated nuclear norm beyond the rank the "
                        "candidate's compression.lowrank_ratio keeps (nas.factoring) to the loss, so that "
                        "factorizing loses little (0.3 is a good start; default: 0, off; a run's "
                        "winners.lowrank_penalty)")
    t.add_argument("--no-progress", action="store_true",
                   help="never show a progress bar (nor, when output is not a terminal, a line per epoch)")
    add_device_arguments(p, "cpu; a run's device")
    p.add_argument("-o", "--out", type=Path, required=out_required, help="checkpoint file to write (.safetensors)")


def fill_defaults(args: argparse.Namespace) -> None:
    """Give every training option not on the command line its :data:`DEFAULTS` value (one model, not a run)."""
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse counts and rates out of range, naming the option (``--epochs 0`` is not "the default")."""
    rules = [("epochs", 1, "0 would train nothing; to compress a checkpoint without training, use `nas compress`"),
             ("max_samples", 1, ""), ("batch_size", 2, "batch norm needs two samples"), ("threads", 1, "")]
    for name, low, why in rules:
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise NasError(f"--{name.replace('_', '-')} must be >= {low}, but got {value}" + (f" ({why})." if why
                                                                                               else "."))
    if args.lr is not None and not args.lr > 0:
        raise NasError(f"--lr must be > 0, but got {args.lr}.")
    if args.lowrank_penalty is not None and not args.lowrank_penalty >= 0:
        raise NasError(f"--lowrank-penalty must be >= 0, but got {args.lowrank_penalty}.")


def candidate_from(args: argparse.Namespace, input_shape: tuple[int, ...], num_classes: int) -> Candidate:
    """``--candidate FILE``, or ``--space``'s candidate for ``--seed`` drawn for the dataset's input and classes."""
    if (args.candidate is None) == (args.space is None):
        raise NasError("give exactly one of --candidate FILE or --space NAME (with --seed).")
    if args.candidate is not None:
        return read_candidate(args.candidate)
    return load_space(args.space).with_input(input_shape, num_classes).random(args.seed)


def load_data(args: argparse.Namespace, normalization: dict[str, list[float]] | None = None) -> Splits:
    """The splits of the command line's dataset; an image folder is read at the input of the network being
    trained (``--init``'s checkpoint, ``--candidate``'s or ``--space``'s), standardised with
    ``normalization`` (a checkpoint's) when given."""
    augment = read_json_arg(args.augment, "--augment") if getattr(args, "augment", None) else None
    return load_configured(dataset_of(args, augment), _input_shape(args), normalization)


def _input_shape(args: argparse.Namespace) -> tuple[int, ...] | None:
    if args.dataset != "imagefolder":
        return None  # a built-in dataset has its own shape, which the candidate is drawn for
    if getattr(args, "init", None) is not None:
        return tuple(Candidate.from_dict(read_checkpoint(args.init)[1]["candidate"]).arch.input_shape)
    if args.candidate is not None:
        return read_candidate(args.candidate).arch.input_shape
    return load_space(args.space).input_shape if args.space is not None else None


def candidate_source(args: argparse.Namespace) -> str:
    """The network being trained, as a message names it: ``--init``'s checkpoint, ``--candidate``'s file."""
    if getattr(args, "init", None) is not None:
        return f"the checkpoint {args.init}"
    return f"the candidate in {args.candidate}" if args.candidate is not None else "the candidate"


def train_config(args: argparse.Namespace, candidate: Candidate) -> TrainConfig:
    """The training options as a TrainConfig; ``--device`` is checked here (a GPU this machine lacks is refused)
    and ``--lowrank-penalty`` aims at ``candidate``'s low-rank ratio."""
    resolve_device(args.device, "--device")
    if args.lowrank_penalty and candidate.compression.lowrank_ratio is None:
        raise NasError(f"--lowrank-penalty prepares the layers for low-rank factorization at the candidate's "
                       f"compression.lowrank_ratio, but {candidate_source(args)} has none: give a candidate with "
                       f"a lowrank_ratio (`--candidate FILE`), or leave --lowrank-penalty out.")
    return TrainConfig(epochs=args.epochs, max_samples=args.max_samples, batch_size=args.batch_size, lr=args.lr,
                       schedule=args.schedule, seed=args.seed, threads=args.threads,
                       progress=False if args.no_progress else None, device=args.device, amp=not args.no_amp,
                       **lowrank_settings(candidate.compression.lowrank_ratio, args.lowrank_penalty))


def finish(args: argparse.Namespace, model: nn.Module, candidate: Candidate, splits: Splits,
           summary: dict[str, Any]) -> int:
    """Add test accuracy, size and the device it trained on to ``summary``, save the checkpoint to ``--out``,
    print the summary as one JSON line; 1 when training failed."""
    summary.setdefault("device", describe(model_device(model)))
    summary.setdefault("amp", not args.no_amp and model_device(model).type == "cuda")
    summary.update(dataset=splits.name, normalization=splits.normalization, params=count(candidate.arch).params,
                   test_accuracy=evaluate(model, splits.test), checkpoint=str(args.out))
    save_checkpoint(args.out, model, candidate, summary)
    print(json.dumps(summary, sort_keys=True))
    return 1 if summary.get("failed") else 0
