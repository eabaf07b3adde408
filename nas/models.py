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


class Network(nn.Module):
    """The built network; ``spec`` is the :class:`ArchSpec` it was built from.

    Children follow the op names: ``layers`` (the backbone, an ``nn.Sequential``
    over the spec's layers) and, for detectors, ``extras`` and ``heads``. A
    classifier returns logits; a detector returns ``(boxes, scores)`` with all
    anchors of all feature maps concatenated, shapes ``(N, anchors * 4)`` and
    ``(N, anchors * num_classes)``.
    """

    def __init__(self, spec: ArchSpec, parts: dict[str, nn.Sequential]) -> None:
        super().__init__()
        self.spec = spec
        for name, part in parts.items():
            self.add_module(name, part)
        self._maps: list[torch.Tensor] = []
        if spec.detector is not None:
            for source in spec.detector.sources:
                self.get_submodule(source).register_forward_hook(self._collect)

    def _collect(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._maps.append(output)

    def forward(self, x: torch.Tensor) -> Any:
        if self.spec.detector is None:
            return self.layers(x)
        self._maps = []
        self.layers(x)
        maps, self._maps = self._maps, []
        if "extras" in self._modules:
            for extra in self.extras:
                maps.append(extra(maps[-1]))
        boxes = [head.box(m).flatten(1) for head, m in zip(self.heads, maps)]
        scores = [head.cls(m).flatten(1) for head, m in zip(self.heads, maps)]
        return torch.cat(boxes, 1), torch.cat(scores, 1)


def _module(op: Op) -> nn.Module:
    if op.kind == "conv":
        return nn.Conv2d(op.cin, op.cout, (op.kernel, op.kw), (op.stride, op.sw), (op.padding, op.pw),
                         groups=op.groups, bias=op.bias)
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


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialization for convs and BN (Kaiming fan-out convs, unit BN); PyTorch's
    default for linear layers (uniform in +-1/sqrt(fan_in), Kaiming's bound for a = sqrt(5)).

    Not torchvision's N(0, 0.01) for linear layers: it suits a classifier after global pooling, but
    in a stack of linear layers (LeNet-300-100) each layer shrinks the signal about 10x, and the MLP
    stayed near chance for epochs (17.5% on digits after 3; issue 17)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


def build_model(arch: ArchSpec) -> Network:
    """The torch module for ``arch``; input ``(batch, *arch.input_shape)``, output logits
    (or ``(boxes, scores)`` for a detector)."""
    tree: dict[str, Any] = {}
    residual: set[str] = set()
    for op in ops(arch):
        *path, leaf = op.name.split(".")
        if op.kind == "add":
            residual.add(".".join(path))
            continue
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = _module(op)
    model = Network(arch, {name: _assemble(sub, name, residual) for name, sub in tree.items()})
    init_weights(model)
    return model
