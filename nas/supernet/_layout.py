"""Where a candidate of a space sits in the space's largest network: the slots and their largest sizes.

The supernet never restates the space. Its shapes come from the space's own config (the same
``make_divisible`` widths that :meth:`MobileNetV2Space.build` uses), and a candidate is placed by
reading its ``ArchSpec`` back against the config: which stage each block belongs to (elastic depth
keeps the first blocks of a stage), at which width multiplier. The network itself is always
``nas.build_model(candidate.arch)``; the layout only says which slot's tensors each of its layers
takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nas.errors import NasError
from nas.space import MobileNetV2Space, Space, StageConfig, make_divisible
from nas.spec import ArchSpec, Conv, GlobalAvgPool, InvertedResidual, Layer, Linear


class SupernetError(NasError):
    """A supernet cannot be built for a space, a candidate is not a point of its space, or a checkpoint is unusable."""


#: A slot of the supernet: ``("stem",)``, ``("block", stage, index)``, ``("head",)`` or ``("classifier",)``.
Slot = tuple


@dataclass(frozen=True)
class BlockSlot:
    """The largest shapes of one block position (stage ``stage``, block ``index``) over the whole space."""

    stage: int
    index: int
    cin: int  # largest input channels
    hidden: int  # largest hidden width
    cout: int  # largest output channels
    kernels: tuple[int, ...]
    stride: int
    #: Spatial paths: "depthwise", "full", or "grouped-G" for each group count G of the stage.
    paths: tuple[str, ...]
    expands: bool  # some choice has an expansion conv (expansion != 1)


def path_of(block: InvertedResidual) -> str:
    """The spatial path a block's conv kind uses."""
    return f"grouped-{block.groups}" if block.conv == "grouped" else block.conv


def _paths(stage: StageConfig) -> tuple[str, ...]:
    out: list[str] = []
    for conv in stage.conv:
        out += [f"grouped-{g}" for g in stage.groups] if conv == "grouped" else [conv]
    return tuple(out)


def space_config(space: Space) -> MobileNetV2Space:
    """The space's config, or a SupernetError for a family the supernet does not cover."""
    cfg = space.config
    if not isinstance(cfg, MobileNetV2Space) or cfg.detector is not None or not cfg.classifier:
        raise SupernetError(f"space {space.name!r} ({space.source}): a supernet needs a mobilenetv2-family "
                            "classifier space (mobilenetv2, mobilenetv2-tiny, mobilenetv2-imagenet, or a file "
                            "like them); detector and lenet spaces have no supernet.")
    return cfg


@dataclass(frozen=True)
class Shapes:
    """The largest shape of every slot of a space (the supernet's tensors have these shapes)."""

    in_channels: int
    stem: int
    blocks: dict[tuple[int, int], BlockSlot]
    head_in: int
    head: int  # 0: the space has no head conv
    classes: int

    @classmethod
    def of(cls, space: Space) -> Shapes:
        cfg = space_config(space)
        div, mults = cfg.channel_divisor, cfg.width_multiplier

        def widths(c: int, floor: float = 0.0) -> set[int]:
            return {make_divisible(c * max(floor, m), div) for m in mults}

        inputs = widths(cfg.stem.channels)
        stem = max(inputs)
        blocks: dict[tuple[int, int], BlockSlot] = {}
        for i, stage in enumerate(cfg.stages):
            outputs = set().union(*(widths(w) for w in stage.width))
            for j in range(max(stage.depth)):
                cins = inputs if j == 0 else outputs
                hidden = max(int(round(c * e)) for c in cins for e in stage.expansion)
                blocks[i, j] = BlockSlot(i, j, max(cins), hidden, max(outputs), tuple(sorted(set(stage.kernel))),
                                         stage.stride if j == 0 else 1, _paths(stage),
                                         any(e != 1 for e in stage.expansion))
            if max(stage.depth) > 0:
                inputs = inputs | outputs if 0 in stage.depth else outputs
        head = max(max(widths(h, 1.0)) for h in cfg.head.channels) if cfg.head is not None else 0
        return cls(cfg.input_shape[0], stem, blocks, max(inputs), head, cfg.num_classes)


def _fits(stage: StageConfig, blocks: Sequence[Layer], widths: set[int]) -> bool:
    """Whether ``blocks`` can be stage ``stage``'s blocks (in order) at these allowed widths."""
    outs = set()
    for j, b in enumerate(blocks):
        if not isinstance(b, InvertedResidual):
            return False
        ok = (b.stride == (stage.stride if j == 0 else 1) and b.expansion in stage.expansion
              and b.kernel in stage.kernel and b.conv in stage.conv
              and (b.conv != "grouped" or b.groups in stage.groups)
              and (b.act, b.linear, b.residual) == (stage.act, stage.linear, stage.residual))
        if not ok:
            return False
        outs.add(b.out)
    return len(outs) <= 1 and outs <= widths


def _assign(cfg: MobileNetV2Space, mult: float, blocks: Sequence[Layer], i: int) -> list[int] | None:
    """Depths of stages ``i..`` that place ``blocks`` (each stage's first blocks), or None."""
    if i == len(cfg.stages):
        return [] if not blocks else None
    stage = cfg.stages[i]
    widths = {make_divisible(w * mult, cfg.channel_divisor) for w in stage.width}
    for depth in sorted(stage.depth, reverse=True):
        if depth <= len(blocks) and _fits(stage, blocks[:depth], widths):
            rest = _assign(cfg, mult, blocks[depth:], i + 1)
            if rest is not None:
                return [depth, *rest]
    return None


def layout(space: Space, arch: ArchSpec) -> list[Slot]:
    """The slot of each layer of ``arch`` (GAP: ``("pool",)``), or a SupernetError when ``arch`` is no point
    of ``space``. When two placements fit (two stages that look alike), the deeper earlier stage wins; the
    choice is a function of the arch alone, so training and evaluation place a candidate alike."""
    cfg = space_config(space)
    where = f"the candidate is not a point of space {space.name!r} ({space.source})"
    layers = list(arch.layers)
    if tuple(arch.input_shape) != tuple(cfg.input_shape) or arch.detector is not None or arch.lowrank is not None:
        raise SupernetError(f"{where}: it takes input {arch.input_shape} (the space: {tuple(cfg.input_shape)}), "
                            "or is a detector or factorized.")
    tail = 3 if cfg.head is not None else 2
    stem, blocks, end = layers[0], layers[1:len(layers) - tail], layers[len(layers) - tail:]
    ends_ok = (len(layers) > tail and isinstance(stem, Conv) and isinstance(end[-1], Linear)
               and isinstance(end[-2], GlobalAvgPool) and (cfg.head is None or isinstance(end[0], Conv)))
    if not ends_ok:
        raise SupernetError(f"{where}: it does not start with a stem conv and end with "
                            f"{'a head conv, ' if cfg.head else ''}pooling and a linear classifier.")
    for mult in cfg.width_multiplier:
        if stem.out != make_divisible(cfg.stem.channels * mult, cfg.channel_divisor):
            continue
        depths = _assign(cfg, mult, blocks, 0)
        if depths is None:
            continue
        slots: list[Slot] = [("stem",)]
        for i, depth in enumerate(depths):
            slots += [("block", i, j) for j in range(depth)]
        if cfg.head is not None:
            slots.append(("head",))
        return slots + [("pool",), ("classifier",)]
    raise SupernetError(f"{where}: its blocks fit no choice of depths, widths, expansions, kernels and conv kinds "
                        f"of the space's stages (draw candidates with that space: `nas sample {space.source}`).")
