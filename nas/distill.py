"""Knowledge distillation: Hinton's loss, hidden-layer and attention transfer, codistillation.

- :func:`hinton_loss` is exactly ``alpha * H(y, softmax(z_s)) + beta * s * H(softmax(z_t/T), softmax(z_s/T))``
  where ``s = T**2`` (Hinton et al. 2015: it keeps the soft term's gradients
  the same size as ``T`` changes) when ``t2_scale`` is set, else 1. ``H`` is
  cross-entropy; ``soft_loss="kl"`` uses KL divergence instead, which differs
  by the teacher's entropy (a constant: same gradients, a loss that reaches 0).
- Hidden-layer (feature) distillation: a learned 1x1 convolution maps a student
  stage's output to the teacher stage's channels; the loss is their mean
  squared difference (FitNets).
- Attention transfer (Zagoruyko & Komodakis 2017): the spatial map
  ``Q = mean_c |A_c|^p`` of a stage, flattened and L2-normalised per sample;
  each pair adds ``beta / 2 * mean_{n, h, w} (Q_s - Q_t)**2``, their code's form of
  the paper's ``beta / 2 * ||Q_s / ||Q_s|| - Q_t / ||Q_t|| ||``: ``beta = 1000``
  "divided by the number of elements in the attention map and batch size". Maps
  smaller than 4x4 are not paired automatically: there the division by ``H*W``
  leaves a weight of ``beta / 8`` or more on a map of four numbers, and on digits
  (8x8 images) the 2x2 pairs outweighed everything else (a distilled student fell
  from 98.6% to 83.8%).
- Ensembles as teachers: :class:`TeacherEnsemble` averages its members' softened
  outputs ``mean_k softmax(z_k / T)``, which is then the soft target of Hinton's loss.
- Codistillation (Anil et al. 2018): N models train together, each on its own
  cross-entropy plus, after a burn-in of plain training, a distillation term
  towards the average prediction of the others.

Stages are named by module path in the built network (``layers.3`` is layer 3
of the :class:`~nas.spec.ArchSpec`; see :func:`nas.ops` for the units inside),
and read through forward hooks, so any :class:`nas.models.Network` works
unchanged. :func:`stages` lists the candidates with their output shapes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nas.data import Splits
from nas.device import model_device, resolve_device, stage
from nas.errors import TrainError
from nas.train import (
    EpochCallback,
    Plan,
    TrainConfig,
    TrainResult,
    _Threads,
    as_tensors,
    batches,
    evaluate,
    forward,
    loss_problem,
    make_optimizer,
    predict,
    progress_bar,
    train,
)

SoftLoss = Literal["ce", "kl"]


# --------------------------------------------------------------------------- losses


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                alpha: float = 0.5, beta: float = 0.5, temperature: float = 4.0, t2_scale: bool = True,
                soft_loss: SoftLoss = "ce") -> torch.Tensor:
    """Hinton's distillation loss, averaged over the batch (see the module docstring).

    ``targets`` are integer labels; the teacher's logits are treated as constants.
    """
    if temperature <= 0:
        raise TrainError(f"temperature must be > 0, but got {temperature}.")
    hard = F.cross_entropy(student_logits, targets)
    t = float(temperature)
    soft_targets_log = F.log_softmax(teacher_logits.detach() / t, dim=1)
    if soft_loss == "ce":
        soft = F.cross_entropy(student_logits / t, soft_targets_log.exp())
    elif soft_loss == "kl":
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), soft_targets_log, reduction="batchmean",
                        log_target=True)
    else:
        raise TrainError(f"soft_loss must be 'ce' or 'kl', but got {soft_loss!r}.")
    scale = t * t if t2_scale else 1.0
    return alpha * hard + beta * scale * soft


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The normalised spatial attention of ``(N, C, H, W)`` features: ``(N, H*W)``, unit L2 norm per sample."""
    if features.ndim != 4:
        raise TrainError(f"attention maps need (N, C, H, W) features, but got shape {tuple(features.shape)}.")
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the two attention maps; the teacher's map is resized to the student's H x W."""
    t = teacher_features.detach()
    if t.shape[-2:] != student_features.shape[-2:]:
        q = t.abs().pow(p).mean(1, keepdim=True)
        q = F.interpolate(q, size=tuple(student_features.shape[-2:]), mode="bilinear", align_corners=False)
        t_map = F.normalize(q.flatten(1), dim=1)
    else:
        t_map = attention_map(t, p)
    return (attention_map(student_features, p) - t_map).pow(2).mean()


# --------------------------------------------------------------------------- reading stages


def stages(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Output shapes (without batch) of every top-level layer ``layers.i`` of a built network."""
    return stages_of(model, [n for n, _ in model.named_modules() if n.count(".") == 1 and n.startswith("layers.")])


