"""The flat operator list: the one description every cost model reads.

:func:`ops` walks an :class:`~nas.spec.ArchSpec` once, tracking shapes, and
emits one :class:`Op` per torch module that :func:`nas.build_model` creates
(``Op.name`` is that module's path in ``model.named_modules()``), plus one
``add`` op per residual connection. MAdd and parameter counts, storage
estimates and latency look-up tables are all functions of this list, so they
cannot disagree about what the network is.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from nas.errors import SpecError
from nas.spec import ArchSpec, Conv, Detector, Flatten, GlobalAvgPool, InvertedResidual, Layer, Linear, MaxPool

#: Op kinds. ``conv`` and ``linear`` carry weights; ``bn`` carries 2 * cout
#: affine parameters; the rest carry none.
OP_KINDS = ("conv", "linear", "bn", "relu", "relu6", "add", "maxpool", "gap", "flatten")


class Op(NamedTuple):
    """One operator, for a batch of one.

    ``h`` and ``w`` are the *input* spatial size (1 for linear layers);
    ``cin``/``cout`` are channels (features for linear layers). ``kernel``,
    ``stride`` and ``padding`` are along the height, and along the width too
    unless ``kernel_w``/``stride_w``/``padding_w`` say otherwise (the ``k x 1``
    and ``1 x k`` convs of a factorized layer, see :func:`factorize_ops`). A
    NamedTuple rather than a dataclass: the op list is built for every scored
    candidate, and tuples are several times cheaper to create.
    """

    kind: str
    name: str
    cin: int
    cout: int
    h: int = 1
    w: int = 1
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    padding: int = 0
    bias: bool = False
    kernel_w: int | None = None
    stride_w: int | None = None
    padding_w: int | None = None

    @property
    def kw(self) -> int:
        return self.kernel if self.kernel_w is None else self.kernel_w

    @property
    def sw(self) -> int:
        return self.stride if self.stride_w is None else self.stride_w

    @property
    def pw(self) -> int:
        return self.padding if self.padding_w is None else self.padding_w

    @property
    def out_h(self) -> int:
        return (self.h + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.w + 2 * self.pw - self.kw) // self.sw + 1

    @property
    def kernel_text(self) -> str:
        """``3`` for a square kernel, ``3x1`` for a rectangular one (stride and padding alike)."""
        return str(self.kernel) if self.kernel_w is None else f"{self.kernel}x{self.kernel_w}"

    @property
    def weight_count(self) -> int:
        """Weights of a conv or linear op (biases excluded); 0 for other kinds."""
        if self.kind == "conv":
            return self.cout * (self.cin // self.groups) * self.kernel * self.kw
        if self.kind == "linear":
            return self.cin * self.cout
        return 0

    @property
    def params(self) -> int:
        """Trainable parameters: weights, biases, batch-norm scale and shift."""
        if self.kind == "bn":
            return 2 * self.cout
        return self.weight_count + (self.cout if self.bias else 0)

    @property
    def madds(self) -> int:
        """Multiply-adds (one fused multiply-add = 1): conv and linear only."""
        if self.kind == "conv":
            return self.weight_count * self.out_h * self.out_w
        if self.kind == "linear":
            return self.weight_count
        return 0

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Output shape without batch: ``(features,)`` for linear, gap and flatten;
        ``(C, H, W)`` for the rest (elementwise ops after a linear layer report H = W = 1)."""
        if self.kind in ("linear", "gap", "flatten"):
            return (self.cout,)
        if self.kind in ("conv", "maxpool"):
            return (self.cout, self.out_h, self.out_w)
        return (self.cout, self.h, self.w)

    @property
    def signature(self) -> tuple[str, int, int, int, int, int, int, int, int, int]:
        """What determines the op's cost: everything but its name, bias and padding."""
        return (self.kind, self.cin, self.cout, self.h, self.w, self.kernel, self.kw, self.stride, self.sw,
                self.groups)


def lowrank_rank(ratio: float, kernel: int, cin: int, cout: int) -> int:
    """Rank kept when factorizing a layer at ``ratio``: ``max(1, ceil(ratio * full rank))``.

    Linear and 1x1 conv: truncated SVD, full rank ``min(cin, cout)``, ``r * (cin + cout)``
    weights. k x k conv with groups = 1: Jaderberg's two-component scheme (k x 1 conv
    to ``r`` channels, then 1 x k), full rank ``k * min(cin, cout)`` (the rank of the
    ``(cin*k) x (cout*k)`` unfolding), ``r * k * (cin + cout)`` weights.
    """
    return max(1, math.ceil(ratio * kernel * min(cin, cout)))


def _rectangular(op: Op, kernel_w: int, stride_w: int, padding_w: int) -> Op:
    """``op`` with these width-wise settings; a square op (a 1x1 factor) stays in the square form."""
    if (kernel_w, stride_w, padding_w) == (op.kernel, op.stride, op.padding):
        return op
    return op._replace(kernel_w=kernel_w, stride_w=stride_w, padding_w=padding_w)


