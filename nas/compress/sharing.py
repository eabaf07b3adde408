"""Deep Compression weight sharing: per-layer k-means codebooks with centroid fine-tuning.

Each conv/linear weight tensor is clustered (scikit-learn ``KMeans``, 1-d) into
``2**bits`` centroids; the layer then stores a ``bits``-bit index per kept weight
plus the codebook. The layer's ``weight`` becomes a
:mod:`torch.nn.utils.parametrize` parametrization :class:`SharedWeight` computing
``centroids[codes]`` (zero where pruned). Autograd through that gather adds up the
gradients of all weights of a cluster, Deep Compression's centroid update
``dL/dC_k = sum_{i in cluster k} dL/dW_i``, which :class:`SharedWeight` divides by the
cluster's size (the mean: see there why); fine-tuning trains the centroids (and
biases) while the assignment stays fixed.

Initialization (Han et al. 2016, section 3.1): ``linear`` spaces centroids evenly
between the smallest and largest kept weight (best in the paper: it keeps the
rare large weights, which matter most); ``density`` puts them at evenly spaced
quantiles; ``random`` picks kept weights at random (Forgy).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from nas.codebooks import Init, kmeans_codebook
from nas.compress.pruning import weight_layers
from nas.errors import CompressError


class SharedWeight(nn.Module):
    """Parametrization ``weight = centroids[codes]``; ``codes == -1`` marks pruned weights (zero).

    ``centroids`` is the trainable codebook (``2**bits`` float32 values); ``codes``
    is a buffer of cluster indices with the weight's shape. The original weight is
    ignored (and frozen) once the layer is shared.

    The centroid gradient keeps Deep Compression's direction (the sum of its members'
    gradients) but is divided by the member count, i.e. each centroid moves as the mean of
    its weights would. With the plain sum, a centroid's step grows with its cluster: a
    2-bit codebook of a 64x1024 layer (16,000 weights per centroid) took steps 16,000
    times a weight's, and one recovery epoch at ``nas finetune``'s learning rate left a
    digits MLP at chance (94.4% -> 9.8%). With the mean, one learning rate suits every
    layer and bit width, as for the dense weights.
    """

    def __init__(self, centroids: torch.Tensor, codes: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.centroids = nn.Parameter(centroids.detach().clone().float())
        self.register_buffer("codes", codes.detach().clone().long())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        codes: torch.Tensor = self.codes
        centroids = self.centroids
        if centroids.requires_grad and torch.is_grad_enabled():
            # same values; the gradient reaching the centroids is divided by each cluster's size
            members = torch.bincount(codes[codes >= 0], minlength=centroids.numel()).clamp(min=1)
            fixed = centroids.detach()
            centroids = fixed + (centroids - fixed) / members.to(centroids.dtype)
        shared = centroids[codes.clamp(min=0)]
        return torch.where(codes >= 0, shared, shared.new_zeros(()))


def _take_mask(module: nn.Module) -> torch.Tensor | None:
    """The keep-mask of a pruned layer, folding torch's pruning container into a plain weight."""
    if prune.is_pruned(module) and hasattr(module, "weight_mask"):
        mask = module.weight_mask.detach().bool().clone()
        prune.remove(module, "weight")
        return mask
    return None


def quantizable_layers(model: nn.Module, layers: list[str] | None, method: str
                       ) -> Iterator[tuple[str, nn.Module, torch.Tensor | None]]:
    """(name, module, keep-mask) of every conv/linear layer (or those in ``layers``) that a
    quantizer may take: one quantizer per layer, a pruning mask folded into a plain weight."""
    for name, module in weight_layers(model):
        if layers is not None and name not in layers:
            continue
        if parametrize.is_parametrized(module, "weight"):
            raise CompressError(f"{method}: layer {name!r} is already quantized; apply one quantizer only.")
        yield name, module, _take_mask(module)


def share_weights(model: nn.Module, bits: int, *, init: Init = "linear", seed: int = 0,
                  layers: list[str] | None = None) -> dict[str, SharedWeight]:
    """Replace each conv/linear weight (or those in ``layers``) by a k-means codebook, in place.

    Pruned weights (a :mod:`torch.nn.utils.prune` mask, see :mod:`nas.compress.pruning`)
    stay zero and are not clustered. Returns the parametrization of each layer.
    """
    out: dict[str, SharedWeight] = {}
    for name, module, mask in quantizable_layers(model, layers, "weight sharing"):
        weight = module.weight.detach()
        keep = mask if mask is not None else torch.ones_like(weight, dtype=torch.bool)
        centroids, kept_codes = kmeans_codebook(weight[keep].cpu().numpy(), bits, init, seed=seed)
        codes = torch.full(weight.shape, -1, dtype=torch.long)
        codes[keep] = torch.from_numpy(kept_codes)
        shared = SharedWeight(torch.from_numpy(centroids), codes, bits)
        parametrize.register_parametrization(module, "weight", shared)
        module.parametrizations.weight.original.requires_grad_(False)
        out[name] = shared
    return out
