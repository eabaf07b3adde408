"""Training a supernet (sandwich rule, in-place distillation, compression-aware steps), its checkpoint, and
an extracted child's accuracy after batch-norm recalibration (:func:`nas.train.recalibrate`, which the winners'
compression also uses, lives a floor down).

One step (BigNAS's sandwich rule): the largest child learns from the labels; the smallest and
``random_children`` random children learn from the labels and the largest child's logits
(:func:`nas.distill.hinton_loss`), their gradients summed into the shared weights before one SGD
step. In a ``compressed_share`` of the steps, drawn at random, those children run with a compression
setting drawn from the space (:func:`~nas.supernet._children.compressed_tensors`), so that compressed
children stay accurate. Progressive shrinking in its short form: the first ``warmup_epochs`` train the
largest network alone, then the hidden channels are sorted by importance (OFA) and shrinking begins.

The checkpoint (safetensors, written atomically after every epoch) holds the weights, the SGD
momentum and, in its metadata, the epoch, the per-epoch history and the space it was trained for; a
killed run started again continues from the last finished epoch. Each epoch's data order and
children come from seeds of (seed, epoch) and the learning rate from the global step, so a resumed
run trains the epochs it lost the way the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from nas.data import Splits
from nas.device import DEFAULT_DEVICE, Precision, resolve_device, stage
from nas.distill import hinton_loss
from nas.experiment import Experiment
from nas.files import write_atomic
from nas.space import Space
from nas.spec import ArchSpec, CompressionSpec
from nas.supernet._children import compressed_tensors, extreme
from nas.supernet._layout import SupernetError
from nas.supernet._net import Supernet
from nas.train import as_tensors, calibration_images, evaluate, recalibrate

FORMAT = "nas-supernet/1"
#: The gradients' total norm is clipped to this before each step, and a step whose gradients are not finite
#: is skipped. A binary or ternary child can leave a channel (nearly) constant over the batch; batch norm
#: then divides its gradient by sqrt(eps) or so, layer after layer, and one such step (norms of 1e36 were
#: seen on mobilenetv2-tiny/digits) would turn every shared weight to NaN.
MAX_GRAD_NORM = 5.0


@dataclass(frozen=True)
class SupernetTraining:
    """How to train (the experiment's ``supernet`` section, see :class:`nas.experiment.SupernetConfig`)."""

    epochs: int = 10
    warmup_epochs: int = 1
    max_samples: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    random_children: int = 2
    compressed_share: float = 0.25
    recalibration_batches: int = 4
    seed: int = 0
    threads: int = 1
    device: str = DEFAULT_DEVICE  # where it trains and children are scored (nas.device)
    amp: bool = True

    @classmethod
    def of(cls, experiment: Experiment) -> SupernetTraining:
        """The settings of ``experiment``'s ``supernet`` section, seeded by its ``seed``."""
        c = experiment.config.supernet
        return cls(epochs=c.epochs, warmup_epochs=c.warmup_epochs, max_samples=c.max_samples,
                   batch_size=c.batch_size, lr=c.lr, random_children=c.random_children,
                   compressed_share=c.compressed_share, recalibration_batches=c.recalibration_batches,
                   seed=experiment.config.seed, threads=c.threads, device=experiment.config.device,
                   amp=experiment.config.amp)


@dataclass
class TrainState:
    """Where a supernet's training stands: epochs done and, per epoch, the largest and smallest child's
    validation accuracy (batch norm recalibrated), the share of compressed steps and the seconds taken."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def child_accuracy(net: Supernet, arch: ArchSpec, splits: Splits, calibration: torch.Tensor,
                   config: SupernetTraining) -> float:
    """Validation accuracy of the extracted child ``arch`` after batch-norm recalibration."""
    model = recalibrate(net.extract(arch), calibration, config.recalibration_batches, config.batch_size)
    return evaluate(model, splits.val)


# ---------------------------------------------------------------------------------------------- checkpoint


def _space_key(space: Space) -> str:
    return json.dumps(space.config.model_dump(mode="json"), sort_keys=True)


def save_supernet(path: Path, net: Supernet, state: TrainState, optimizer: torch.optim.Optimizer | None = None,
                  config: SupernetTraining | None = None, dtype: torch.dtype | None = None) -> None:
    """The supernet's weights (``net.*``), SGD momentum (``momentum.*``) and its metadata, atomically.
    ``dtype``: the floating-point weights stored as that (float16 to ship; loading casts them back)."""
    tensors = {f"net.{k}": _stored(v, dtype) for k, v in net.state_dict().items()}
    if optimizer is not None:
        names = {id(p): n for n, p in net.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    tensors[f"momentum.{names[id(p)]}"] = buf.detach().cpu().contiguous().clone()
    meta = {"format": FORMAT, "space": _space_key(net.space), "space_name": net.space.name,
            "state": json.dumps(asdict(state)), "config": json.dumps(asdict(config) if config else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save_tensors(tensors, metadata=meta))


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    t = tensor.detach().cpu()
    return (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous().clone()


def read_supernet(path: Path, space: Space) -> tuple[dict[str, torch.Tensor], TrainState]:
    """(tensors, state) of a supernet checkpoint for ``space``, or a SupernetError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SupernetError(f"supernet checkpoint {str(path)!r} does not exist; train it with "
                            f"`nas supernet train EXPERIMENT` (the experiment's supernet.checkpoint).") from None
    try:
        tensors = load_tensors(data)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SupernetError(f"supernet checkpoint {str(path)!r} is not a readable safetensors file ({exc}).") from None
    if meta.get("format") != FORMAT:
        raise SupernetError(f"{path}: not a nas supernet checkpoint (format {meta.get('format')!r}).")
    if meta.get("space") != _space_key(space):
        raise SupernetError(f"{path}: this supernet was trained for space {meta.get('space_name')!r} at another "
                            f"setting (input, classes or choices) than space {space.name!r} of this experiment; "
                            f"train one for it with `nas supernet train EXPERIMENT` (or point supernet.checkpoint "
                            f"elsewhere).")
    return tensors, TrainState(**json.loads(meta["state"]))


def load_supernet(path: str | Path, space: Space) -> tuple[Supernet, TrainState]:
    """The supernet saved at ``path`` for ``space`` and where its training stood."""
    tensors, state = read_supernet(Path(path), space)
    net = Supernet(space)
    weights = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise SupernetError(f"{path}: the weights do not match the supernet of space {space.name!r}: "
                            f"{str(exc).splitlines()[0]}") from None
    return net.eval(), state


# ---------------------------------------------------------------------------------------------- training


def _optimizer(net: Supernet, config: SupernetTraining) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv and linear weights only (not batch norm, biases
    or the kernel transforms, which decay would pull away from the identity)."""
    transforms = {id(p) for p in net.transforms()}
    decay = [p for p in net.parameters() if p.ndim > 1 and id(p) not in transforms]
    rest = [p for p in net.parameters() if p.ndim <= 1 or id(p) in transforms]
    return torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def _restore_momentum(net: Supernet, optimizer: torch.optim.SGD, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in net.named_parameters():
        buf = tensors.get(f"momentum.{name}")
        if buf is not None:
            optimizer.state[p]["momentum_buffer"] = buf.to(p.device, copy=True)


def _logits(net: Supernet, x: torch.Tensor, arch: ArchSpec, compression: CompressionSpec | None) -> torch.Tensor:
    tensors = net.tensors(arch)
    if compression is not None:
        tensors = compressed_tensors(tensors, compression)
    return net(x, arch, tensors)


def _check(loss: torch.Tensor, epoch: int, step: int) -> None:
    value = float(loss.detach())
    if not math.isfinite(value) or value > 1e4:
        raise SupernetError(f"supernet training diverged (loss {value:.4g}) at epoch {epoch + 1}, step {step}; "
                            "lower supernet.lr in the experiment file and train again.")


EpochLine = Callable[[int, dict[str, float]], None]


def train_supernet(space: Space, splits: Splits, config: SupernetTraining, checkpoint: str | Path, *,
                   progress: bool | None = None, on_epoch: EpochLine | None = None) -> tuple[Supernet, TrainState]:
    """Train (or go on training) the supernet of ``space`` on ``splits``, saving ``checkpoint`` after every
    epoch; a checkpoint already there is resumed from. ``progress``: a tqdm bar over each epoch's steps
    (None: when stderr is a terminal). ``on_epoch(epoch, row)`` after each epoch (from 0)."""
    path = Path(checkpoint)
    torch.manual_seed(config.seed)  # the initial weights
    net, state = Supernet(space), TrainState()
    optimizer = _optimizer(net, config)
    device = resolve_device(config.device)
    if path.exists():
        tensors, state = read_supernet(path, space)
        net, _ = load_supernet(path, space)
        optimizer = _optimizer(net, config)
        net.to(device)  # the optimizer's parameters are the same objects there
        _restore_momentum(net, optimizer, tensors)
    net.to(device)
    precision = Precision(device, config.amp)
    x_all, y_all = stage(as_tensors(splits.train)[:2], device)  # a streamed image folder is read whole
    n = min(len(x_all), config.max_samples or len(x_all))
    batch = min(config.batch_size, n)
    steps = n // batch
    total = steps * config.epochs
    largest, smallest = extreme(space, True), extreme(space, False)
    calibration = calibration_images(splits, config.recalibration_batches, config.batch_size, config.seed)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for epoch in range(state.epoch, config.epochs):
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            order = torch.randperm(len(x_all), generator=generator)[:n].to(device)
            rng = random.Random(config.seed * 1_000_003 + epoch)
            torch.manual_seed(config.seed * 1_000_003 + epoch)
            warm = epoch < config.warmup_epochs
            compressed = skipped = 0
            net.train()
            bar = _bar(progress, steps, f"supernet epoch {epoch + 1}/{config.epochs}")
            for step in range(steps):
                t = epoch * steps + step
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
                idx = order[step * batch:(step + 1) * batch]
                x, y = x_all[idx], y_all[idx]
                optimizer.zero_grad(set_to_none=True)
                with precision.autocast():
                    teacher = _logits(net, x, largest, None)
                    loss = F.cross_entropy(teacher, y)
                _check(loss, epoch, step)
                precision.backward(loss)
                if not warm:  # the sandwich: the smallest and random children, distilled from the largest
                    squeeze = rng.random() < config.compressed_share
                    compressed += squeeze
                    for k in range(1 + config.random_children):
                        drawn = space.random(rng.randrange(2**31))
                        with precision.autocast():
                            logits = _logits(net, x, drawn.arch if k else smallest,
                                             drawn.compression if squeeze else None)
                            loss = hinton_loss(logits, teacher.detach(), y)
                        _check(loss, epoch, step)
                        precision.backward(loss)
                skipped += not precision.step(optimizer, MAX_GRAD_NORM)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            if warm and epoch + 1 == config.warmup_epochs:
                net.sort_channels()
                optimizer.state.clear()  # the momentum of reordered channels no longer matches them
            row = {"epoch": epoch + 1, "largest": child_accuracy(net, largest, splits, calibration, config),
                   "smallest": child_accuracy(net, smallest, splits, calibration, config),
                   "compressed_steps": compressed / max(1, steps), "skipped_steps": skipped, "seconds": round(time.perf_counter() - start, 2)}
            state = TrainState(epoch + 1, [*state.history, row])
            save_supernet(path, net, state, optimizer, config)
            if on_epoch is not None:
                on_epoch(epoch, row)
    finally:
        torch.set_num_threads(saved_threads)
    return net.eval(), state


def _bar(progress: bool | None, total: int, desc: str) -> Any:
    show = progress if progress is not None else sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
