"""``nas supernet train | extract``: train (or go on training) the experiment's weight-sharing supernet, and
write a candidate extracted from it as a checkpoint.

The supernet is that of the experiment's space fitted to its dataset, as a search fits it; it is saved
to ``supernet.checkpoint`` (relative to the experiment file) after every epoch, and running the command
again after a kill continues from the last finished epoch (:mod:`nas.supernet`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from nas.checkpoint import save_checkpoint
from nas.cli._args import add_device_arguments, device_of, read_candidate
from nas.device import describe
from nas.experiment import Experiment, ExperimentError, load_experiment
from nas.search.setup import Setup, prepare
from nas.supernet import (SupernetTraining, calibration_images, load_supernet, read_supernet, recalibrate,
                          save_supernet, train_supernet)
from nas.train import evaluate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sn = sub.add_parser("supernet", help="once-for-all supernet of an experiment's space: train")
    sn_sub = sn.add_subparsers(dest="supernet_command", metavar="ACTION")
    sn_sub.required = True
    p = sn_sub.add_parser("train", help="train the experiment's supernet (resumes from its checkpoint)",
                          description="Sandwich-rule training with in-place distillation and compression-aware "
                                      "steps, as the experiment's supernet section says; a checkpoint every epoch.")
    p.add_argument("experiment", type=Path, help="experiment YAML file (its supernet section and dataset)")
    p.add_argument("--epochs", type=int, default=None, help="override supernet.epochs (the total, resumed or not; a longer run than the checkpoint's "
                        "goes on with the longer schedule)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch lines")
    p.add_argument("--ship", action="store_true",
                   help="at the end, rewrite the checkpoint as float16 weights without the SGD momentum (about a "
                        "quarter of the size, to commit or hand out; training it further starts a fresh momentum)")
    add_device_arguments(p, "the experiment's device, else cpu")
    x = sn_sub.add_parser("extract", help="a candidate as a plain network with the supernet's weights (a checkpoint)",
                          description="Write the candidate, extracted from the experiment's trained supernet, as a "
                                      "checkpoint that nas train/finetune/compress read (batch norm recalibrated on "
                                      "training batches unless --no-recalibrate).")
    x.add_argument("experiment", type=Path, help="experiment YAML file (its supernet.checkpoint and dataset)")
    x.add_argument("--candidate", required=True, type=Path, help="candidate JSON file (a line of `nas sample --json`)")
    x.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    x.add_argument("--no-recalibrate", action="store_true",
                   help="keep the supernet's shared batch-norm statistics (the supernet's own forward of the child)")
    add_device_arguments(x, "the experiment's device, else cpu", amp=False)
    sn.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return extract(args) if args.supernet_command == "extract" else train(args)


def _setup(exp: Experiment) -> Setup:
    setup = prepare(exp)
    if setup.splits is None:
        raise ExperimentError(f"{exp.source}: a supernet learns accuracy, but the experiment neither optimises "
                              "nor constrains it (add accuracy to objectives).")
    return setup


def extract(args: argparse.Namespace) -> int:
    exp = load_experiment(args.experiment)
    setup = _setup(exp)
    assert setup.splits is not None  # _setup checked
    candidate = read_candidate(args.candidate)
    config = SupernetTraining.of(exp)
    device = device_of(args, config.device, f"{exp.source}: device")
    net, state = load_supernet(exp.supernet_checkpoint, setup.space)
    model = net.to(device).extract(candidate.arch)  # recalibrated and scored there; saved from the CPU
    if not args.no_recalibrate:
        calibration = calibration_images(setup.splits, config.recalibration_batches, config.batch_size, config.seed)
        recalibrate(model, calibration, config.recalibration_batches, config.batch_size)
    accuracy = evaluate(model, setup.splits.val)
    save_checkpoint(args.out, model, candidate, {
        "source": "supernet", "supernet": exp.supernet_checkpoint, "supernet_epochs": state.epoch,
        "recalibrated": not args.no_recalibrate, "val_accuracy": accuracy, "dataset": setup.splits.name})
    print(f"wrote {args.out}: the candidate from {exp.supernet_checkpoint} (epoch {state.epoch}), validation "
          f"{accuracy:.1%} (on {describe(device)})")
    return 0


def train(args: argparse.Namespace) -> int:
    exp = load_experiment(args.experiment)
    config = SupernetTraining.of(exp)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ExperimentError(f"--epochs must be >= 1, but got {args.epochs}.")
        config = replace(config, epochs=args.epochs)
    device = device_of(args, config.device, f"{exp.source}: device")
    config = replace(config, device=str(device), amp=config.amp and not args.no_amp)
    setup = _setup(exp)
    assert setup.splits is not None  # _setup checked
    path = Path(exp.supernet_checkpoint)
    if path.exists():
        state = read_supernet(path, setup.space)[1]
        print(f"supernet: resuming {path} after epoch {state.epoch} of {config.epochs}", file=sys.stderr)
    quiet = args.no_progress or sys.stderr.isatty()

    def line(epoch: int, row: dict[str, float]) -> None:
        if not quiet:
            print(f"supernet: epoch {epoch + 1}/{config.epochs}, largest {row['largest']:.1%}, smallest "
                  f"{row['smallest']:.1%}, {row['seconds']:.0f} s", file=sys.stderr, flush=True)

    net, state = train_supernet(setup.space, setup.splits, config, path,
                                progress=False if args.no_progress else None, on_epoch=line)
    if args.ship:
        save_supernet(path, net, state, None, config, dtype=torch.float16)
    last = state.history[-1] if state.history else {}
    print(f"supernet of space {setup.space.name!r} on {setup.splits.name}: {state.epoch} epochs, largest child "
          f"{last.get('largest', float('nan')):.1%}, smallest {last.get('smallest', float('nan')):.1%} "
          f"(validation, batch norm recalibrated); on {describe(device)}"
          + (" with mixed precision" if config.amp and device.type == "cuda" else "") + f"; checkpoint {path}")
    return 0
