"""Liu et al.'s Rethinking baseline ("Rethinking the Value of Network Pruning", ICLR 2019) for one winner.

A winner with structured pruning (``compression.channel_ratio > 0``) is normally trained dense, pruned to
:func:`nas.channels.pruned_arch` and fine-tuned (:func:`nas.compress.compress_with_recovery`). The baseline
trains that pruned architecture from a fresh initialisation instead, on the same budget, distilled from the
same teacher with the same settings (so that the inherited weights are the only difference), then applies
the candidate's other stages (low-rank, sparsity, quantization) with the same recovery fine-tunes.

Budget (``winners.scratch``): the pruned path trains ``E`` epochs dense and ``R`` recovery epochs on the
pruned network before its later stages, so

- ``epochs`` (Scratch-E): ``E + R`` epochs of the pruned network, the same samples and steps;
- ``madds`` (Scratch-B): the same multiply-adds, ``E * M_dense / M_pruned + R`` epochs, at most twice
  ``E + R`` (Liu et al. double the epochs when pruning saves more than 2x).

:func:`keep_better` keeps the one with the higher *validation* accuracy (the test split only reports).

On by default (``epochs``): the pruned network of ``channel_ratio`` 0.5 costs a quarter to a third of the
dense one's MAdds, so Scratch-E adds about that share of a structured-pruned winner's training (and nothing
for the other winners, nor the teacher); Scratch-B adds up to as much again as the dense path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from nas.channels import pruned_arch
from nas.compress import compress_with_recovery
from nas.cost import count
from nas.data import Splits
from nas.distill import DistillConfig, distill
from nas.models import build_model
from nas.spec import Candidate
from nas.train import EpochCallback, TrainConfig, evaluate, train

Budget = Literal["epochs", "madds", "off"]
BUDGETS = ("epochs", "madds", "off")


def scratch_epochs(candidate: Candidate, epochs: int, recovery_epochs: int, budget: Budget) -> int:
    """Epochs the pruned architecture of ``candidate`` trains from scratch under ``budget`` (module docstring)."""
    same = epochs + recovery_epochs
    if budget == "epochs":
        return same
    dense = count(candidate.arch).madds
    pruned = count(pruned_arch(candidate.arch, candidate.compression.channel_ratio)).madds
    return min(2 * same, max(same, math.ceil(epochs * dense / max(pruned, 1)) + recovery_epochs))


@dataclass
class Scratch:
    """The baseline's result: the pruned architecture's dense (distilled, uncompressed) model and candidate,
    its compressed model, accuracies (fractions) and the stages' recovery records."""

    candidate: Candidate
    dense: nn.Module
    compressed: nn.Module
    epochs: int
    val_accuracy: float
    test_accuracy: float
    steps: list[dict[str, Any]]
    failed: str | None


def train_from_scratch(candidate: Candidate, teacher: nn.Module | None, splits: Splits, config: TrainConfig,
                       recovery: TrainConfig | None, budget: Budget, distill_config: DistillConfig | None = None,
                       log: Callable[[TrainConfig], EpochCallback | None] | None = None,
                       calibration: torch.Tensor | None = None) -> Scratch | None:
    """The baseline for ``candidate`` (None when ``budget`` is off or it has no structured pruning).

    ``config`` is the winner's distillation (its ``epochs`` is ``E``), ``recovery`` the recovery fine-tune
    after each stage (None: no recovery, ``R = 0``); the network is seeded with ``config.seed``. Without a
    ``teacher`` it trains on the labels alone (as Liu et al.). ``log(config)``: an ``on_epoch`` for the run;
    ``calibration``: images batch norm is recalibrated on after each compression stage, as the winner's."""
    spec = candidate.compression
    if budget == "off" or spec.channel_ratio <= 0:
        return None
    small = Candidate(pruned_arch(candidate.arch, spec.channel_ratio), replace(spec, channel_ratio=0.0))
    epochs = scratch_epochs(candidate, config.epochs, recovery.epochs if recovery else 0, budget)
    config = replace(config, epochs=epochs)
    on_epoch = log(config) if log is not None else None
    torch.manual_seed(config.seed)
    model = build_model(small.arch)
    if teacher is None:
        run = train(model, splits, config, on_epoch=on_epoch)
    else:
        run = distill(model, teacher, splits, config, distill_config or DistillConfig(), on_epoch=on_epoch).run
    compressed, steps = compress_with_recovery(model, small.compression, splits, recovery, calibration=calibration)
    failed = run.failed or next((s["failed"] for s in steps if s["failed"]), None)
    return Scratch(small, model, compressed, epochs, evaluate(compressed, splits.val),
                   evaluate(compressed, splits.test), steps, failed)


def keep_better(pruned_val: float, scratch: Scratch | None) -> str:
    """``"scratch"`` when the baseline ran, did not fail and beats the pruned winner on validation; else
    ``"pruned"`` (ties keep the pruned winner, the pipeline's own)."""
    if scratch is None or scratch.failed or scratch.val_accuracy <= pruned_val:
        return "pruned"
    return "scratch"
