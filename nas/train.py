"""A plain, fast training loop on the CPU or a CUDA GPU: SGD with momentum, cosine or step schedule.

The search trains many small candidates for a few epochs each, so the loop is
kept minimal: batches are sliced from in-memory tensors (no worker processes)
or, for an image folder streamed from disk, read by a DataLoader with the
folder's workers in the same seeded order; the training split's augmentation
(:mod:`nas.augment`) is applied to each batch; ``TrainConfig.device`` says
where it trains (:mod:`nas.device`: ``cpu``, the default, ``auto`` or
``cuda[:N]``; each batch is copied there, float16 autocast with a gradient
scaler on CUDA unless ``amp`` is off); the learning-rate schedule is per step, and validation accuracy is reported
after every epoch through ``on_epoch`` so that Optuna pruners or Ray schedulers
can stop weak trials early. A non-finite or exploding loss ends the run with a
reason in :attr:`TrainResult.failed`; it never raises into the search.

Runs are deterministic for a given ``seed`` on one CPU thread (the data order comes
from a seeded generator, the same on every device; the model's initial weights are
the caller's, so seed before :func:`nas.build_model`). On a GPU they are close to,
not bitwise equal to, the CPU's. The model is left on the device it trained on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from nas.augment import Augment, augment_batch
from nas.data import Splits, fit_input
from nas.device import DEFAULT_DEVICE, Precision, check_device_name, model_device, resolve_device, to_device
from nas.errors import TrainError
from nas.imagefolder import in_order, stream
from nas.factoring import LowRankPenalty

Schedule = Literal["cosine", "step"]
#: ``loss_fn(logits, batch)`` where ``batch`` is the tuple of the training
#: dataset's tensors for this step: ``(inputs, targets, *extra columns)``.
LossFn = Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]
#: ``on_epoch(epoch, val_accuracy)``; return True to stop training now (pruning).
EpochCallback = Callable[[int, float], Union[bool, None]]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``max_samples`` caps the budget in training samples seen
    (across epochs); the run stops at whichever of ``epochs`` or ``max_samples``
    comes first, and the schedule spans exactly that many steps.

    ``lr`` is the peak learning rate; ``schedule="cosine"`` anneals it to 0 per
    step, ``"step"`` multiplies it by ``step_gamma`` at 50% and 75% of the run.
    ``diverge_above`` treats a finite training loss above it as divergence.
    ``progress``: a tqdm bar on stderr; ``None`` shows it only when stderr is a
    terminal and the run has more than 200 steps. ``device``: ``cpu``, ``auto``
    or ``cuda[:N]`` (:func:`nas.device.resolve_device`); ``amp``: float16 autocast
    and gradient scaling there when it is a GPU (ignored on the CPU).
    ``lowrank_penalty``: low-rank regularization, this weight times
    :class:`nas.factoring.LowRankPenalty` at ``lowrank_ratio`` (the candidate's
    ``compression.lowrank_ratio``) added to every step's loss, so that factorizing the
    trained model at that ratio loses little; 0 trains without it.
    """

    epochs: int = 10
    max_samples: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    step_gamma: float = 0.1
    nesterov: bool = True
    seed: int = 0
    threads: int = 1
    diverge_above: float = 1e4
    progress: bool | None = None
    device: str = DEFAULT_DEVICE
    amp: bool = True
    lowrank_penalty: float = 0.0
    lowrank_ratio: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise TrainError(f"TrainConfig: {message}")

        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an int >= 1, but got {self.epochs!r}.")
        need(self.max_samples is None or (isinstance(self.max_samples, int) and self.max_samples >= 1),
             f"max_samples must be None (no cap) or an int >= 1, but got {self.max_samples!r}.")
        need(isinstance(self.batch_size, int) and self.batch_size >= 2,
             f"batch_size must be an int >= 2 (batch norm needs two samples), but got {self.batch_size!r}.")
        need(self.lr > 0, f"lr must be > 0, but got {self.lr}.")
        need(0 <= self.momentum < 1, f"momentum must satisfy 0 <= momentum < 1, but got {self.momentum}.")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, but got {self.weight_decay}.")
        need(self.schedule in ("cosine", "step"), f"schedule must be 'cosine' or 'step', but got {self.schedule!r}.")
        need(0 < self.step_gamma <= 1, f"step_gamma must be in (0, 1], but got {self.step_gamma}.")
        need(isinstance(self.threads, int) and self.threads >= 1, f"threads must be an int >= 1, but got {self.threads!r}.")
        need(self.diverge_above > 0, f"diverge_above must be > 0, but got {self.diverge_above}.")
        check_device_name(self.device, "TrainConfig.device")
        need(self.lowrank_penalty >= 0, f"lowrank_penalty must be >= 0, but got {self.lowrank_penalty}.")
        need(not self.lowrank_penalty or (self.lowrank_ratio is not None and 0 < self.lowrank_ratio <= 1),
             f"lowrank_penalty needs the rank it aims at: lowrank_ratio in (0, 1], but got {self.lowrank_ratio!r}.")


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions in [0, 1]."""

    history: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    val_accuracy: float = 0.0  # of the final weights
    failed: str | None = None  # why the run ended badly (NaN, divergence), else None
    stopped_early: bool = False  # on_epoch asked to stop
    epochs: int = 0  # epochs run (the last may be partial when max_samples cuts it)
    samples: int = 0  # training samples seen
    seconds: float = 0.0  # wall time
    device: str = ""  # where it trained (``cpu``, ``cuda:0``)


class Plan:
    """The step budget of a run: ``steps_per_epoch`` full batches, ``epochs``, ``total_steps``."""

    def __init__(self, n_train: int, config: TrainConfig) -> None:
        if n_train < 2:
            raise TrainError(f"training needs at least 2 samples, but the training set has {n_train}.")
        self.batch_size = min(config.batch_size, n_train)
        # A last batch of one sample would break batch norm, so a remainder of 1 is dropped.
        self.steps_per_epoch = n_train // self.batch_size + (1 if n_train % self.batch_size >= 2 else 0)
        total = self.steps_per_epoch * config.epochs
        if config.max_samples is not None:
            total = min(total, max(1, math.ceil(config.max_samples / self.batch_size)))
        self.total_steps = total
        self.epochs = math.ceil(total / self.steps_per_epoch)


def as_tensors(dataset: Dataset[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """The columns of ``dataset`` as tensors (free for a :class:`TensorDataset`; others are stacked once)."""
    if isinstance(dataset, TensorDataset):
        return tuple(dataset.tensors)
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if not items:
        raise TrainError("the dataset is empty.")
    return tuple(torch.stack([torch.as_tensor(item[k]) for item in items]) for k in range(len(items[0])))


def batches(columns: Sequence[torch.Tensor], plan: Plan, generator: torch.Generator, epoch_steps: int
            ) -> Iterator[tuple[torch.Tensor, ...]]:
    """``epoch_steps`` batches of one epoch in a fresh seeded order."""
    order = torch.randperm(len(columns[0]), generator=generator).to(columns[0].device)  # the same order everywhere
    for step in range(epoch_steps):
        idx = order[step * plan.batch_size:(step + 1) * plan.batch_size]
        yield tuple(col[idx] for col in columns)


def epoch_batches(dataset: Dataset[tuple[torch.Tensor, ...]], plan: Plan, generator: torch.Generator,
                  epoch_steps: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """:func:`batches` of any dataset: sliced from a TensorDataset's tensors, or read by a DataLoader (with
    the dataset's ``workers``) at the same seeded indices, so both give the same batches."""
    if isinstance(dataset, TensorDataset):
        yield from batches(dataset.tensors, plan, generator, epoch_steps)
        return
    order = torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]
    steps = [order[k * plan.batch_size:(k + 1) * plan.batch_size] for k in range(epoch_steps)]
    yield from stream(dataset, steps, getattr(dataset, "workers", 0))