def factorize_ops(op_list: list[Op], ratio: float) -> list[Op]:
    """The ops of a network whose conv and linear layers are factorized at ``ratio`` of their rank.

    Exactly what :func:`nas.compress.apply_lowrank` does to the built model (two-component
    scheme): a linear or square groups-1 conv op whose factors hold fewer weights than it
    does becomes two ops named ``<name>.0`` and ``<name>.1`` (the children of the
    ``nn.Sequential`` that replaces it); grouped and depthwise convs, and layers that
    would not shrink, stay. The bias moves to the second factor.
    """
    out: list[Op] = []
    for op in op_list:
        if op.kind == "linear":
            rank = lowrank_rank(ratio, 1, op.cin, op.cout)
            if rank * (op.cin + op.cout) < op.weight_count:
                out += [op._replace(name=f"{op.name}.0", cout=rank, bias=False),
                        op._replace(name=f"{op.name}.1", cin=rank)]
                continue
        elif op.kind == "conv" and op.groups == 1 and op.kernel_w is None:
            k = op.kernel
            rank = lowrank_rank(ratio, k, op.cin, op.cout)
            if rank * k * (op.cin + op.cout) < op.weight_count:
                vertical = _rectangular(op._replace(name=f"{op.name}.0", cout=rank, bias=False), 1, 1, 0)
                horizontal = _rectangular(op._replace(name=f"{op.name}.1", cin=rank, h=vertical.out_h, kernel=1,
                                                      stride=1, padding=0), k, op.stride, op.padding)
                out += [vertical, horizontal]
                continue
        out.append(op)
    return out


def _act_op(act: str, name: str, c: int, h: int, w: int) -> list[Op]:
    return [] if act == "none" else [Op(act, name, c, c, h, w)]


def _conv_ops(prefix: str, cin: int, cout: int, h: int, w: int, kernel: int, stride: int, groups: int,
              padding: int, bn: bool, act: str) -> tuple[list[Op], int, int]:
    """A conv [+ bn] [+ act] unit, named ``prefix.0``, ``prefix.1``, ... as in ``nn.Sequential``."""
    if cin % groups or cout % groups:
        raise SpecError(f"{prefix}: groups={groups} must divide both in_channels={cin} and out_channels={cout}.")
    conv = Op("conv", f"{prefix}.0", cin, cout, h, w, kernel, stride, groups, padding, bias=not bn)
    oh, ow = conv.out_h, conv.out_w
    if oh < 1 or ow < 1:
        raise SpecError(f"{prefix}: a {kernel}x{kernel} conv with stride {stride} does not fit a {h}x{w} input.")
    out = [conv]
    if bn:
        out.append(Op("bn", f"{prefix}.1", cout, cout, oh, ow))
    out += _act_op(act, f"{prefix}.{len(out)}", cout, oh, ow)
    return out, oh, ow


def layer_ops(layer: Layer, prefix: str, shape: tuple[int, ...]) -> tuple[list[Op], tuple[int, ...]]:
    """Ops of one layer at input ``shape`` (``(C, H, W)`` or ``(features,)``) and its output shape."""
    if isinstance(layer, Linear):
        features = shape[0] if len(shape) == 1 else 0
        if len(shape) != 1:
            raise SpecError(f"{prefix}: a linear layer needs a flat input; add 'flatten' or 'global_avg_pool' before it.")
        out = [Op("linear", f"{prefix}.0", features, layer.out, bias=layer.bias)]
        out += _act_op(layer.act, f"{prefix}.1", layer.out, 1, 1)
        return out, (layer.out,)
    if len(shape) != 3:
        raise SpecError(f"{prefix}: a {layer.type} layer needs a (C, H, W) input, but gets {shape}.")
    c, h, w = shape
    if isinstance(layer, Conv):
        ops_, oh, ow = _conv_ops(prefix, c, layer.out, h, w, layer.kernel, layer.stride, layer.groups,
                                 layer.pad, layer.bn, layer.act)
        return ops_, (layer.out, oh, ow)
    if isinstance(layer, InvertedResidual):
        return _inverted_residual_ops(layer, prefix, c, h, w)
    if isinstance(layer, MaxPool):
        op = Op("maxpool", f"{prefix}.0", c, c, h, w, layer.kernel, layer.step)
        if op.out_h < 1 or op.out_w < 1:
            raise SpecError(f"{prefix}: a {layer.kernel}x{layer.kernel} max-pool does not fit a {h}x{w} input.")
        return [op], (c, op.out_h, op.out_w)
    if isinstance(layer, GlobalAvgPool):
        return [Op("gap", f"{prefix}.0", c, c, h, w, kernel=h), Op("flatten", f"{prefix}.1", c, c)], (c,)
    if isinstance(layer, Flatten):
        return [Op("flatten", f"{prefix}.0", c, c * h * w, h, w)], (c * h * w,)
    raise SpecError(f"{prefix}: unknown layer {layer!r}.")


