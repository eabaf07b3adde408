"""Structured pruning that physically removes channels and neurons: a smaller dense network.

The result is a new :class:`nas.models.Network` built from a new, narrower
:class:`~nas.spec.ArchSpec` (so :func:`nas.count` and latency tables see the
saving), with the kept weights copied over. What is pruned:

- plain conv layers: output filters (and the matching input channels of the next
  conv, or the matching columns of the linear layer after ``flatten``/``global_avg_pool``);
- hidden linear layers: output neurons (and the next layer's input columns);
- inverted-residual blocks with an expansion conv: hidden channels, i.e. outputs of
  the 1x1 expansion, the depthwise/full spatial conv's channels, and the inputs of
  the projection. Block outputs are kept, so residual adds stay valid.

Convs feeding a block with a residual add or without an expansion conv, grouped
spatial convs, and the classifier are left whole: pruning them would need the same
channels removed along a whole residual chain.

Importance (the Torch-Pruning split: importance function, then slicing):
``l1``/``l2`` norm of each output filter, or ``activation``, the fraction of inputs
on which the unit's activation is non-zero (neurons that rarely fire go first;
units without an activation use the mean absolute output instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nas.compress._base import CompressionMethod
from nas.errors import CompressError
from nas.graph import ops
from nas.models import Network, build_model
from nas.spec import ArchSpec, Conv, Flatten, GlobalAvgPool, InvertedResidual, Layer, Linear, MaxPool

Criterion = Literal["l1", "l2", "activation"]
CRITERIA = ("l1", "l2", "activation")


def prunable_units(arch: ArchSpec) -> dict[int, str]:
    """Layer index -> what can be pruned there (``"out"`` or ``"hidden"``), by the rules above."""
    layers = arch.layers
    out: dict[int, str] = {}
    last_weight = max(i for i, layer in enumerate(layers) if isinstance(layer, (Conv, Linear, InvertedResidual)))
    shapes = _input_channels(arch)
    for i, layer in enumerate(layers):
        if isinstance(layer, InvertedResidual):
            if layer.expansion != 1 and layer.conv != "grouped":
                out[i] = "hidden"
            continue
        if i == last_weight or not isinstance(layer, (Conv, Linear)):
            continue
        if isinstance(layer, Conv) and layer.groups != 1:
            continue
        nxt = next((j for j in range(i + 1, len(layers)) if isinstance(layers[j], (Conv, Linear, InvertedResidual))),
                   None)
        if nxt is None:
            continue
        after = layers[nxt]
        if isinstance(after, Conv) and after.groups != 1:
            continue
        if isinstance(after, InvertedResidual) and (after.expansion == 1 or after.has_residual(shapes[nxt])):
            continue
        out[i] = "out"
    return out


def _input_channels(arch: ArchSpec) -> list[int]:
    chans, shape = [], arch.input_shape
    from nas.graph import layer_ops

    for i, layer in enumerate(arch.layers):
        chans.append(shape[0])
        _, shape = layer_ops(layer, f"layers.{i}", shape)
    return chans


def _act_module(unit: nn.Sequential) -> nn.Module | None:
    acts = [m for m in unit if isinstance(m, (nn.ReLU, nn.ReLU6))]
    return acts[-1] if acts else None


def channel_importance(model: Network, criterion: Criterion = "l1", data: torch.Tensor | None = None
                       ) -> dict[int, torch.Tensor]:
    """Score of every prunable channel, per layer index (higher = more important)."""
    if criterion not in CRITERIA:
        raise CompressError(f"structured pruning: criterion must be one of {list(CRITERIA)}, but got {criterion!r}.")
    arch = model.spec
    units = prunable_units(arch)
    layers = model.layers
    scores: dict[int, torch.Tensor] = {}
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        for i, what in units.items():
            weight = layers[i][0][0].weight if what == "hidden" else layers[i][0].weight
            scores[i] = weight.detach().flatten(1).norm(p=p, dim=1)
        return scores
    if data is None:
        raise CompressError("structured pruning: criterion 'activation' needs data (a batch of inputs).")
    stats: dict[int, list[torch.Tensor]] = {i: [] for i in units}
    hooks = []

    def hook_for(i: int, fires: bool) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_: nn.Module, __: object, out: torch.Tensor) -> None:
            x = (out > 0).float() if fires else out.abs()
            stats[i].append(x.transpose(0, 1).flatten(1).mean(1) if x.dim() > 1 else x)
        return hook

    for i, what in units.items():
        unit = layers[i][1] if what == "hidden" and arch.layers[i].expansion != 1 else layers[i]  # spatial unit
        act = _act_module(unit)
        target = act if act is not None else unit
        hooks.append(target.register_forward_hook(hook_for(i, act is not None)))
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
    return {i: torch.stack(v).mean(0) for i, v in stats.items()}


def _expansion(hidden: int, cin: int) -> float:
    """An expansion that makes ``InvertedResidual.hidden(cin) == hidden`` and is never exactly 1."""
    e = hidden / cin if hidden != cin else (hidden + 0.25) / cin
    if int(round(cin * e)) != hidden:  # float rounding: nudge towards the target
        e = (hidden + 0.25) / cin
    return e


def prune_channels(model: Network, ratio: float, *, criterion: Criterion = "l1", data: torch.Tensor | None = None,
                   layers: dict[int, float] | None = None, min_channels: int = 1) -> Network:
    """A new, narrower network keeping the most important ``1 - ratio`` of each prunable unit's channels.

    ``layers`` overrides the ratio per layer index. Kept channels keep their
    weights, so each kept channel's output equals the original's while its inputs
    are unchanged (the first pruned layer's outputs exactly).
    """
    if not isinstance(model, Network):
        raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
    if not 0.0 <= ratio < 1.0:
        raise CompressError(f"structured pruning: ratio must satisfy 0 <= ratio < 1, but got {ratio}.")
    arch = model.spec
    scores = channel_importance(model, criterion, data)
    keep: dict[int, torch.Tensor] = {}
    for i, score in scores.items():
        r = (layers or {}).get(i, ratio)
        n = score.numel()
        kept = max(min_channels, n - math.floor(r * n))
        keep[i] = torch.topk(score, min(kept, n)).indices.sort().values
    new_layers: list[Layer] = []
    cin = arch.input_shape[0]
    for i, layer in enumerate(arch.layers):
        if isinstance(layer, Conv) and i in keep:
            layer = Conv(len(keep[i]), layer.kernel, layer.stride, layer.groups, layer.bn, layer.act, layer.padding)
        elif isinstance(layer, Linear) and i in keep:
            layer = Linear(len(keep[i]), layer.act, layer.bias)
        elif isinstance(layer, InvertedResidual) and layer.expansion != 1:
            hidden = len(keep[i]) if i in keep else layer.hidden(_input_channels(arch)[i])
            layer = InvertedResidual(layer.out, _expansion(hidden, cin), layer.kernel, layer.stride, layer.conv,
                                     layer.groups, layer.act, layer.linear, layer.residual)
        new_layers.append(layer)
        cin = _out_channels(layer, cin)
    new_arch = ArchSpec(arch.input_shape, tuple(new_layers), arch.family)
    small = build_model(new_arch)
    _copy_weights(model, small, keep)
    small.train(model.training)
    return small


def _out_channels(layer: Layer, cin: int) -> int:
    if isinstance(layer, (Conv, Linear, InvertedResidual)):
        return layer.out
    return cin


def _copy_unit(src: nn.Sequential, dst: nn.Sequential, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None,
               depthwise: bool = False) -> None:
    with torch.no_grad():
        for a, b in zip(src, dst):
            if isinstance(a, (nn.Conv2d, nn.Linear)):
                w = a.weight
                if out_idx is not None:
                    w = w[out_idx]
                if in_idx is not None and not depthwise:
                    w = w[:, in_idx]
                b.weight.copy_(w)
                if a.bias is not None:
                    b.bias.copy_(a.bias if out_idx is None else a.bias[out_idx])
            elif isinstance(a, nn.BatchNorm2d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    t = getattr(a, name)
                    getattr(b, name).copy_(t if out_idx is None else t[out_idx])
                b.num_batches_tracked.copy_(a.num_batches_tracked)


def _copy_weights(big: Network, small: Network, keep: dict[int, torch.Tensor]) -> None:
    arch = big.spec
    op_list = ops(arch)
    cur: torch.Tensor | None = None  # kept input channels of the current layer (None: all)
    for i, layer in enumerate(arch.layers):
        src, dst = big.layers[i], small.layers[i]
        if isinstance(layer, (Conv, Linear)):
            _copy_unit(src, dst, keep.get(i), cur)
            cur = keep.get(i)
        elif isinstance(layer, InvertedResidual):
            hidden = keep.get(i)
            units = list(zip(src, dst))
            if layer.expansion != 1:
                (s0, d0), units = units[0], units[1:]
                _copy_unit(s0, d0, hidden, cur)
            (s1, d1), (s2, d2) = units
            _copy_unit(s1, d1, hidden, hidden, depthwise=layer.conv == "depthwise")
            _copy_unit(s2, d2, None, hidden)
            cur = None
        elif isinstance(layer, Flatten) and cur is not None:
            flat = next(op for op in op_list if op.name == f"layers.{i}.0")
            area = flat.h * flat.w
            cur = (cur[:, None] * area + torch.arange(area)[None, :]).flatten()
        elif not isinstance(layer, (MaxPool, GlobalAvgPool, Flatten)):
            raise CompressError(f"structured pruning: unsupported layer {layer!r}.")


@dataclass(frozen=True)
class ChannelPruning(CompressionMethod):
    """Structured pruning (:func:`prune_channels`); ``apply`` returns a *new*, smaller network."""

    ratio: float = 0.5
    criterion: Criterion = "l1"

    def apply(self, model: nn.Module, data: torch.Tensor | None = None) -> nn.Module:
        if not isinstance(model, Network):
            raise CompressError(f"structured pruning needs a nas Network, but got {type(model).__name__}.")
        return prune_channels(model, self.ratio, criterion=self.criterion, data=data)