#: The smallest attention map (height and width) that :func:`match_stages` pairs by default.
MIN_ATTENTION_SIZE = 4


def match_stages(student: nn.Module, teacher: nn.Module, min_size: int = MIN_ATTENTION_SIZE
                 ) -> list[tuple[str, str]]:
    """Pairs ``(student stage, teacher stage)``: for every spatial size of at least
    ``min_size`` x ``min_size`` that both networks produce, the last layer of each at
    that size (where attention transfer is applied)."""
    def last_per_size(model: nn.Module) -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        for name, shape in stages(model).items():
            if len(shape) == 3 and min(shape[1], shape[2]) >= max(min_size, 2):
                out[(shape[1], shape[2])] = name
        return out

    s, t = last_per_size(student), last_per_size(teacher)
    return [(s[size], t[size]) for size in s if size in t]


class FeatureTap:
    """Forward hooks that keep the latest output of the named modules (``outputs[name]``).

    Use as a context manager, or call :meth:`close`, so the hooks are removed.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            top = [n for n in modules if n.count(".") <= 1 and n]
            raise TrainError(f"no module named {unknown} in the model; top-level names are {top[:30]}"
                             f"{' ...' if len(top) > 30 else ''} (nas.ops(arch) lists every unit).")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in dict.fromkeys(names)]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self.outputs[name] = output
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """The learned map from a student stage to a teacher stage: a 1x1 conv for
    feature maps, a linear layer for flat features."""
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1, bias=False)
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0], bias=False)
    raise TrainError(f"feature distillation pairs stages of the same kind, but got student {student_shape} "
                     f"and teacher {teacher_shape}.")


# --------------------------------------------------------------------------- ensembles


class TeacherEnsemble(nn.Module):
    """Several teachers as one: the soft target is the mean of their softened outputs.

    ``forward`` returns ``T * log(mean_k softmax(z_k / T))``, logits whose softmax at
    temperature ``T`` is exactly that mean (so :func:`hinton_loss` at ``T`` uses the
    ensemble's averaged soft targets, and the teacher's logits can be cached as for one
    teacher); its top-1 prediction is the averaged distribution's. Each member is fed
    its own input shape (images flattened for an MLP), so members may differ in kind.
    """

    def __init__(self, teachers: Sequence[nn.Module], temperature: float) -> None:
        super().__init__()
        if len(teachers) < 2:
            raise TrainError(f"a teacher ensemble needs at least 2 teachers, but got {len(teachers)}.")
        if temperature <= 0:
            raise TrainError(f"temperature must be > 0, but got {temperature}.")
        self.members = nn.ModuleList(teachers)
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        probs = torch.stack([F.softmax(forward(m, x) / t, dim=1) for m in self.members]).mean(0)
        return t * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


# --------------------------------------------------------------------------- distillation


@dataclass(frozen=True)
class DistillConfig:
    """The distillation objective.

    ``alpha``/``beta``/``temperature``/``t2_scale``/``soft_loss``: Hinton's loss
    (see :func:`hinton_loss`). ``features``: ``(student stage, teacher stage)``
    pairs for hidden-layer distillation, weighted by ``feature_weight``.
    ``attention``: pairs for attention transfer, or ``"auto"`` to pair the last
    layers of each common spatial size of at least ``attention_min_size`` squared
    (:func:`match_stages`); ``attention_weight`` is the paper's ``beta`` (1000, as in
    Zagoruyko & Komodakis's code): each pair adds ``beta / 2`` times the mean over
    batch and positions of the squared difference of the unit-norm maps. On digits
    at init, the two pairs of a MobileNetV2-tiny student (8x8 and 4x4) then add
    about 18 to a Hinton loss of about 20. Without hidden-layer
    terms the teacher's logits on the training set are computed once
    (``cache_teacher``), which makes distillation cost about as much as plain
    training.
    """

    alpha: float = 0.5
    beta: float = 0.5
    temperature: float = 4.0
    t2_scale: bool = True
    soft_loss: SoftLoss = "ce"
    features: tuple[tuple[str, str], ...] = ()
    feature_weight: float = 1.0
    attention: tuple[tuple[str, str], ...] | Literal["auto"] = ()
    attention_weight: float = 1000.0
    attention_p: float = 2.0
    attention_min_size: int = MIN_ATTENTION_SIZE
    cache_teacher: bool = True

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "feature_weight", "attention_weight"):
            if getattr(self, name) < 0:
                raise TrainError(f"DistillConfig.{name} must be >= 0, but got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise TrainError(f"DistillConfig.temperature must be > 0, but got {self.temperature}.")
        if self.soft_loss not in ("ce", "kl"):
            raise TrainError(f"DistillConfig.soft_loss must be 'ce' or 'kl', but got {self.soft_loss!r}.")
        if not isinstance(self.attention_min_size, int) or self.attention_min_size < 1:
            raise TrainError(f"DistillConfig.attention_min_size must be an int >= 1, but got "
                             f"{self.attention_min_size!r}.")
        object.__setattr__(self, "features", tuple(tuple(p) for p in self.features))
        if self.attention != "auto":
            object.__setattr__(self, "attention", tuple(tuple(p) for p in self.attention))


class DistillationLoss(nn.Module):
    """``loss_fn`` for :func:`nas.train.train`: Hinton's loss plus the hidden-layer terms.

    Owns the feature adapters (trained with the student) and the hooks on both
    networks; the teacher is kept frozen, in eval mode, and not registered as a
    submodule. Call :meth:`close` to remove the hooks.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, config: DistillConfig) -> None:
        super().__init__()
        self.config = config
        object.__setattr__(self, "teacher", teacher)  # not a submodule: its parameters are not trained
        attention = (match_stages(student, teacher, config.attention_min_size) if config.attention == "auto"
                     else list(config.attention))
        self.pairs_attention: list[tuple[str, str]] = [tuple(p) for p in attention]  # type: ignore[misc]
        self.pairs_features: list[tuple[str, str]] = list(config.features)
        for pair in self.pairs_attention + self.pairs_features:
            if len(pair) != 2:
                raise TrainError(f"stage pairs are (student module, teacher module), but got {pair!r}.")
        s_names = [p[0] for p in self.pairs_attention + self.pairs_features]
        t_names = [p[1] for p in self.pairs_attention + self.pairs_features]
        self.student_tap = FeatureTap(student, s_names)
        self.teacher_tap = FeatureTap(teacher, t_names)
        self.adapters = nn.ModuleDict()
        if self.pairs_features:
            s_shapes, t_shapes = stages_of(student, s_names), stages_of(teacher, t_names)
            for s, t in self.pairs_features:
                self.adapters[_key(s, t)] = adapter(s_shapes[s], t_shapes[t])

    @property
    def needs_teacher_forward(self) -> bool:
        """Hidden-layer terms need the teacher's activations on every batch."""
        return bool(self.pairs_attention or self.pairs_features)

    def forward(self, logits: torch.Tensor, batch: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        x, y = batch[0], batch[1]
        teacher: nn.Module = self.teacher  # type: ignore[assignment]
        if len(batch) > 2 and not self.needs_teacher_forward:
            t_logits = batch[2]  # cached by distill()
        else:
            with torch.no_grad():
                teacher.eval()
                t_logits = forward(teacher, x)
        c = self.config
        loss = hinton_loss(logits, t_logits, y, alpha=c.alpha, beta=c.beta, temperature=c.temperature,
                           t2_scale=c.t2_scale, soft_loss=c.soft_loss)
        for s, t in self.pairs_attention:  # beta / 2, as in the paper (see the module docstring)
            loss = loss + c.attention_weight / 2 * attention_loss(self.student_tap.outputs[s],
                                                                  self.teacher_tap.outputs[t], c.attention_p)
        for s, t in self.pairs_features:
            mapped = self.adapters[_key(s, t)](self.student_tap.outputs[s])
            target = self.teacher_tap.outputs[t].detach()
            if mapped.ndim == 4 and mapped.shape[-2:] != target.shape[-2:]:
                mapped = F.interpolate(mapped, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
            loss = loss + c.feature_weight * F.mse_loss(mapped, target)
        return loss

    def close(self) -> None:
        self.student_tap.close()
        self.teacher_tap.close()


def _key(s: str, t: str) -> str:
    return f"{s}->{t}".replace(".", "_")


def stages_of(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Output shapes (without batch) of the named modules, by one forward pass of two zeros."""
    shape = tuple(getattr(getattr(model, "spec", None), "input_shape", ()))
    if not shape:
        raise TrainError("feature distillation needs nas Networks (built by nas.build_model), which know their input.")
    with FeatureTap(model, names) as tap:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *shape, device=model_device(model)))
        model.train(was)
        return {n: tuple(tap.outputs[n].shape[1:]) for n in names}


@dataclass
class DistillResult:
    """Accuracies (fractions) before and after distillation, the teacher's, and the training run."""

    teacher_val_accuracy: float
    student_val_before: float
    student_val_after: float
    run: TrainResult
    steps: list[dict[str, Any]] = field(default_factory=list)  # one record per pipeline step
    attention_pairs: list[tuple[str, str]] = field(default_factory=list)  # (student, teacher) stages transferred


Teacher = nn.Module | str | Path


def distill(student: nn.Module, teacher: Teacher | Sequence[Teacher], splits: Splits, config: TrainConfig,
            distill_config: DistillConfig | None = None, *, on_epoch: EpochCallback | None = None
            ) -> DistillResult:
    """Fine-tune ``student`` in place with distillation from ``teacher`` (a module or a checkpoint path),
    or from an ensemble of them (a list: their softened outputs are averaged, :class:`TeacherEnsemble`).

    The teacher is frozen for the run (its ``requires_grad`` flags and mode are
    restored afterwards). Returns validation accuracies of teacher and student
    before and after; ``run.failed`` is set if training hit a NaN or diverged.
    """
    from nas.checkpoint import load_checkpoint

    dc = distill_config or DistillConfig()
    members = list(teacher) if isinstance(teacher, Sequence) and not isinstance(teacher, str) else [teacher]
    members = [load_checkpoint(m)[0] if isinstance(m, (str, Path)) else m for m in members]
    if len(members) > 1 and (dc.attention or dc.features):
        raise TrainError(f"attention transfer and hidden-layer distillation read one teacher's stages, but "
                         f"{len(members)} teachers were given: distil from an ensemble with Hinton's loss only.")
    teacher = members[0] if len(members) == 1 else TeacherEnsemble(members, dc.temperature)
    flags = [p.requires_grad for p in teacher.parameters()]
    modes = [m.training for m in members]
    teacher.requires_grad_(False)
    teacher.eval()
    device = resolve_device(config.device, "TrainConfig.device")
    teacher.to(device)  # not a submodule of the loss: train() does not move it
    student.to(device)
    loss = DistillationLoss(student, teacher, dc)
    try:
        with _Threads(config.threads):
            teacher_acc = evaluate(teacher, splits.val)
            before = evaluate(student, splits.val)
            data: Splits | tuple[TensorDataset, TensorDataset] = splits
            # Cached outputs are of the plain training images: not with augmentation, nor for a streamed folder.
            if dc.cache_teacher and not loss.needs_teacher_forward and splits.augment is None and \
                    isinstance(splits.train, TensorDataset):
                x, y = as_tensors(splits.train)[:2]
                data = (TensorDataset(x, y, predict(teacher, x)), splits.val)
        run = train(student, data, config, loss_fn=loss, on_epoch=on_epoch)
    finally:
        loss.close()
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
        for m, mode in zip(members, modes):
            m.train(mode)
    steps = [{"step": "distill", "val_before": before, "val_after": run.val_accuracy, "failed": run.failed}]
    return DistillResult(teacher_acc, before, run.val_accuracy, run, steps, list(loss.pairs_attention))


# --------------------------------------------------------------------------- codistillation


@dataclass(frozen=True)
class CodistillConfig:
    """Codistillation: ``weight`` of the distillation term, its ``temperature``
    (with the ``T**2`` factor when ``t2_scale``), and ``burn_in_steps`` of
    plain training before the term switches on (Anil et al. use a burn-in so
    that the models first learn something worth sharing)."""

    weight: float = 1.0
    temperature: float = 1.0
    t2_scale: bool = True
    burn_in_steps: int = 0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise TrainError(f"CodistillConfig.weight must be >= 0, but got {self.weight}.")
        if self.temperature <= 0:
            raise TrainError(f"CodistillConfig.temperature must be > 0, but got {self.temperature}.")
        if not isinstance(self.burn_in_steps, int) or self.burn_in_steps < 0:
            raise TrainError(f"CodistillConfig.burn_in_steps must be an int >= 0, but got {self.burn_in_steps!r}.")


@dataclass
class CodistillResult:
    """One :class:`TrainResult` per model (``losses`` are each model's full
    objective per epoch), plus each model's cross-entropy per epoch."""

    runs: list[TrainResult]
    ce_losses: list[list[float]]
    failed: str | None = None
    seconds: float = 0.0


def codistill(models: Sequence[nn.Module], splits: Splits, config: TrainConfig,
              codistill_config: CodistillConfig | None = None, *, on_epoch: EpochCallback | None = None
              ) -> CodistillResult:
    """Train ``models`` together on the same batches; model ``i`` minimises
    ``CE(y, F_i) + weight * s * H(mean_{j != i} softmax(F_j / T), softmax(F_i / T))``
    after ``burn_in_steps`` (only the cross-entropy before). The others'
    predictions are constants for model ``i``'s gradient, as in the algorithm.
    ``on_epoch(epoch, mean val accuracy)`` may return True to stop.
    """
    cc = codistill_config or CodistillConfig()
    if len(models) < 2:
        raise TrainError(f"codistillation needs at least 2 models, but got {len(models)}.")
    device = resolve_device(config.device, "TrainConfig.device")  # float32 there: no amp with several optimizers
    columns = stage(as_tensors(splits.train), device)
    for m in models:
        m.to(device)
    plan = Plan(len(columns[0]), config)
    n = len(models)
    runs = [TrainResult() for _ in models]
    ce_hist: list[list[float]] = [[] for _ in models]
    failed: str | None = None
    start = time.perf_counter()
    t = cc.temperature
    scale = t * t if cc.t2_scale else 1.0
    with _Threads(config.threads):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        optims = [make_optimizer([p for p in m.parameters() if p.requires_grad], config, plan.total_steps)
                  for m in models]
        bar = progress_bar(config, plan.total_steps, "codistill")
        step = 0
        for m in models:
            m.train()
        try:
            for epoch in range(plan.epochs):
                epoch_steps = min(plan.steps_per_epoch, plan.total_steps - step)
                sums = torch.zeros(n, dtype=torch.float64)
                ce_sums = torch.zeros(n, dtype=torch.float64)
                count = 0
                for batch in batches(columns, plan, generator, epoch_steps):
                    x, y = batch[0], batch[1]
                    logits = [forward(m, x) for m in models]
                    probs = torch.stack([F.softmax(z.detach() / t, dim=1) for z in logits])
                    losses = []
                    for i, z in enumerate(logits):
                        ce = F.cross_entropy(z, y)
                        total = ce
                        if step >= cc.burn_in_steps and cc.weight > 0:
                            others = (probs.sum(0) - probs[i]) / (n - 1)
                            total = ce + cc.weight * scale * F.cross_entropy(z / t, others)
                        problem = loss_problem(total, config, epoch, step)
                        if problem:
                            failed = f"model {i}: {problem}"
                            break
                        losses.append(total)
                        ce_sums[i] += float(ce.detach()) * len(y)
                        sums[i] += float(total.detach()) * len(y)
                    if failed:
                        break
                    for opt, _ in optims:
                        opt.zero_grad(set_to_none=True)
                    torch.stack(losses).sum().backward()  # independent terms: each model gets its own gradient
                    for opt, sched in optims:
                        opt.step()
                        sched.step()
                    step += 1
                    count += len(y)
                    if bar is not None:
                        bar.update(1)  # type: ignore[attr-defined]
                for i, run in enumerate(runs):
                    run.samples += count
                    run.epochs = epoch + 1
                    if count:
                        run.losses.append(float(sums[i]) / count)
                        ce_hist[i].append(float(ce_sums[i]) / count)
                    run.failed = failed
                if failed:
                    break
                accs = [evaluate(m, splits.val) for m in models]
                for run, acc in zip(runs, accs):
                    run.history.append(acc)
                if on_epoch is not None and on_epoch(epoch, sum(accs) / n):
                    for run in runs:
                        run.stopped_early = True
                    break
        finally:
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
        for run, m in zip(runs, models):
            run.val_accuracy = evaluate(m, splits.val)
    seconds = time.perf_counter() - start
    for run in runs:
        run.seconds = seconds
    return CodistillResult(runs, ce_hist, failed, seconds)
