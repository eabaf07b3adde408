"""Build the real torch network for an :class:`~nas.spec.ArchSpec`.

The network is assembled from :func:`nas.ops` (the op list is the single
definition), so module paths, shapes and parameter counts agree with the cost
model by construction; the tests check it against torch and fvcore anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from nas.graph import Op, ops
from nas.spec import ArchSpec


class Residual(nn.Sequential):
    """``x + body(x)``: an inverted-residual block whose shapes allow the add."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class Network(nn.Sequential):
    """The built network; ``spec`` is the :class:`ArchSpec` it was built from."""

    def __init__(self, spec: ArchSpec, layers: nn.Sequential) -> None:
        super().__init__(OrderedDict(layers=layers))
        self.spec = spec


def _module(op: Op) -> nn.Module:
    if op.kind == "conv":
        return nn.Conv2d(op.cin, op.cout, op.kernel, op.stride, op.padding, groups=op.groups, bias=op.bias)
    if op.kind == "linear":
        return nn.Linear(op.cin, op.cout, bias=op.bias)
    if op.kind == "bn":
        return nn.BatchNorm2d(op.cout)
    if op.kind == "relu":
        return nn.ReLU(inplace=True)
    if op.kind == "relu6":
        return nn.ReLU6(inplace=True)
    if op.kind == "maxpool":
        return nn.MaxPool2d(op.kernel, op.stride)
    if op.kind == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op.kind == "flatten":
        return nn.Flatten()
    raise ValueError(f"no module for op kind {op.kind!r}")  # unreachable: graph.ops emits known kinds


def _assemble(tree: dict[str, Any], path: str, residual: set[str]) -> nn.Sequential:
    children = OrderedDict(
        (name, _assemble(child, f"{path}.{name}", residual) if isinstance(child, dict) else child)
        for name, child in tree.items()
    )
    return Residual(children) if path in residual else nn.Sequential(children)


def _init(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialization: Kaiming fan-out convs, unit BN, small linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(arch: ArchSpec) -> Network:
    """The torch module for ``arch``; input ``(batch, *arch.input_shape)``, output logits."""
    tree: dict[str, Any] = {}
    residual: set[str] = set()
    for op in ops(arch):
        *path, leaf = op.name.split(".")
        if op.kind == "add":
            residual.add("." + ".".join(path[1:]))
            continue
        node = tree
        for part in path[1:]:  # path[0] is "layers"
            node = node.setdefault(part, {})
        node[leaf] = _module(op)
    model = Network(arch, _assemble(tree, "", residual))
    _init(model)
    return model
