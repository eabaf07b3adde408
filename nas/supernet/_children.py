"""The children a supernet step trains (largest, smallest, random), and compression applied to a child's tensors.

Children are drawn with the space's own ``build`` (the YAML stays the only definition): the largest
takes the biggest option of every size decision (width multiplier, depth, width, expansion, kernel,
head), the smallest the smallest; random ones come from :meth:`Space.random`. The conv kind is no size
the sandwich bounds: both take the kind a stage lists first (depthwise in every shipped space; for
grouped, the fewest groups in the largest and the most in the smallest). A teacher with full 5x5
convs would cost ~30x a depthwise one per step on mobilenetv2-tiny, for a kind the random children
train anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nas.compress import Int8Weight, QuantizedWeight
from nas.space import Space
from nas.spec import ArchSpec, CompressionSpec, layer_index
from nas.supernet._layout import space_config

def extreme(space: Space, largest: bool) -> ArchSpec:
    """The largest (``largest=True``) or smallest network of ``space``."""

    def choose(name: str, options: Sequence[Any]) -> Any:
        if name.endswith(".conv"):
            return options[0]
        if name.endswith(".groups"):  # fewer groups: more weights
            return min(options) if largest else max(options)
        return max(options) if largest else min(options)

    return space_config(space).build(choose)


def _keep(weight: torch.Tensor, sparsity: float) -> torch.Tensor | None:
    """Magnitude pruning's keep-mask for one layer (as :func:`nas.compress.magnitude_prune`, scope layer)."""
    k = round(sparsity * weight.numel())
    if k == 0:
        return None
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    keep[torch.topk(weight.detach().abs().flatten(), k, largest=False).indices] = False
    return keep.view_as(weight)


def _codebook(weight: torch.Tensor, bits: int, keep: torch.Tensor | None) -> torch.Tensor:
    """``2**bits`` levels spaced evenly over the kept weights' range (Deep Compression's linear init, the
    k-means start), straight through: the forward sees the levels, the backward is the identity. k-means
    itself is run only on an extracted child (:func:`nas.compress.apply_compression`); per step it would
    cost more than the step."""
    w = weight.detach()
    kept = w[keep] if keep is not None else w.flatten()
    lo, hi = kept.min(), kept.max()
    levels = 2**bits - 1
    step = torch.where(hi > lo, (hi - lo) / levels, w.new_ones(()))
    q = lo + torch.round((w - lo) / step).clamp(0, levels) * step
    out = q + (weight - w)  # exactly q forward (x - x is 0), the identity backward
    return out * keep if keep is not None else out


def compressed_tensors(tensors: dict[str, torch.Tensor], compression: CompressionSpec) -> dict[str, torch.Tensor]:
    """A child's tensors with the weight-level part of ``compression`` applied through straight-through
    quantizers: magnitude masks, binary/ternary (:class:`nas.compress.QuantizedWeight`), int8
    (:class:`nas.compress.Int8Weight`) and codebooks. Low rank and channel pruning change the network's
    structure, so training does not simulate them; the evaluator applies them to the extracted child."""
    out = dict(tensors)
    for name, w in tensors.items():
        if not name.endswith(".weight") or w.dim() not in (2, 4):
            continue
        index = layer_index(name)  # a layer's own sparsity and bits (compression.layers) where it has them
        keep = _keep(w, compression.sparsity_of(index, "conv" if w.dim() == 4 else "linear"))
        bits = compression.bits_of(index)
        if compression.quantization in ("binary", "ternary"):
            out[name] = QuantizedWeight(compression.quantization, keep)(w)
        elif compression.quantization == "int8":
            out[name] = Int8Weight(keep)(w)
        elif bits is not None:
            out[name] = _codebook(w, bits, keep)
        elif keep is not None:
            out[name] = w * keep
    return out
