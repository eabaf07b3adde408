"""The weight-sharing supernet: the largest network of a space holds every weight, a candidate is a slice.

Design (after OFA's ``dynamic_op.py`` / ``dynamic_layers.py``, with one difference that matters here):
OFA writes a second, dynamic forward for its elastic layers. This supernet has no forward of its own.
A child runs as ``nas.build_model(child.arch)`` itself, with its parameters and buffers replaced by
slices of the supernet's tensors (:func:`torch.func.functional_call`). So the network the supernet trains for a candidate is, operator for operator, the network
:meth:`Supernet.extract` hands out: the same op list, the same paddings and residual rules.

What each elastic dimension takes:

- depth: a stage keeps its first blocks (slots ``s{i}b{j}``, ``j < depth``);
- width and expansion: the first channels of every tensor. Hidden (expanded) channels are put in
  importance order once, by :meth:`Supernet.sort_channels` (OFA's ``re_organize_middle_weights``: L1
  norm of the projection's input columns) after the warm-up epochs that train the largest network.
  Stage widths are not sorted (as in OFA, whose elastic width stops at the expansion ratio):
  sandwich training from then on keeps the important channels first, as in slimmable networks;
- kernel: the centre of the largest kernel, through OFA's learned kernel transform (a ``k*k x k*k``
  matrix per conv and kernel step, identity at the start, so a 3x3 is first the plain centre). The
  transform only changes which numbers land in the extracted 3x3 weight, so extraction stays exact;
- conv kind: every kind is its own path (conv + batch norm) in each block. Depthwise and full convs
  slice by channels; a grouped conv's weight is indexed (output channel, position within its group),
  the one layout that every hidden width of a group count can share. Across group counts (and
  kinds) the same position means different input channels, so each group count is its own path.

Batch-norm running statistics are shared slices too, meaningless for any one child after sandwich
training: a child's statistics are recalibrated on a few training batches (:func:`recalibrate`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas.device import model_device
from nas.models import Network, build_model, init_weights
from nas.space import Space
from nas.spec import ArchSpec, Conv, InvertedResidual, Linear
from nas.supernet._layout import BlockSlot, Shapes, SupernetError, layout, path_of

Tensors = dict[str, torch.Tensor]


class ElasticUnit(nn.Module):
    """A conv and its batch norm at their largest shapes; :meth:`tensors` gives a child's slices, named as
    the ``conv, bn`` children (``0``, ``1``) of the child's ``nn.Sequential`` unit."""

    def __init__(self, cout: int, cin: int, kernels: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        k = self.kernels[-1]
        self.conv = nn.Conv2d(cin, cout, k, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        # OFA's kernel transform: "7to5" maps the centre 5x5 of the 7x7 weight to the 5x5 weight.
        self.transform = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for small, big in zip(self.kernels, self.kernels[1:])})

    def weight(self, cout: int, cin: int, kernel: int) -> torch.Tensor:
        if kernel not in self.kernels:
            raise SupernetError(f"kernel {kernel} is not one of this layer's kernels {list(self.kernels)}.")
        w = self.conv.weight[:cout, :cin]
        for big, small in zip(self.kernels[::-1], self.kernels[-2::-1]):
            if big <= kernel:
                break
            cut = (big - small) // 2
            w = w[:, :, cut:cut + small, cut:cut + small]
            w = F.linear(w.reshape(cout, cin, small * small), self.transform[f"{big}to{small}"])
            w = w.reshape(cout, cin, small, small)
        return w

    def tensors(self, prefix: str, cout: int, cin: int, kernel: int = 1) -> Tensors:
        if cout > self.conv.out_channels or cin > self.conv.in_channels:
            raise SupernetError(f"{prefix}: {cout}x{cin} channels exceed the supernet's "
                                f"{self.conv.out_channels}x{self.conv.in_channels}.")
        bn = self.bn
        return {f"{prefix}.0.weight": self.weight(cout, cin, kernel),
                f"{prefix}.1.weight": bn.weight[:cout], f"{prefix}.1.bias": bn.bias[:cout],
                f"{prefix}.1.running_mean": bn.running_mean[:cout], f"{prefix}.1.running_var": bn.running_var[:cout],
                f"{prefix}.1.num_batches_tracked": bn.num_batches_tracked}

    def sort_out(self, order: torch.Tensor) -> None:
        """Reorder the output channels (and their batch norm) to ``order``."""
        for t in (self.conv.weight, self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var):
            t.data.copy_(t.data[order])


