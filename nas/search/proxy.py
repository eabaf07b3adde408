"""The ``train`` evaluator: short proxy training, the compression applied in its last epoch.

The accuracy the search sees is the compressed model's: with ``proxy.compressed`` (the default) and a
candidate that compresses, the last epoch trains the model with its compression applied (pruning
masks, codebooks, binary/ternary weights, low-rank factors), and batch norm is then recalibrated on
``proxy.recalibration_batches`` training batches before that epoch's validation: the running statistics
a compressed epoch leaves behind lag its fast-changing weights (on Fashion-MNIST they alone put some
compressed candidates at chance, ``results/bench/proxy_recipe.json``). A trial resumed from a checkpoint
(Ray restores interrupted trials) continues where it stood.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nas.experiment import COMPRESSED_LR_FACTOR, RECALIBRATION_BATCHES, Experiment
from nas.factoring import lowrank_settings
from nas.search.evaluator import Checkpoint, Evaluator, Progress, register_evaluator
from nas.search.record import Outcome
from nas.spec import Candidate

if TYPE_CHECKING:
    from torch import nn

    from nas.data import Splits
    from nas.train import EpochCallback, TrainConfig, TrainResult


def proxy_setup(experiment: Experiment, candidate: Candidate, number: int, threads: int) -> tuple[nn.Module, TrainConfig]:
    """``(model, TrainConfig)`` of trial ``number``'s proxy training: the network built under the trial's
    seed and the experiment's proxy settings (the same on every backend)."""
    import torch

    from nas.models import build_model
    from nas.train import TrainConfig

    proxy = experiment.config.proxy
    seed = experiment.config.seed * 100_003 + number
    config = TrainConfig(epochs=proxy.epochs, max_samples=proxy.max_samples, batch_size=proxy.batch_size,
                         lr=proxy.lr, seed=seed, threads=threads, progress=False,
                         device=experiment.config.device, amp=experiment.config.amp,
                         **lowrank_settings(candidate.compression.lowrank_ratio, proxy.lowrank_penalty))
    torch.manual_seed(seed)
    return build_model(candidate.arch), config


def proxy_train(model: nn.Module, candidate: Candidate, splits: Splits, config: TrainConfig, on_epoch: EpochCallback,
                compressed: bool = True, importance_samples: int | None = None, *,
                recalibration_batches: int = RECALIBRATION_BATCHES,
                compressed_lr_factor: float = COMPRESSED_LR_FACTOR) -> TrainResult:
    """Train ``config.epochs``; with ``compressed`` (and a candidate that compresses) the last epoch trains the
    model with its compression applied (the ``activation`` channel importance counted exactly over the first
    ``importance_samples`` training images, all when None; no low-rank penalty on the factors; a peak learning
    rate of ``compressed_lr_factor`` times ``config.lr``, on a cosine schedule of its own), then batch
    norm is recalibrated on the first ``recalibration_batches`` batches of training images (0: not) before
    that epoch's validation. Epochs are numbered on through both phases for ``on_epoch`` (from 0); returns
    the last phase's TrainResult with the whole history."""
    from nas.compress import apply_compression, stages
    from nas.compress.recovery import importance_data
    from nas.train import train

    if not compressed or not stages(candidate.compression):
        return train(model, splits, config, on_epoch=on_epoch)
    dense_epochs = config.epochs - 1
    history: list[float] = []
    if dense_epochs:
        first = train(model, splits, replace(config, epochs=dense_epochs), on_epoch=on_epoch)
        history = list(first.history)
        if first.failed or first.stopped_early:  # failed, pruned or out of time
            return first
    model = apply_compression(model, candidate.compression, inplace=True,
                              data=importance_data(splits, importance_samples))  # the activation importance's

    def report(epoch: int, accuracy: float) -> bool | None:
        return on_epoch(dense_epochs + epoch, accuracy)

    last = train(model, splits, replace(config, epochs=1, seed=config.seed + 1, lowrank_penalty=0.0,
                                        lr=config.lr * compressed_lr_factor),
                 on_epoch=None if recalibration_batches else report)
    if recalibration_batches and not last.failed:
        last = _recalibrated(model, splits, last, recalibration_batches, config.batch_size)
        report(0, last.val_accuracy)
    return replace(last, history=history + list(last.history), epochs=dense_epochs + last.epochs)


def _recalibrated(model: nn.Module, splits: Splits, result: TrainResult, batches: int, batch_size: int
                  ) -> TrainResult:
    """``result`` with its last validation accuracy taken again after :func:`nas.train.recalibrate` of
    ``model``'s batch norm on the first ``batches * batch_size`` training images (the model is left training)."""
    from nas.data import first_inputs
    from nas.train import evaluate, recalibrate

    recalibrate(model, first_inputs(splits.train, batches * batch_size), batches, batch_size)
    accuracy = evaluate(model, splits.val)
    model.train()
    return replace(result, val_accuracy=accuracy, history=[*result.history[:-1], accuracy])


