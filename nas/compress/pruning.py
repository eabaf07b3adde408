"""Unstructured magnitude pruning (layer-wise or global), iterative schedules, lottery tickets.

Built on :mod:`torch.nn.utils.prune`: a pruned layer carries ``weight_orig`` and a
``weight_mask`` buffer, and its forward pre-hook multiplies them, so retraining keeps
pruned weights at zero. :func:`make_permanent` folds the mask into a plain weight
when the caller is done (the quantizers do this themselves and keep the mask).

Importance is ``|w|`` (L1) or ``w**2`` (L2). For single weights both rank
identically, so they prune the same weights; the option exists so that a schedule
can name the same importance as the structured pruner (:mod:`nas.compress.structured`),
where filter L1 and L2 norms do differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

from nas.errors import CompressError

Importance = Literal["l1", "l2"]
Scope = Literal["layer", "global"]
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every conv and linear layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            yield name, module


def _kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "linear"


def _scores(module: nn.Module, importance: Importance) -> torch.Tensor:
    weight = module.weight_orig if prune.is_pruned(module) and hasattr(module, "weight_orig") else module.weight
    return weight.detach().abs() if importance == "l1" else weight.detach() ** 2


def _check_amount(name: str, amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise CompressError(f"pruning: {name} must satisfy 0 <= amount < 1, but got {amount}.")


def magnitude_prune(model: nn.Module, *, sparsity_conv: float = 0.0, sparsity_linear: float = 0.0,
                    scope: Scope = "layer", importance: Importance = "l1",
                    layers: dict[str, float] | None = None) -> dict[str, float]:
    """Zero the smallest weights of every conv/linear layer, in place; returns each layer's sparsity.

    ``scope="layer"`` prunes each layer to its own fraction (``sparsity_conv`` or
    ``sparsity_linear``, or ``layers[name]`` when given, as Deep Compression's
    per-layer rates); ``scope="global"`` ranks all conv weights together (and all
    linear weights together) and removes the given fraction of each group, so layers
    with many small weights lose more. Pruning an already pruned layer prunes
    further, counting the fraction of *all* its weights (torch's prune containers
    would count the remaining ones); masks only grow.
    """
    _check_amount("sparsity_conv", sparsity_conv)
    _check_amount("sparsity_linear", sparsity_linear)
    targets = {"conv": sparsity_conv, "linear": sparsity_linear}
    named = list(weight_layers(model))
    if layers:
        unknown = sorted(set(layers) - {n for n, _ in named})
        if unknown:
            raise CompressError(f"pruning: layers {unknown} are not conv/linear layers of the model; "
                                f"known: {[n for n, _ in named]}.")
        for name, amount in layers.items():
            _check_amount(f"layers[{name!r}]", amount)
    if layers and scope == "global":
        raise CompressError("pruning: per-layer sparsities (compression.layers) set each layer's own rate, but "
                            "scope 'global' ranks all layers together; use scope 'layer' or drop the per-layer "
                            "sparsities.")
    if scope == "layer":
        for name, module in named:
            amount = (layers or {}).get(name, targets[_kind(module)])
            _prune_to(module, _scores(module, importance), amount)
    elif scope == "global":
        for kind, amount in targets.items():
            group = [m for _, m in named if _kind(m) == kind]
            if not group or amount == 0.0:
                continue
            scores = [_scores(m, importance) for m in group]
            flat = torch.cat([s.flatten() for s in scores])
            k = round(amount * flat.numel())
            if k == 0:
                continue
            threshold = torch.kthvalue(flat, k).values
            # rank-exact: break ties at the threshold by position so exactly k weights go
            for module, score in zip(group, scores):
                _apply_mask(module, score > threshold)
            excess = k - sum(int((_mask(m) == 0).sum()) for m in group)
            for module, score in zip(group, scores):
                if excess <= 0:
                    break
                ties = ((score == threshold) & (_mask(module) == 1)).flatten().nonzero().flatten()[:excess]
                mask = _mask(module).clone().flatten()
                mask[ties] = 0
                _apply_mask(module, mask.view_as(score))
                excess -= int(ties.numel())
    else:
        raise CompressError(f"pruning: scope must be 'layer' or 'global', but got {scope!r}.")
    return {name: float((_mask(m) == 0).float().mean()) for name, m in named}


def _mask(module: nn.Module) -> torch.Tensor:
    if prune.is_pruned(module) and hasattr(module, "weight_mask"):
        return module.weight_mask
    return torch.ones_like(module.weight)


def _apply_mask(module: nn.Module, keep: torch.Tensor) -> None:
    """Set the layer's mask to ``old mask AND keep`` through torch's pruning container."""
    new = keep.to(module.weight.dtype)
    if prune.is_pruned(module) and hasattr(module, "weight_mask"):
        new = new * module.weight_mask
        prune.remove(module, "weight")
    prune.custom_from_mask(module, "weight", new)


def _prune_to(module: nn.Module, scores: torch.Tensor, amount: float) -> None:
    k = round(amount * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k > 0:
        # already pruned weights rank first, so the fraction counts all weights
        ranked = torch.where(_mask(module).flatten() == 0, torch.full_like(scores.flatten(), -1.0), scores.flatten())
        keep[torch.topk(ranked, k, largest=False).indices] = False
    _apply_mask(module, keep.view_as(scores))


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current keep-mask (1 kept, 0 pruned) of every pruned layer."""
    return {name: m.weight_mask.detach().clone() for name, m in weight_layers(model) if prune.is_pruned(m)}