class BlockSlotModule(nn.Module):
    """One block position: the expansion unit, one spatial unit per path, the projection unit."""

    def __init__(self, slot: BlockSlot) -> None:
        super().__init__()
        self.slot = slot
        self.expand = ElasticUnit(slot.hidden, slot.cin) if slot.expands else None
        self.paths = nn.ModuleDict({
            path: ElasticUnit(slot.hidden, _path_inputs(path, slot.hidden), slot.kernels) for path in slot.paths})
        self.project = ElasticUnit(slot.cout, slot.hidden)

    def tensors(self, prefix: str, block: InvertedResidual, cin: int) -> Tensors:
        hidden, out, unit = block.hidden(cin), {}, 0
        if block.expansion != 1:
            if self.expand is None:
                raise SupernetError(f"{prefix}: expansion {block.expansion} in a block position without expansion.")
            out.update(self.expand.tensors(f"{prefix}.0", hidden, cin))
            unit = 1
        path = path_of(block)
        if path not in self.paths:
            raise SupernetError(f"{prefix}: conv {path!r} is not one of this position's {list(self.paths)}.")
        out.update(self.paths[path].tensors(f"{prefix}.{unit}", hidden, hidden // block.spatial_groups(cin),
                                            block.kernel))
        out.update(self.project.tensors(f"{prefix}.{unit + 1}", block.out, hidden))
        return out

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Hidden channels by the L1 norm of the projection's input columns, largest first (OFA), the
        expansion, depthwise and full paths reordered with them, so every full-width child computes what it
        did. Not sorted: a block without expansion conv (its hidden channels are its inputs, not its own to
        reorder) and a block with a grouped path (a grouped weight is held per position in a group, so a
        permutation would change what its children compute)."""
        if self.expand is None or any(path.startswith("grouped") for path in self.paths):
            return
        order = self.project.conv.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        self.expand.sort_out(order)
        for name, unit in self.paths.items():
            unit.sort_out(order)
            if name == "full":
                unit.conv.weight.data.copy_(unit.conv.weight.data[:, order])
        self.project.conv.weight.data.copy_(self.project.conv.weight.data[:, order])


def _path_inputs(path: str, hidden: int) -> int:
    """Input channels per group of a spatial path's largest conv."""
    if path == "depthwise":
        return 1
    if path == "full":
        return hidden
    return math.ceil(hidden / int(path.split("-")[1]))


class Supernet(nn.Module):
    """The largest network of ``space`` (a mobilenetv2-family classifier space), holding every candidate's weights.

    ``forward(x, arch)`` runs the candidate ``arch`` (an ``ArchSpec`` of the space) on the shared weights;
    :meth:`extract` returns it as a stand-alone ``nas.build_model`` network with a copy of them.
    """

    def __init__(self, space: Space) -> None:
        super().__init__()
        self.space = space
        self.shapes = s = Shapes.of(space)
        stem = space.config.stem
        self.stem = ElasticUnit(s.stem, s.in_channels, (stem.kernel,))
        self.blocks = nn.ModuleDict({f"s{i}b{j}": BlockSlotModule(slot) for (i, j), slot in s.blocks.items()})
        self.head = ElasticUnit(s.head, s.head_in) if s.head else None
        self.classifier = nn.Linear(s.head or s.head_in, s.classes)
        init_weights(self)  # torchvision's MobileNetV2 init, as every built candidate gets; transforms stay identity
        self._skeletons: dict[ArchSpec, Network] = {}

    # ------------------------------------------------------------------ a child's tensors

    def tensors(self, arch: ArchSpec) -> Tensors:
        """The parameters and buffers of ``build_model(arch)``, by name, as slices of the supernet's (with
        gradients: training a child through them trains the supernet)."""
        out: Tensors = {}
        cin = self.shapes.in_channels
        for i, (slot, layer) in enumerate(zip(layout(self.space, arch), arch.layers)):
            prefix = f"layers.{i}"
            if slot[0] == "stem" and isinstance(layer, Conv):
                out.update(self.stem.tensors(prefix, layer.out, cin, layer.kernel))
            elif slot[0] == "block" and isinstance(layer, InvertedResidual):
                out.update(self.blocks[f"s{slot[1]}b{slot[2]}"].tensors(prefix, layer, cin))
            elif slot[0] == "head" and isinstance(layer, Conv) and self.head is not None:
                out.update(self.head.tensors(prefix, layer.out, cin))
            elif slot[0] == "classifier" and isinstance(layer, Linear):
                if cin > self.classifier.in_features or layer.out != self.classifier.out_features:
                    raise SupernetError(f"{prefix}: a {cin} -> {layer.out} classifier does not fit the supernet's "
                                        f"{self.classifier.in_features} -> {self.classifier.out_features}.")
                out[f"{prefix}.0.weight"] = self.classifier.weight[:, :cin]
                out[f"{prefix}.0.bias"] = self.classifier.bias
            cin = getattr(layer, "out", cin)
        return out

    def skeleton(self, arch: ArchSpec) -> Network:
        """``build_model(arch)``: the module tree a child runs in (its own tensors are never used). Built on the
        CPU: on the meta device the build takes 3x as long, and its first one seconds."""
        net = self._skeletons.get(arch)
        if net is None:
            net = build_model(arch)
            if len(self._skeletons) >= 64:  # candidates sampled per step rarely repeat: keep a few
                self._skeletons.pop(next(iter(self._skeletons)))
            self._skeletons[arch] = net
        return net

    def forward(self, x: torch.Tensor, arch: ArchSpec, tensors: Tensors | None = None) -> torch.Tensor:
        """Logits of the child ``arch`` on the shared weights (``tensors``: :meth:`tensors` of ``arch``,
        possibly transformed, e.g. compressed). Train or eval mode follows the supernet's."""
        net = self.skeleton(arch).train(self.training)
        return functional_call(net, tensors if tensors is not None else self.tensors(arch), (x,), strict=True)

    @torch.no_grad()
    def extract(self, arch: ArchSpec) -> Network:
        """``nas.build_model(arch)`` carrying a copy of the supernet's weights for it (in eval mode), on the
        supernet's device."""
        model = build_model(arch).to(model_device(self))
        model.load_state_dict({k: v.detach().clone() for k, v in self.tensors(arch).items()}, strict=True)
        return model.eval()

    def sort_channels(self) -> None:
        """Put every block's hidden channels in importance order (see :meth:`BlockSlotModule.sort_channels`)."""
        for block in self.blocks.values():
            block.sort_channels()

    def transforms(self) -> Iterator[nn.Parameter]:
        """The kernel-transform matrices (trained without weight decay, which would pull them to zero)."""
        for unit in self.modules():
            if isinstance(unit, ElasticUnit):
                yield from unit.transform.values()