def resume_train(model: nn.Module, candidate: Candidate, splits: Splits, config: TrainConfig, done: int,
                 on_epoch: EpochCallback, compressed: bool, importance_samples: int | None = None, *,
                 recalibration_batches: int = RECALIBRATION_BATCHES,
                 compressed_lr_factor: float = COMPRESSED_LR_FACTOR) -> tuple[int, TrainResult]:
    """:func:`proxy_train` from epoch ``done`` on: ``(epochs run in all, the last TrainResult)``.

    From the start it is ``proxy_train`` itself. After ``done`` dense epochs, the rest of the dense phase
    continues with the learning rate where the dense phase's cosine schedule was (momentum starts again and
    the data order is reseeded, so a resumed trial is close to, not identical with, an uninterrupted one),
    and the compressed last epoch is ``proxy_train``'s own (same seed and learning rate as without a break).
    """
    from nas.compress import stages
    from nas.train import train

    if done == 0:
        result = proxy_train(model, candidate, splits, config, on_epoch, compressed, importance_samples,
                             recalibration_batches=recalibration_batches, compressed_lr_factor=compressed_lr_factor)
        return result.epochs, result
    compress_last = compressed and bool(stages(candidate.compression))
    dense = replace(config, epochs=config.epochs - 1) if compress_last else config
    epochs = done
    if done < dense.epochs:
        result = train(model, splits, _rest_of_run(dense, len(splits.train), done),
                       on_epoch=lambda e, a: on_epoch(done + e, a))
        epochs += result.epochs
        if not compress_last or result.failed or result.stopped_early:
            return epochs, result
    last = proxy_train(model, candidate, splits, replace(config, epochs=1), lambda e, a: on_epoch(config.epochs - 1, a),
                       True, importance_samples, recalibration_batches=recalibration_batches,
                       compressed_lr_factor=compressed_lr_factor)
    return epochs + last.epochs, last


def _rest_of_run(config: TrainConfig, n_train: int, done: int) -> TrainConfig:
    """The settings for the epochs after ``done`` of a run of ``config``: the cosine learning rate from where
    it was to zero at the same end, the data order reseeded, the rest of ``max_samples``."""
    from nas.train import Plan

    plan = Plan(n_train, config)
    steps = min(done * plan.steps_per_epoch, plan.total_steps - 1)
    lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * steps / plan.total_steps))
    samples = None if config.max_samples is None else max(1, config.max_samples - steps * plan.batch_size)
    return replace(config, epochs=max(1, plan.epochs - done), lr=lr, seed=config.seed + done, max_samples=samples)


@register_evaluator
class TrainEvaluator(Evaluator):
    """``evaluator: train``: each candidate trained from scratch for ``proxy.epochs`` (``proxy.max_samples``,
    ``proxy.lr``, ``proxy.threads`` threads, on the experiment's ``device``: the trial's ``device`` attribute),
    its compression applied in the last epoch (at ``proxy.compressed_lr_factor`` times ``proxy.lr``) and
    batch norm recalibrated after it (``proxy.recalibration_batches``); stopped when
    ``progress`` prunes it, failed when it diverges or runs over ``proxy.max_seconds``."""

    name = "train"

    def evaluate(self, candidate: Candidate, number: int, progress: Progress) -> Outcome:
        from nas.checkpoint import load_weights

        proxy = self.experiment.config.proxy
        splits = self.setup.splits
        if splits is None:
            raise ValueError("the train evaluator needs the dataset's splits (prepare(experiment, data=True))")
        model, config = proxy_setup(self.experiment, candidate, number, proxy.threads)
        restored = progress.restored() or Checkpoint(0)
        if restored.epoch:
            load_weights(model, restored.tensors, f"trial {number}'s checkpoint")
        history = list(restored.history)
        start = time.perf_counter()
        stop: list[str] = []

        def on_epoch(epoch: int, accuracy: float) -> bool:  # epoch counts from 0
            done = epoch + 1
            history.append(accuracy)
            prune = progress.report(done, accuracy, model, last=done >= config.epochs)
            if proxy.max_seconds is not None and time.perf_counter() - start > proxy.max_seconds:
                stop.append(f"time budget of {proxy.max_seconds:g} s used up after epoch {done}")
            elif prune and done < config.epochs:
                stop.append(f"pruned after epoch {done} (validation accuracy {accuracy:.3f})")
            return bool(stop)

        epochs, result = resume_train(model, candidate, splits, config, restored.epoch, on_epoch, proxy.compressed,
                                      proxy.importance_samples, recalibration_batches=proxy.recalibration_batches,
                                      compressed_lr_factor=proxy.compressed_lr_factor)
        trained: dict[str, Any] = {"trained": True, "epochs": epochs, "history": tuple(history),
                                   "seconds": time.perf_counter() - start, "attrs": {"device": result.device}}
        if result.failed or stop[:1] and stop[0].startswith("time"):
            return Outcome.failed(result.failed or stop[0], **trained)
        if stop:
            return Outcome("PRUNED", accuracy=float(result.val_accuracy), reason=stop[0], **trained)
        return Outcome("COMPLETE", accuracy=float(result.val_accuracy), **trained)
