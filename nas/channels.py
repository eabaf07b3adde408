"""Coupled channel groups of an :class:`~nas.spec.ArchSpec`, and the spec that structured pruning leaves.

A *channel group* is a set of channels that must be removed together for the
network to stay valid (Torch-Pruning's dependency groups, worked out here from
the spec instead of a traced graph):

- the outputs of a conv or linear layer, with the inputs of whatever reads them
  (the next conv, or the next linear layer's columns after ``flatten`` or
  ``global_avg_pool``);
- a residual chain: the block (or stem conv) that feeds a run of inverted-residual
  blocks whose outputs are added together, and every block of that run, share one
  channel set (the stem is coupled with whatever it feeds in the same way);
- an inverted-residual block's hidden channels: the expansion conv's outputs, the
  spatial conv's channels and the projection's inputs. A depthwise conv follows its
  input channels; a grouped spatial conv keeps its ``groups`` and every group loses
  the same number of channels (as Torch-Pruning prunes grouped convs); without an
  expansion conv the hidden channels are the block's input channels.

The network's input and the classifier's outputs are never pruned; neither are the
channels touching a plain grouped conv (no built-in space has one).

:func:`pruned_arch` is the spec arithmetic alone (no torch; :func:`nas.compressed`
calls it for every scored candidate): every prunable group of ``n`` channels keeps
``max(1, int(n * (1 - ratio)))``, per conv group when a grouped conv reads them,
Torch-Pruning's rule for ``pruning_ratio`` with local pruning, so at the same ratio no
group keeps more channels than Torch-Pruning keeps. Grouped convs keep their group
count rather than losing whole groups: whole groups would cut a grouped conv's MAdds
only linearly in the ratio (Torch-Pruning's per-group cut is quadratic), a conv of 2
groups could not go below half, and the pruned group counts (3, 5, ...) would be
structures no latency table has measured.
:func:`nas.compress.structured.prune_channels` does the same to a trained network.

A floor below :mod:`nas.cost` (which prices ``compressed(...)``) and
:mod:`nas.compress`, so both can read it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import lru_cache
from dataclasses import dataclass, field
from typing import NamedTuple

from nas.errors import CompressError
from nas.graph import Op, layer_ops
from nas.spec import ArchSpec, Conv, Flatten, GlobalAvgPool, InvertedResidual, Layer, Linear, MaxPool


@dataclass(frozen=True)
class ChannelGroup:
    """One coupled set of channels, in ``parts`` equal blocks that each keep the same number
    (``parts``: the groups of a grouped conv that reads them; 1 otherwise)."""

    channels: int
    parts: int = 1
    prunable: bool = True
    #: ``(op name, "out" | "in")`` (op names from :func:`nas.ops`): the convs, linear layers and
    #: batch norms whose outputs are these channels, and the convs and linear layers that read them.
    members: tuple[tuple[str, str], ...] = ()

    def kept(self, ratio: float) -> int:
        """Channels left after removing ``ratio`` of each part's channels (at least one per part)."""
        return _kept(self.channels, self.parts, self.prunable, ratio)