def make_permanent(model: nn.Module) -> dict[str, torch.Tensor]:
    """Fold pruning masks into plain weights (zeros stay zero); returns the masks removed."""
    removed = masks(model)
    for _, module in weight_layers(model):
        if prune.is_pruned(module):
            prune.remove(module, "weight")
    return removed


@dataclass(frozen=True)
class PruneSchedule:
    """Iterative pruning: ``steps`` rounds, each raising sparsity and then fine-tuning.

    The sparsity after round ``i`` (1-based) follows Zhu & Gupta's cubic schedule
    ``s_i = s_final * (1 - (1 - i / steps) ** 3)``, which prunes fast while the
    network has many redundant weights and slowly near the target.
    ``rewind`` turns the schedule into lottery-ticket rewinding (Frankle et al.):
    after each round, the surviving weights are reset to their values from the
    snapshot given to :func:`iterative_prune` (early-training weights), keeping the mask.
    ``layers`` gives some layers (by module name) their own final sparsity, on the same curve.
    """

    sparsity_conv: float = 0.0
    sparsity_linear: float = 0.0
    steps: int = 3
    scope: Scope = "layer"
    importance: Importance = "l1"
    rewind: bool = False
    layers: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise CompressError(f"PruneSchedule.steps must be >= 1, but got {self.steps}.")
        _check_amount("sparsity_conv", self.sparsity_conv)
        _check_amount("sparsity_linear", self.sparsity_linear)

    def at(self, step: int) -> tuple[float, float]:
        """(conv, linear) sparsity after round ``step`` (1-based)."""
        f = 1.0 - (1.0 - step / self.steps) ** 3
        return self.sparsity_conv * f, self.sparsity_linear * f

    def layers_at(self, step: int) -> dict[str, float]:
        """Each of ``layers``' own sparsity after round ``step``."""
        f = 1.0 - (1.0 - step / self.steps) ** 3
        return {name: amount * f for name, amount in self.layers}


def iterative_prune(model: nn.Module, schedule: PruneSchedule,
                    fine_tune: Callable[[nn.Module, int], object] | None = None,
                    rewind_to: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Prune ``model`` in place by ``schedule``, calling ``fine_tune(model, step)`` after each round.

    With ``schedule.rewind``, ``rewind_to`` must be a ``state_dict()`` taken early in
    training (before pruning); after each round the kept weights are reset to it
    before fine-tuning, the lottery ticket's "rewinding".
    """
    if schedule.rewind and rewind_to is None:
        raise CompressError("iterative_prune: schedule.rewind is set, so rewind_to (an early state_dict) is required.")
    for step in range(1, schedule.steps + 1):
        conv, linear = schedule.at(step)
        magnitude_prune(model, sparsity_conv=conv, sparsity_linear=linear, scope=schedule.scope,
                        importance=schedule.importance, layers=schedule.layers_at(step))
        if schedule.rewind and rewind_to is not None:
            rewind(model, rewind_to)
        if fine_tune is not None:
            fine_tune(model, step)
    return model


def rewind(model: nn.Module, early: dict[str, torch.Tensor]) -> None:
    """Reset every parameter to its value in ``early`` (a state_dict of the unpruned model), keeping masks.

    Pruned layers store their weight as ``weight_orig``; the mask stays, so the
    rewound network is the winning-ticket sub-network at its early weights.
    """
    early = copy.deepcopy(early)
    with torch.no_grad():
        for name, param in model.named_parameters():
            key = name.replace("weight_orig", "weight")
            if key not in early:
                raise CompressError(f"rewind: the early state has no entry {key!r}; was it taken from this model?")
            if early[key].shape != param.shape:
                raise CompressError(f"rewind: {key!r} has shape {tuple(early[key].shape)} in the early state but "
                                    f"{tuple(param.shape)} now.")
            param.copy_(early[key])
        for name, buf in model.named_buffers():
            if name in early and not name.endswith("weight_mask"):
                buf.copy_(early[name])
        for _, module in weight_layers(model):  # torch recomputes `weight` only in forward; do it now
            if prune.is_pruned(module) and hasattr(module, "weight_mask"):
                module.weight = module.weight_orig * module.weight_mask