def _inverted_residual_ops(block: InvertedResidual, prefix: str, c: int, h: int, w: int
                           ) -> tuple[list[Op], tuple[int, ...]]:
    hidden = block.hidden(c)
    out: list[Op] = []
    unit = 0
    if block.expansion != 1:
        expand, h, w = _conv_ops(f"{prefix}.{unit}", c, hidden, h, w, 1, 1, 1, 0, True, block.act)
        out += expand
        unit += 1
    spatial, oh, ow = _conv_ops(f"{prefix}.{unit}", hidden, hidden, h, w, block.kernel, block.stride,
                                block.spatial_groups(c), block.kernel // 2, True, block.act)
    out += spatial
    project, oh, ow = _conv_ops(f"{prefix}.{unit + 1}", hidden, block.out, oh, ow, 1, 1, 1, 0, True,
                                "none" if block.linear else block.act)
    out += project
    if block.has_residual(c):
        out.append(Op("add", f"{prefix}.add", block.out, block.out, oh, ow))
    return out, (block.out, oh, ow)


def detector_ops(detector: Detector, backbone: list[Op]) -> list[Op]:
    """Ops of the SSD extra layers (``extras.i``) and prediction heads (``heads.i.box``/``.cls``)."""
    index = {op.name: i for i, op in enumerate(backbone)}
    for i, op in enumerate(backbone):  # a layer's module ("layers.3") outputs its last op's result
        index[".".join(op.name.split(".")[:2])] = i
    maps: list[tuple[int, ...]] = []
    last = -1
    for src in detector.sources:
        if src not in index:
            raise SpecError(f"detector.sources: no op named {src!r}; sources are op names from nas.ops(arch), "
                            f"e.g. {backbone[-1].name!r} for the last backbone op.")
        if index[src] <= last:
            raise SpecError(f"detector.sources must be in execution order, but {src!r} runs before the previous source.")
        last = index[src]
        shape = backbone[index[src]].out_shape
        if any(op.kind in ("linear", "gap", "flatten") for op in backbone[:last + 1]):
            raise SpecError(f"detector.sources: {src!r} outputs {shape}, not a (C, H, W) feature map.")
        maps.append(shape)
    out: list[Op] = []
    c, h, w = maps[-1]
    for i, d in enumerate(detector.extras):
        p = f"extras.{i}"
        squeeze, h, w = _conv_ops(f"{p}.0", c, d // 2, h, w, 1, 1, 1, 0, True, "relu6")
        if detector.separable:
            down, h, w = _conv_ops(f"{p}.1", d // 2, d // 2, h, w, 3, 2, d // 2, 1, True, "relu6")
            down += _conv_ops(f"{p}.2", d // 2, d, h, w, 1, 1, 1, 0, True, "relu6")[0]
        else:
            down, h, w = _conv_ops(f"{p}.1", d // 2, d, h, w, 3, 2, 1, 1, True, "relu6")
        out += squeeze + down
        c = d
        maps.append((c, h, w))
    for i, ((c, h, w), anchors) in enumerate(zip(maps, detector.anchors)):
        for head, outputs in (("box", anchors * 4), ("cls", anchors * detector.num_classes)):
            p = f"heads.{i}.{head}"
            if detector.separable:
                out += _conv_ops(f"{p}.0", c, c, h, w, 3, 1, c, 1, True, "relu6")[0]
                out.append(Op("conv", f"{p}.1", c, outputs, h, w, 1, 1, 1, 0, bias=True))
            else:
                out.append(Op("conv", f"{p}.0", c, outputs, h, w, 3, 1, 1, 1, bias=True))
    return out


def ops(arch: ArchSpec) -> list[Op]:
    """The flat operator list of ``arch``, in execution order.

    Layer ``i`` of the spec becomes module ``layers.i`` of the built model; inside
    it, units are numbered as in ``nn.Sequential``. A detector adds ``extras.i``
    and ``heads.i.box`` / ``heads.i.cls`` (see :func:`detector_ops`). Raises
    :class:`SpecError` when a layer does not fit its input (groups not dividing
    channels, a kernel larger than the feature map, a linear layer on an
    unflattened input). With ``arch.lowrank`` set the factorized layers' ops replace
    theirs (:func:`factorize_ops`).
    """
    out: list[Op] = []
    shape = arch.input_shape
    for i, layer in enumerate(arch.layers):
        layer_list, shape = layer_ops(layer, f"layers.{i}", shape)
        out += layer_list
    if arch.detector is not None:
        out += detector_ops(arch.detector, out)
    if arch.lowrank is not None:
        out = factorize_ops(out, arch.lowrank)
    return out
