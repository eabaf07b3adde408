"""Apply a whole :class:`~nas.spec.CompressionSpec` to a trained model, stage by stage."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nas.compress._base import (CompressionMethod, Int8Quantization, LowRank, MagnitudePruning, Quantization,
                               WeightSharing)
from nas.compress.lowrank import Method as LowRankMethod
from nas.compress.pruning import Scope
from nas.compress.sharing import Init
from nas.compress.structured import ChannelPruning
from nas.device import model_device
from nas.errors import CompressError
from nas.spec import ArchSpec, CompressionSpec

#: Called after each stage with the model and the stage name ("channels", "lowrank", "prune", "quantize"),
#: e.g. to fine-tune it; the model is already compressed by that stage.
Retrain = Callable[[nn.Module, str], object]


@dataclass(frozen=True)
class StageOptions:
    """How the stages work, beside what the spec says to do (``nas compress``/``nas finetune`` options):
    pruning ``scope`` (each layer to its rate, or all conv / all linear weights ranked together), the
    k-means centroid ``init`` (Deep Compression's Figure 8) and the factorization ``lowrank_method``
    (Jaderberg's two components, or CP). The cost model prices the defaults: CP factors have other
    shapes, and density/random centroids other code frequencies, so their files differ from
    :func:`nas.size_bits`'s estimate (the container's report is measured)."""

    scope: Scope = "layer"
    init: Init = "linear"
    lowrank_method: LowRankMethod = "two_component"


def stages(spec: CompressionSpec, options: StageOptions | None = None, *, seed: int = 0,
           data: torch.Tensor | None = None, device: torch.device | None = None
           ) -> list[tuple[str, CompressionMethod]]:
    """The methods a spec asks for: structured pruning (it sets the widths the rest sees), then
    Deep Compression's order: factorize, prune, quantize. ``data``: training inputs for the
    ``activation`` channel importance, streamed through the model on ``device``."""
    o = options or StageOptions()
    scope, init, lowrank_method = o.scope, o.init, o.lowrank_method
    out: list[tuple[str, CompressionMethod]] = []
    if spec.channel_ratio > 0:
        out.append(("channels", ChannelPruning(spec.channel_ratio, spec.channel_importance, data, device)))
    if spec.lowrank_ratio is not None:
        out.append(("lowrank", LowRank(spec.lowrank_ratio, lowrank_method)))
    if spec.prunes:
        own = tuple((i, o.sparsity) for i, o in spec.layers if o.sparsity is not None)
        out.append(("prune", MagnitudePruning(spec.sparsity_conv, spec.sparsity_linear, scope, layers=own)))
    if spec.quantization == "int8":
        out.append(("quantize", Int8Quantization()))
    elif spec.quantization != "none":
        out.append(("quantize", Quantization(spec.quantization, stochastic=spec.binary_rounding == "stochastic")))
    elif spec.shares:
        own_bits = tuple((i, o.bits) for i, o in spec.layers if o.bits is not None)
        out.append(("quantize", WeightSharing(spec.codebook_bits, init, seed, layers=own_bits)))
    return out


def apply_compression(model: nn.Module, compression: CompressionSpec, *, retrain: Retrain | None = None,
                      options: StageOptions | None = None, seed: int = 0, inplace: bool = False,
                      data: torch.Tensor | None = None) -> nn.Module:
    """Compress a trained ``model`` as ``compression`` says; returns the compressed model.

    Structured pruning runs first (it returns a new, narrower network; ``data``, a batch
    of training inputs, is what its ``activation`` importance scores), then Deep
    Compression's order (low-rank, pruning, then k-means codebooks
    or binary/ternary weights), calling ``retrain(model, stage)`` after each one so the
    caller can fine-tune (pruning masks and codebook assignments stay fixed while it
    trains); ``options`` say how the stages work (:class:`StageOptions`). The model is copied first unless ``inplace``. Save the result with
    :func:`nas.compress.save`; its file size is what :func:`nas.size_bits` estimates
    for the same arch and spec (see :mod:`nas.compress.container` for the tolerance).

    On a GPU model the stages' weight work (SVD, k-means, masks) runs on the CPU, the activation
    importance's pass over ``data`` and ``retrain`` on the model's device, and the result comes back
    on that device.
    """
    if not isinstance(compression, CompressionSpec):
        raise CompressError(f"apply_compression needs a CompressionSpec, but got {type(compression).__name__}.")
    arch = getattr(model, "spec", None)
    if compression.layers and isinstance(arch, ArchSpec):
        compression.check_layers(arch)
    if not inplace:
        model = copy.deepcopy(model)
    device = model_device(model)
    for name, method in stages(compression, options, seed=seed, data=data, device=device):
        model = method.apply(model.cpu()).to(device)
        if retrain is not None:
            retrain(model, name)
    return model.to(device)
