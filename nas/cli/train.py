"""``nas train``: train a candidate from scratch on a dataset and save a checkpoint.

The checkpoint is safetensors + a JSON description (:mod:`nas.checkpoint`); a
one-line JSON summary with validation and test accuracy is printed. The candidate
comes from ``--candidate FILE`` (a ``Candidate`` JSON, as ``nas sample --json``
prints) or ``--space NAME --seed N`` (drawn for the dataset's input shape and
class count).
"""

from __future__ import annotations

import argparse

import torch

from nas.cli._training import (add_training_arguments, candidate_from, candidate_source, check_numbers, fill_defaults,
                                finish, load_data, train_config)
from nas.data import check_fits
from nas.models import build_model
from nas.train import train


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a candidate from scratch on a dataset and save a checkpoint")
    add_training_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    fill_defaults(args)
    splits = load_data(args)
    candidate = candidate_from(args, splits.input_shape, splits.num_classes)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes, candidate_source(args))
    config = train_config(args, candidate)
    torch.manual_seed(args.seed)
    model = build_model(candidate.arch)
    result = train(model, splits, config)
    return finish(args, model, candidate, splits, {
        "command": "train", "val_accuracy": result.val_accuracy, "history": result.history,
        "failed": result.failed, "epochs": result.epochs, "seconds": round(result.seconds, 2)})