def _kept(channels: int, parts: int, prunable: bool, ratio: float) -> int:
    if not prunable:
        return channels
    return max(1, int(channels // parts * (1.0 - ratio))) * parts


class WeightSlice(NamedTuple):
    """A weight op (conv, linear or bn) and the groups of its output and input channels."""

    name: str
    kind: str
    out: int
    inp: int
    area: int  # columns per input channel of a linear layer after flatten (1 otherwise)
    groups: int
    group_in: int  # input channels per group (1 for a depthwise conv)


class Tap(NamedTuple):
    """A module whose output lies in group ``group``; ``fires``: it ends with an activation."""

    module: str
    group: int
    fires: bool


@dataclass
class ChannelPlan:
    """What :func:`channel_plan` works out: the groups (the network's input first), the
    ``(input, hidden, output)`` group of every layer (``hidden``: an inverted-residual block's
    hidden channels) and, with ``weights``, every weight op's groups and, for the ``activation``
    importance, the modules whose outputs lie in each group."""

    groups: list[ChannelGroup]
    layers: list[tuple[int, int, int]]
    slices: list[WeightSlice] = field(default_factory=list)
    taps: list[Tap] = field(default_factory=list)


class _Builder:
    """Groups as plain lists while the walk over the layers couples them (it runs for every scored candidate)."""

    def __init__(self, weights: bool) -> None:
        self.weights = weights
        self.channels: list[int] = []
        self.parts: list[int] = []
        self.prunable: list[bool] = []
        self.layers: list[tuple[int, int, int]] = []
        self.slices: list[WeightSlice] = []
        self.taps: list[Tap] = []

    def new(self, channels: int, prunable: bool = True) -> int:
        self.channels.append(channels)
        self.parts.append(1)
        self.prunable.append(prunable)
        return len(self.channels) - 1

    def split(self, g: int, parts: int) -> None:
        """Group ``g`` is read by a conv of ``parts`` groups: each part keeps as many channels as the others."""
        common = math.lcm(self.parts[g], parts)
        if self.channels[g] % common or common == self.channels[g]:  # groups that do not nest, or one channel each
            self.prunable[g] = False
        else:
            self.parts[g] = common

    def add(self, ops: list[Op], roles: Callable[[str], tuple[int, int]], area: int = 1) -> None:
        """Record the weight ops of one layer; ``roles(name)`` gives an op's (output, input) groups."""
        for op in ops:
            if op.kind in ("conv", "linear", "bn"):
                out, inp = roles(op.name)
                cols = area if op.kind == "linear" else 1
                self.slices.append(WeightSlice(op.name, op.kind, out, inp, cols, op.groups, op.cin // op.groups // cols))

    def plan(self) -> ChannelPlan:
        members: dict[int, list[tuple[str, str]]] = {}
        for s in self.slices:
            members.setdefault(s.out, []).append((s.name, "out"))
            if s.kind != "bn" and (s.inp != s.out or s.group_in > 1):  # a depthwise filter is its input's too
                members.setdefault(s.inp, []).append((s.name, "in"))
        groups = [ChannelGroup(c, p, ok, tuple(members.get(k, ())))
                  for k, (c, p, ok) in enumerate(zip(self.channels, self.parts, self.prunable))]
        return ChannelPlan(groups, self.layers, self.slices, self.taps)


def check_ratio(ratio: float) -> None:
    """Raise :class:`CompressError` unless ``0 <= ratio < 1``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise CompressError(f"structured pruning: ratio must satisfy 0 <= ratio < 1 (the fraction of channels "
                            f"removed), but got {ratio!r}.")


def _block(b: _Builder, layer: InvertedResidual, i: int, cur: int, ops: list[Op]) -> int:
    """Groups of an inverted-residual block reading group ``cur``; returns its output group."""
    cin = b.channels[cur]
    if layer.expansion != 1:
        hid = b.new(layer.hidden(cin))
        roles = [(hid, cur), (hid, hid)]
    else:  # no expansion conv: the spatial conv works on the input channels
        hid = cur
        roles = [(hid, hid)]
    if layer.conv == "grouped":
        b.split(hid, layer.groups)
    out = cur if layer.has_residual(cin) else b.new(layer.out)
    roles.append((out, hid))
    b.layers.append((cur, hid, out))
    if b.weights:
        b.add(ops, lambda name: roles[int(name.split(".")[2])])  # (output, input) group per unit
        b.taps.append(Tap(f"layers.{i}.{len(roles) - 2}", hid, layer.act != "none"))  # the spatial unit
        b.taps.append(Tap(f"layers.{i}", out, not layer.linear and layer.act != "none"))
    return out


def channel_plan(arch: ArchSpec, *, weights: bool = True) -> ChannelPlan:
    """The channel groups of ``arch`` and, with ``weights``, which groups every weight op reads and writes."""
    return _walk(arch, weights).plan()


def _walk(arch: ArchSpec, weights: bool) -> _Builder:
    if arch.detector is not None:
        raise CompressError("structured pruning: detector networks are not supported (their heads read "
                            "backbone feature maps); prune the backbone's space with channel_ratio 0.")
    b = _Builder(weights)
    shape = arch.input_shape
    cur = b.new(shape[0], prunable=False)  # the network's input
    area = 1
    last = len(arch.layers) - 1
    for i, layer in enumerate(arch.layers):
        ops: list[Op] = []
        if weights:  # shapes only matter for the columns a linear layer reads after flatten
            ops, out_shape = layer_ops(layer, f"layers.{i}", shape)
        if isinstance(layer, (Conv, Linear)):
            out = b.new(layer.out, prunable=i != last)
            if isinstance(layer, Conv) and layer.groups != 1:
                b.prunable[cur] = b.prunable[out] = False
            b.layers.append((cur, out, out))
            if weights:
                b.add(ops, lambda name: (out, cur), area)
                b.taps.append(Tap(f"layers.{i}", out, layer.act != "none"))
            cur, area = out, 1
        elif isinstance(layer, InvertedResidual):
            cur = _block(b, layer, i, cur, ops)
        elif isinstance(layer, (MaxPool, GlobalAvgPool, Flatten)):
            if isinstance(layer, Flatten) and weights:
                area = shape[1] * shape[2]
            b.layers.append((cur, cur, cur))
        else:  # pragma: no cover - the spec's layer union is closed
            raise CompressError(f"structured pruning: unsupported layer {layer!r}.")
        if weights:
            shape = out_shape
    return b


def channel_groups(arch: ArchSpec) -> list[ChannelGroup]:
    """The coupled channel groups of ``arch`` (the network's input first), by the rules above."""
    return channel_plan(arch).groups


def _expansion(hidden: int, cin: int) -> float:
    """An expansion that makes ``InvertedResidual.hidden(cin) == hidden`` and is never exactly 1."""
    e = hidden / cin if hidden != cin else (hidden + 0.25) / cin
    if int(round(cin * e)) != hidden:  # float rounding: nudge towards the target
        e = (hidden + 0.25) / cin
    return e


@lru_cache(maxsize=1 << 16)  # a new spec object validates its fields: build each pruned layer once
def _pruned_layer(layer: Layer, cin: int, hidden: int, out: int, cin_before: int) -> Layer:
    if isinstance(layer, Conv):
        return layer if layer.out == out else Conv(out, layer.kernel, layer.stride, layer.groups, layer.bn, layer.act,
                                                    layer.padding)
    if isinstance(layer, Linear):
        return layer if layer.out == out else Linear(out, layer.act, layer.bias)
    if not isinstance(layer, InvertedResidual):
        return layer
    expansion = layer.expansion
    if expansion != 1 and hidden != layer.hidden(cin):
        expansion = _expansion(hidden, cin)
    # widths that became equal must not create a residual add the network lacks
    residual = layer.residual and (layer.has_residual(cin_before) or layer.stride != 1 or cin != out)
    if (out, expansion, residual) == (layer.out, layer.expansion, layer.residual):
        return layer
    return InvertedResidual(out, expansion, layer.kernel, layer.stride, layer.conv, layer.groups, layer.act,
                            layer.linear, residual)


def pruned_arch(arch: ArchSpec, ratio: float) -> ArchSpec:
    """``arch`` with ``ratio`` of every prunable channel group removed: what
    :func:`nas.compress.structured.prune_channels` builds.

    Pure spec arithmetic, deterministic, and the identity at ``ratio == 0``. Raises
    :class:`CompressError` for a ratio outside ``[0, 1)`` or a detector network.
    """
    check_ratio(ratio)
    if ratio == 0:
        return arch
    b = _walk(arch, weights=False)  # the groups as plain lists: this runs for every scored candidate
    keep = [_kept(*group, ratio) for group in zip(b.channels, b.parts, b.prunable)]
    layers = tuple(_pruned_layer(layer, keep[cin], keep[hid], keep[out], b.channels[cin])
                   for layer, (cin, hid, out) in zip(arch.layers, b.layers))
    return dataclasses.replace(arch, layers=layers)
