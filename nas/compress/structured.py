"""Structured pruning over coupled channel groups: a narrower dense network that the cost model prices exactly.

The groups and the pruned widths are :mod:`nas.channels`' (spec arithmetic, no
torch): :func:`prune_channels` returns ``nas.build_model(pruned_arch(model.spec, ratio))``
with the kept channels' weights copied over, so its ``spec`` is exactly what
:func:`nas.compressed` prices. Every prunable group keeps its most important
channels (the same number in every group of a grouped conv).

Importance (the Torch-Pruning split: importance, then slicing), per channel of a group:
``l1``/``l2`` sum ``|w|`` / ``w**2`` over every weight that touches the channel in any
member (output filters and input slices), i.e. the norm of the channel's coupled
weights; ``activation`` needs inputs (the training set, streamed in batches) and scores
the tensors of the group: the exact number of times a channel's output after an
activation was not zero over all inputs and positions (Hu et al.'s neuron activity),
or its summed absolute value where no activation follows (a linear bottleneck), each
tensor's scores scaled to mean 1 before they are added (:func:`activation_tallies`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from nas.channels import ChannelGroup, ChannelPlan, channel_groups, channel_plan, check_ratio, pruned_arch
from nas.compress._base import CompressionMethod
from nas.data import fit_input
from nas.device import model_device, moved
from nas.errors import CompressError
from nas.models import Network, build_model

__all__ = ["CRITERIA", "ActivationTally", "ChannelGroup", "ChannelPruning", "Criterion", "activation_tallies",
           "channel_groups", "channel_importance", "prune_channels", "pruned_arch"]

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


@dataclass
class ActivationTally:
    """What one tapped module's outputs add up to over a dataset, per channel.

    ``nonzero``: the exact number of (input, position) pairs on which the channel's
    output was not zero (int64, counted batch by batch: no mean of means);
    ``abs_sum``: the sum of its absolute outputs (float64); ``seen``: how many
    (input, position) pairs each channel had (inputs times H*W for a feature map).
    """

    nonzero: torch.Tensor
    abs_sum: torch.Tensor
    seen: int = 0

    def add(self, out: torch.Tensor) -> None:
        per_channel = out.detach().transpose(0, 1).flatten(1)  # (C, N*H*W): channel first
        self.nonzero += (per_channel != 0).sum(1)
        self.abs_sum += per_channel.abs().sum(1, dtype=torch.float64)
        self.seen += per_channel.shape[1]


def activation_tallies(model: nn.Module, modules: Sequence[str], data: torch.Tensor | Iterable[torch.Tensor], *,
                       batch_size: int = 256, device: torch.device | None = None) -> dict[str, ActivationTally]:
    """Stream ``data`` (a tensor of inputs, split into ``batch_size`` batches, or an iterable of
    batches) through ``model`` in eval mode on ``device`` (default: the model's; the model is back where
    it was afterwards) and tally the outputs of ``modules`` (:class:`ActivationTally`, on the CPU): Hu et
    al.'s neuron activity, "the number of times it was not zero"."""
    tallies: dict[str, ActivationTally] = {}

    def hook_for(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_: nn.Module, __: object, out: torch.Tensor) -> None:
            if name not in tallies:
                c = out.shape[1]
                tallies[name] = ActivationTally(torch.zeros(c, dtype=torch.int64, device=out.device),
                                                torch.zeros(c, dtype=torch.float64, device=out.device))
            tallies[name].add(out)
        return hook

    shape = getattr(getattr(model, "spec", None), "input_shape", None)  # images are flattened for an MLP
    hooks = [model.get_submodule(m).register_forward_hook(hook_for(m)) for m in dict.fromkeys(modules)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), moved(model, device or model_device(model)) as on:
            where = model_device(on)
            for batch in (data.split(batch_size) if isinstance(data, torch.Tensor) else data):
                batch = batch.to(where, non_blocking=True)
                model(fit_input(batch, tuple(shape)) if shape is not None else batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {name: ActivationTally(t.nonzero.cpu(), t.abs_sum.cpu(), t.seen) for name, t in tallies.items()}


def _activation_scores(model: nn.Module, plan: ChannelPlan, data: torch.Tensor, device: torch.device | None
                       ) -> dict[int, torch.Tensor]:
    taps = [t for t in plan.taps if plan.groups[t.group].prunable]
    tallies = activation_tallies(model, [t.module for t in taps], data, device=device)
    scores = {g: torch.zeros(group.channels, dtype=torch.float64) for g, group in enumerate(plan.groups)
              if group.prunable}
    for t in taps:
        tally = tallies[t.module]
        total = tally.nonzero.double() if t.fires else tally.abs_sum
        scores[t.group] += total / (total.mean() + 1e-12)  # each tensor on the same scale
    return scores


def channel_importance(model: Network, criterion: Criterion = "l1", data: torch.Tensor | None = None
                       ) -> dict[int, torch.Tensor]:
    """Score of every channel of every prunable group (index into :func:`channel_groups`); higher is kept."""
    if not isinstance(model, Network):
        raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
    return _importance(model, channel_plan(model.spec), criterion, data)


def _importance(model: nn.Module, plan: ChannelPlan, criterion: str, data: torch.Tensor | None,
                device: torch.device | None = None) -> dict[int, torch.Tensor]:
    if criterion not in CRITERIA:
        raise CompressError(f"structured pruning: criterion must be one of {list(CRITERIA)}, but got {criterion!r}.")
    if criterion != "activation":
        return _weight_scores(model, plan, 1 if criterion == "l1" else 2)
    if data is None:
        raise CompressError("structured pruning: criterion 'activation' needs data (a batch of training inputs), "
                            "and none was given here; pass data=, or use channel importance 'l1' or 'l2'.")
    return _activation_scores(model, plan, data, device)


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
                   data: torch.Tensor | None = None, device: torch.device | None = None) -> Network:
    """A new, narrower network: ``nas.build_model(pruned_arch(model.spec, ratio))`` with the kept weights.

    Every prunable group keeps its most important channels (the same number in each
    group of a grouped conv); kept channels keep their weights, so at ``ratio == 0`` the output is the
    original's. ``data`` is a batch of inputs, needed by ``criterion="activation"``, streamed through the
    model on ``device`` (default: the model's).
    """
    if not isinstance(model, Network):
        raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
    check_ratio(ratio)
    if model.spec.lowrank is not None:
        raise CompressError("structured pruning runs before low-rank factorization (it sets the widths the "
                            "factors see), but this network is already factorized.")
    plan = channel_plan(model.spec)
    scores = _importance(model, plan, criterion, data, device)
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

    ``data`` (a batch of training inputs) is what the ``activation`` criterion scores, on ``device``
    (default: the model's).
    """

    ratio: float = 0.5
    criterion: Criterion = "l1"
    data: torch.Tensor | None = field(default=None, compare=False, repr=False)
    device: torch.device | None = field(default=None, compare=False, repr=False)

    def apply(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, Network):
            raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
        return prune_channels(model, self.ratio, criterion=self.criterion, data=self.data, device=self.device)
