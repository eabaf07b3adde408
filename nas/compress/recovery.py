"""Compression with a recovery fine-tune after each stage (Deep Compression's retraining).

A floor above :mod:`nas.compress` and :mod:`nas.train`: both ``nas finetune --compress``
and :func:`nas.winners.finetune_run` go through :func:`compress_with_recovery`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nas.compress._apply import apply_compression
from nas.data import Splits
from nas.spec import CompressionSpec
from nas.train import TrainConfig, evaluate, train


def compress_with_recovery(model: nn.Module, compression: CompressionSpec, splits: Splits, config: TrainConfig
                           ) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Apply ``compression`` to a copy of ``model``, fine-tuning with ``config`` after each stage.

    Returns the compressed model and one record per stage: its name, validation
    accuracy right after compressing and after recovery, and any failure reason.
    """
    steps: list[dict[str, Any]] = []

    def recover(m: nn.Module, stage: str) -> None:
        before = evaluate(m, splits.val)
        run = train(m, splits, config)
        steps.append({"step": f"compress:{stage}", "val_before": before, "val_after": run.val_accuracy,
                      "failed": run.failed})

    data = splits.train.tensors[0][:256]  # what the activation channel importance scores
    return apply_compression(model, compression, retrain=recover, data=data), steps