def make_optimizer(params: Sequence[nn.Parameter], config: TrainConfig, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD (momentum, Nesterov, weight decay on weights only, not on biases or batch-norm) and a per-step schedule."""
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    if config.schedule == "cosine":
        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        milestones = (total_steps // 2, (3 * total_steps) // 4)

        def factor(step: int) -> float:
            return float(config.step_gamma ** sum(step >= m for m in milestones))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape a built :class:`nas.models.Network` expects (``None`` for other modules)."""
    spec = getattr(model, "spec", None)
    shape = getattr(spec, "input_shape", None)
    return tuple(shape) if shape is not None else None


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``x`` reshaped to the model's input shape (images flattened for MLPs)."""
    shape = input_shape_of(model)
    return model(fit_input(x, shape) if shape is not None else x)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset[tuple[torch.Tensor, ...]], batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` as a fraction in [0, 1] (eval mode; the mode is restored),
    computed on the device the model is on."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise TrainError("cannot evaluate on an empty dataset.")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for batch in in_order(dataset, batch_size):
            x, y = to_device(tuple(batch[:2]), device)
            correct += int((forward(model, x).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return correct / n


@torch.no_grad()
def recalibrate(model: nn.Module, images: torch.Tensor, batches: int | None = 4, batch_size: int = 64) -> nn.Module:
    """Reset every batch norm's running statistics and re-estimate them (a plain average, not a moving one)
    from ``batches`` batches of ``images`` (None: all of them), on the model's device; returns ``model`` in
    eval mode.

    Only the batch norms run in training mode: the rest of the network runs as it will be scored (dropout
    off, BinaryConnect's stochastic binary weights at their sign, :mod:`nas.compress.binary`), so the
    statistics are those of the network that is evaluated and shipped."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    device = model_device(model)
    model.eval()
    for m in norms:
        m.train()
    if batches is None:
        batches = math.ceil(len(images) / batch_size)
    try:
        for b in range(batches):
            x = images[b * batch_size:(b + 1) * batch_size]
            if len(x) < 2:
                break
            forward(model, x.to(device, non_blocking=True))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
    return model.eval()


def calibration_images(splits: Splits, batches: int, batch_size: int, seed: int = 0) -> torch.Tensor:
    """The training images batch-norm recalibration uses: a fixed, seeded draw of ``batches * batch_size``."""
    x = as_tensors(splits.train)[0]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order[:batches * batch_size]]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on every row of ``x`` in eval mode (used to cache a teacher's outputs), computed where
    the model is and returned on ``x``'s device."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([forward(model, x[i:i + batch_size].to(device)).to(x.device)
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def cross_entropy(logits: torch.Tensor, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The default loss: cross-entropy against the batch's integer labels."""
    return F.cross_entropy(logits, batch[1])


def _split(data: Splits | tuple[Dataset[tuple[torch.Tensor, ...]], Dataset[tuple[torch.Tensor, ...]]]
           ) -> tuple[Dataset[tuple[torch.Tensor, ...]], Dataset[tuple[torch.Tensor, ...]]]:
    if isinstance(data, Splits):
        return data.train, data.val
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise TrainError(f"train() needs a Splits or a (train, val) pair of datasets, but got {type(data).__name__}.")


def _augmenter(data: object) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """What the training split's augmentation does to a batch (None for a (train, val) pair or none set)."""
    if not isinstance(data, Splits) or data.augment is None:
        return None
    augment: Augment = data.augment
    return lambda x, generator: augment_batch(x, augment, data.mean, data.std, generator)


def loss_problem(loss: torch.Tensor, config: TrainConfig, epoch: int, step: int) -> str | None:
    """A failure reason when ``loss`` is not finite or above ``config.diverge_above``, else None."""
    value = float(loss.detach())
    if not math.isfinite(value):
        return f"non-finite training loss ({value}) at epoch {epoch}, step {step}"
    if value > config.diverge_above:
        return f"training loss diverged: {value:.4g} > diverge_above={config.diverge_above:g} at epoch {epoch}, step {step}"
    return None


def progress_bar(config: TrainConfig, total: int, desc: str) -> object | None:
    """A tqdm bar over ``total`` steps, or None when disabled (see :attr:`TrainConfig.progress`)."""
    show = config.progress if config.progress is not None else (sys.stderr.isatty() and total > 200)
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def epoch_lines(config: TrainConfig, n_train: int, desc: str) -> EpochCallback | None:
    """An ``on_epoch`` that writes one line per epoch to stderr (``desc: epoch 2/10, val 84.2%, 12 s``)
    when the progress bar is off only because stderr is not a terminal (a log file, a pipe);
    None when the bar may show or ``config.progress`` is False. Long runs then never go silent."""
    if config.progress is not None or sys.stderr.isatty():
        return None
    epochs, start = Plan(n_train, config).epochs, time.perf_counter()

    def line(epoch: int, accuracy: float) -> None:
        print(f"{desc}: epoch {epoch + 1}/{epochs}, val {accuracy:.2%}, {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)

    return line


def with_lowrank_penalty(model: nn.Module, loss_fn: LossFn, config: TrainConfig) -> LossFn:
    """``loss_fn`` plus ``config.lowrank_penalty`` times :class:`~nas.factoring.LowRankPenalty` of ``model``
    (``loss_fn`` itself when the weight is 0). An :class:`nn.Module` loss keeps its parameters: it is wrapped
    in a module that holds it (and not the model, whose parameters the optimizer has already)."""
    if not config.lowrank_penalty:
        return loss_fn
    assert config.lowrank_ratio is not None  # TrainConfig checks it
    return _Penalized(loss_fn, LowRankPenalty(model, config.lowrank_ratio), config.lowrank_penalty)


class _Penalized(nn.Module):
    def __init__(self, loss_fn: LossFn, penalty: LowRankPenalty, weight: float) -> None:
        super().__init__()
        self.base = loss_fn  # a Module is registered (its adapters train), a function is kept as it is
        self.penalty, self.weight = penalty, weight

    def forward(self, logits: torch.Tensor, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.base(logits, batch) + self.weight * self.penalty()


class _Threads:
    """Sets ``torch.set_num_threads`` for the run and restores the caller's setting afterwards."""

    def __init__(self, n: int) -> None:
        self.n, self.saved = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


def train(model: nn.Module,
          splits_or_train_val: Splits | tuple[Dataset[tuple[torch.Tensor, ...]], Dataset[tuple[torch.Tensor, ...]]],
          config: TrainConfig, *, loss_fn: LossFn | None = None, on_epoch: EpochCallback | None = None,
          ) -> TrainResult:
    """Train ``model`` in place and report validation accuracy after every epoch.

    ``loss_fn(logits, batch)`` replaces cross-entropy (distillation uses it);
    when it is an :class:`nn.Module`, its trainable parameters (adapters) are
    optimised together with the model's. ``on_epoch(epoch, val_acc)`` may
    return True to stop (pruning), or raise (``optuna.TrialPruned``) to abort;
    its exception propagates. Non-finite or diverging losses end the run with
    :attr:`TrainResult.failed` set instead of raising.
    """
    train_set, val_set = _split(splits_or_train_val)
    device = resolve_device(config.device, "TrainConfig.device")
    plan = Plan(len(train_set), config)  # type: ignore[arg-type]
    augment = _augmenter(splits_or_train_val)
    loss_fn = with_lowrank_penalty(model, loss_fn or cross_entropy, config)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)  # its own parameters (a distillation loss's adapters)
        params += [p for p in loss_fn.parameters() if p.requires_grad]
    precision = Precision(device, config.amp)
    result = TrainResult(device=str(device))
    start = time.perf_counter()
    with _Threads(config.threads):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        opt, sched = make_optimizer(params, config, plan.total_steps)
        bar = progress_bar(config, plan.total_steps, "train")
        step = 0
        model.train()
        try:
            for epoch in range(plan.epochs):
                epoch_steps = min(plan.steps_per_epoch, plan.total_steps - step)
                total, count = 0.0, 0
                for batch in epoch_batches(train_set, plan, generator, epoch_steps):
                    if augment is not None:  # on the CPU, with the run's seeded generator
                        batch = (augment(batch[0], generator), *batch[1:])
                    batch = to_device(batch, device)
                    with precision.autocast():
                        loss = loss_fn(forward(model, batch[0]), batch)
                    problem = loss_problem(loss, config, epoch, step)
                    if problem:
                        result.failed = problem
                        break
                    opt.zero_grad(set_to_none=True)
                    precision.backward(loss)
                    precision.step(opt)
                    sched.step()
                    step += 1
                    total += float(loss.detach()) * len(batch[0])
                    count += len(batch[0])
                    if bar is not None:
                        bar.update(1)  # type: ignore[attr-defined]
                result.samples += count
                result.epochs = epoch + 1
                if count:
                    result.losses.append(total / count)
                if result.failed:
                    break
                acc = evaluate(model, val_set)
                result.history.append(acc)
                if on_epoch is not None and on_epoch(epoch, acc):
                    result.stopped_early = True
                    break
        finally:
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
        result.val_accuracy = result.history[-1] if result.history and not result.failed else evaluate(model, val_set)
    result.seconds = time.perf_counter() - start
    return result
