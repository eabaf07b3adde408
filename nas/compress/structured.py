"""Structured pruning over coupled channel groups: a narrower dense network that the cost model prices exactly.

The groups and the pruned widths are :mod:`nas.channels`' (spec arithmetic, no
torch): :func:`prune_channels` returns ``nas.build_model(pruned_arch(model.spec, ratio))``
with the kept channels' weights copied over, so its ``spec`` is exactly what
:func:`nas.compressed` prices. Every prunable group keeps its most important
channels (the same number in every group of a grouped conv).

Importance (the Torch-Pruning split: importance, then slicing), per channel of a group:
``l1``/``l2`` sum ``|w|`` / ``w**2`` over every weight that touches the channel in any
member (output filters and input slices), i.e. the norm of the channel's coupled
weights; ``activation`` needs a batch of inputs and scores the tensors of the group:
the fraction of inputs on which a channel fires after an activation, or its mean
absolute value where no activation follows (a linear bottleneck), each tensor's
scores scaled to mean 1 before they are added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from nas.channels import ChannelGroup, ChannelPlan, channel_groups, channel_plan, check_ratio, pruned_arch
from nas.compress._base import CompressionMethod
from nas.errors import CompressError
from nas.models import Network, build_model

__all__ = ["CRITERIA", "ChannelGroup", "ChannelPruning", "Criterion", "channel_groups", "channel_importance",
           "prune_channels", "pruned_arch"]

Criterion = Literal["l1", "l2", "activation"]
CRITERIA = ("l1", "l2", "activation")


# --------------------------------------------------------------------------- importance (torch)


def _weight_scores(model: nn.Module, plan: ChannelPlan, p: int) -> dict[int, torch.Tensor]:
    scores = {g: torch.zeros(group.channels) for g, group in enumerate(plan.groups) if group.prunable}
    for s in plan.slices:
        if s.kind == "bn":
            continue
        w = model.get_submodule(s.name).weight.detach().abs().pow(p)
        if s.out in scores:
            scores[s.out] += w.flatten(1).sum(1)
        if s.inp in scores and s.group_in > 1:  # a depthwise filter is already its input channel's
            per_group = w.reshape(s.groups, w.shape[0] // s.groups, s.group_in, s.area, -1)
            scores[s.inp] += per_group.sum((1, 3, 4)).flatten()
    return scores


def _activation_scores(model: nn.Module, plan: ChannelPlan, data: torch.Tensor) -> dict[int, torch.Tensor]:
    taps = [t for t in plan.taps if plan.groups[t.group].prunable]
    sums = [torch.zeros(plan.groups[t.group].channels) for t in taps]

    def hook_for(k: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_: nn.Module, __: object, out: torch.Tensor) -> None:
            x = (out > 0).float() if taps[k].fires else out.abs()
            sums[k] += x.transpose(0, 1).flatten(1).sum(1) / (x[0, 0].numel())
        return hook

    hooks = [model.get_submodule(t.module).register_forward_hook(hook_for(k)) for k, t in enumerate(taps)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for chunk in data.split(256):
                model(chunk)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    scores = {g: torch.zeros(group.channels) for g, group in enumerate(plan.groups) if group.prunable}
    for t, total in zip(taps, sums):
        scores[t.group] += total / (total.mean() + 1e-12)  # each tensor on the same scale
    return scores


def channel_importance(model: Network, criterion: Criterion = "l1", data: torch.Tensor | None = None
                       ) -> dict[int, torch.Tensor]:
    """Score of every channel of every prunable group (index into :func:`channel_groups`); higher is kept."""
    if not isinstance(model, Network):
        raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
    return _importance(model, channel_plan(model.spec), criterion, data)


def _importance(model: nn.Module, plan: ChannelPlan, criterion: str, data: torch.Tensor | None) -> dict[int, torch.Tensor]:
    if criterion not in CRITERIA:
        raise CompressError(f"structured pruning: criterion must be one of {list(CRITERIA)}, but got {criterion!r}.")
    if criterion != "activation":
        return _weight_scores(model, plan, 1 if criterion == "l1" else 2)
    if data is None:
        raise CompressError("structured pruning: criterion 'activation' needs data (a batch of training inputs), "
                            "and none was given here; pass data=, or use channel importance 'l1' or 'l2'.")
    return _activation_scores(model, plan, data)


# --------------------------------------------------------------------------- slicing (torch)


def _kept_channels(score: torch.Tensor, group: ChannelGroup, kept: int) -> torch.Tensor:
    """Indices (ascending) of the ``kept`` best-scoring channels, the same number from each part."""
    per_part = score.view(group.parts, -1)
    best = torch.argsort(per_part, dim=1, descending=True, stable=True)[:, : kept // group.parts].sort(dim=1).values
    return (best + torch.arange(group.parts)[:, None] * per_part.shape[1]).flatten()


@torch.no_grad()
def _copy(big: nn.Module, small: nn.Module, plan: ChannelPlan, keep: dict[int, torch.Tensor]) -> None:
    for s in plan.slices:
        src, dst = big.get_submodule(s.name), small.get_submodule(s.name)
        out = keep.get(s.out)
        if s.kind == "bn":
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(src, name)
                getattr(dst, name).copy_(t if out is None else t[out])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
            continue
        w = src.weight if out is None else src.weight[out]
        inp = keep.get(s.inp)
        if inp is not None and s.groups == 1:
            if s.area > 1:
                inp = (inp[:, None] * s.area + torch.arange(s.area)[None, :]).flatten()
            w = w[:, inp]
        elif inp is not None and s.group_in > 1:  # grouped: each group keeps its own inputs (a depthwise conv has one)
            at = (inp % s.group_in).view(s.groups, -1)
            rows = w.view(s.groups, -1, *w.shape[1:])
            w = torch.stack([rows[k][:, at[k]] for k in range(s.groups)]).flatten(0, 1)
        dst.weight.copy_(w)
        if src.bias is not None:
            dst.bias.copy_(src.bias if out is None else src.bias[out])


def prune_channels(model: Network, ratio: float, *, criterion: Criterion = "l1",
                   data: torch.Tensor | None = None) -> Network:
    """A new, narrower network: ``nas.build_model(pruned_arch(model.spec, ratio))`` with the kept weights.

    Every prunable group keeps its most important channels (the same number in each
    group of a grouped conv); kept channels keep their weights, so at ``ratio == 0`` the output is the
    original's. ``data`` is a batch of inputs, needed by ``criterion="activation"``.
    """
    if not isinstance(model, Network):
        raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
    check_ratio(ratio)
    if model.spec.lowrank is not None:
        raise CompressError("structured pruning runs before low-rank factorization (it sets the widths the "
                            "factors see), but this network is already factorized.")
    plan = channel_plan(model.spec)
    scores = _importance(model, plan, criterion, data)
    keep: dict[int, torch.Tensor] = {}
    for g, score in scores.items():
        kept = plan.groups[g].kept(ratio)
        if kept < plan.groups[g].channels:
            keep[g] = _kept_channels(score, plan.groups[g], kept)
    small = build_model(pruned_arch(model.spec, ratio))
    _copy(model, small, plan, keep)
    small.train(model.training)
    return small


@dataclass(frozen=True)
class ChannelPruning(CompressionMethod):
    """Structured pruning (:func:`prune_channels`); ``apply`` returns a *new*, smaller network.

    ``data`` (a batch of training inputs) is what the ``activation`` criterion scores.
    """

    ratio: float = 0.5
    criterion: Criterion = "l1"
    data: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def apply(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, Network):
            raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
        return prune_channels(model, self.ratio, criterion=self.criterion, data=self.data)
