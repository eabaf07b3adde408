"""Compression with a recovery fine-tune after each stage (Deep Compression's retraining).

A floor above :mod:`nas.compress` and :mod:`nas.train`: both ``nas finetune --compress``
and :func:`nas.winners.finetune_run` go through :func:`compress_with_recovery`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from nas.compress._apply import StageOptions, apply_compression
from nas.compress.pruning import PruneSchedule, iterative_prune, weight_layers
from nas.data import Splits, first_inputs
from nas.errors import CompressError
from nas.spec import CompressionSpec, layer_index
from nas.train import TrainConfig, as_tensors, evaluate, recalibrate, train


def compress_with_recovery(model: nn.Module, compression: CompressionSpec, splits: Splits, config: TrainConfig | None,
                           options: StageOptions | None = None, *, prune_steps: int = 1,
                           rewind_to: dict[str, torch.Tensor] | None = None,
                           calibration: torch.Tensor | None = None) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Apply ``compression`` to a copy of ``model``, fine-tuning with ``config`` after each stage.

    ``config`` None applies the stages without fine-tuning. ``options`` choose how the stages work
    (scope, centroid init, factorization). With
    ``prune_steps > 1`` the pruning stage is an iterative schedule (:class:`PruneSchedule`) with a
    recovery after each round; ``rewind_to`` (a ``state_dict`` of ``model`` from early in its training)
    resets the kept weights to it after each round, before recovering: lottery-ticket rewinding
    (the masks come from ``model``'s trained weights).

    ``calibration``: training images batch norm is recalibrated on (:func:`nas.train.recalibrate`, in
    batches of ``config.batch_size``) after each stage, before its recovery is scored and trained, and
    after each recovery: a stage changes every layer's output statistics (binary weights most), and
    running averages carried over from the dense network, or lagging the recovery's last steps, would
    score and ship the compressed network with the wrong ones.

    Returns the compressed model and one record per stage: its name, validation
    accuracy right after compressing and after recovery, and any failure reason
    (a NaN or diverging loss, or a model left at chance: :func:`at_chance`).
    """
    steps: list[dict[str, Any]] = []
    batch = config.batch_size if config is not None else 64

    def settle(m: nn.Module) -> None:
        if calibration is not None:
            recalibrate(m, calibration, None, batch)

    def recover(m: nn.Module, stage: str) -> None:
        settle(m)
        if config is None:
            return
        before = evaluate(m, splits.val)
        run = train(m, splits, config)
        settle(m)
        after = run.val_accuracy if calibration is None else evaluate(m, splits.val)
        steps.append({"step": f"compress:{stage}", "val_before": before, "val_after": after,
                      "failed": run.failed or at_chance(after, splits)})

    options = options or StageOptions()
    if prune_steps > 1 or rewind_to is not None:
        model = _iterative_prune(model, compression, options, prune_steps, rewind_to, recover)
        compression = dataclasses.replace(compression, sparsity_conv=0.0, sparsity_linear=0.0, layers=tuple(
            (i, dataclasses.replace(o, sparsity=None)) for i, o in compression.layers if o.bits is not None))
    return apply_compression(model, compression, retrain=recover, data=importance_data(splits),
                             options=options), steps


def _iterative_prune(model: nn.Module, compression: CompressionSpec, options: StageOptions, steps: int,
                     rewind_to: dict[str, torch.Tensor] | None, recover: Any) -> nn.Module:
    """A copy of ``model`` pruned to ``compression``'s sparsities in ``steps`` rounds, recovering after each."""
    if compression.channel_ratio > 0 or compression.lowrank_ratio is not None:
        raise CompressError("iterative pruning and rewinding prune the network as trained; this candidate also "
                            "prunes channels or factorizes layers first: compress it in one step (no "
                            "--prune-steps/--rewind), or give a candidate without channel_ratio and lowrank_ratio.")
    if not compression.prunes:
        raise CompressError("--prune-steps/--rewind schedule pruning, but the compression prunes nothing: give a "
                            "candidate with sparsity_conv, sparsity_linear or per-layer sparsity.")
    model = copy.deepcopy(model)
    own = {name: s.sparsity for name, _ in weight_layers(model)
           if (s := compression.override(layer_index(name))) is not None and s.sparsity is not None}
    schedule = PruneSchedule(compression.sparsity_conv, compression.sparsity_linear, steps, options.scope,
                             rewind=rewind_to is not None, layers=tuple(own.items()))
    return iterative_prune(model, schedule, lambda m, step: recover(m, f"prune{step}"), rewind_to)


def importance_data(splits: Splits, limit: int | None = None) -> torch.Tensor:
    """The inputs the ``activation`` channel importance counts over: the whole training split, or its first
    ``limit`` images (streamed through the model in batches, so the count is exact over them)."""
    # a streamed image folder decodes only the images asked for
    return as_tensors(splits.train)[0] if limit is None else first_inputs(splits.train, limit)


def at_chance(accuracy: float, splits: Splits) -> str | None:
    """Why ``accuracy`` (validation, a fraction) is no better than guessing, else None.

    Chance is ``1 / num_classes``; the margin is 2 percentage points, or two standard
    errors of a guess on this validation set where that is larger (small sets are noisy).
    """
    chance = 1 / splits.num_classes
    margin = max(0.02, 2 * math.sqrt(chance * (1 - chance) / max(len(splits.val), 1)))
    if accuracy > chance + margin:
        return None
    return (f"left at chance: validation accuracy {accuracy:.1%} <= {chance + margin:.1%} (guessing: 1/"
            f"{splits.num_classes} + {100 * margin:.1f} points)")


def first_failure(steps: list[dict[str, Any]]) -> str | None:
    """The first failed step of a pipeline as ``"step: reason"`` (and how many later steps failed too), or None."""
    failed = [f"{s['step']}: {s['failed']}" for s in steps if s["failed"]]
    if not failed:
        return None
    return failed[0] + (f" (and {len(failed) - 1} later step{'s' if len(failed) > 2 else ''})" if len(failed) > 1
                        else "")
