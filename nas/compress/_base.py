"""One small shape for every compression method: apply it to a model, report the model's size.

A method is a frozen settings object. :meth:`CompressionMethod.apply` is called
once, on a trained :class:`nas.models.Network` (after training, before the
fine-tuning that recovers accuracy), and changes the model in place;
:meth:`CompressionMethod.report` is called afterwards, as often as wanted, and
measures the model as the container would store it (real bytes, not an estimate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import nn

from nas.compress.binary import Mode, quantize_weights
from nas.compress.container import ContainerReport, encode
from nas.compress.int8 import quantize_int8_weights
from nas.compress.lowrank import Method as LowRankMethod
from nas.compress.lowrank import apply_lowrank
from nas.compress.pruning import Importance, Scope, magnitude_prune, weight_layers
from nas.compress.sharing import Init, share_weights
from nas.spec import layer_index


class CompressionMethod(ABC):
    """Base of the methods; subclasses are frozen dataclasses of their settings."""

    @abstractmethod
    def apply(self, model: nn.Module) -> nn.Module:
        """Compress ``model`` (called once, on a trained model) and return the model to use.

        Most methods change ``model`` in place and return it; structured pruning returns
        a new, smaller network.
        """

    def report(self, model: nn.Module, *, huffman_coding: bool = True) -> ContainerReport:
        """Measured per-layer storage of ``model`` in the container format (called after :meth:`apply`)."""
        return encode(model, huffman_coding=huffman_coding)[1]


@dataclass(frozen=True)
class MagnitudePruning(CompressionMethod):
    """Unstructured magnitude pruning (:func:`nas.compress.pruning.magnitude_prune`); ``layers`` gives
    some layers (by :class:`~nas.spec.ArchSpec` index) their own sparsity, for every weight module in them."""

    sparsity_conv: float = 0.0
    sparsity_linear: float = 0.0
    scope: Scope = "layer"
    importance: Importance = "l1"
    layers: tuple[tuple[int, float], ...] = ()

    def apply(self, model: nn.Module) -> nn.Module:
        own = dict(self.layers)
        by_name = {name: own[i] for name, _ in weight_layers(model) if (i := layer_index(name)) in own}
        magnitude_prune(model, sparsity_conv=self.sparsity_conv, sparsity_linear=self.sparsity_linear,
                        scope=self.scope, importance=self.importance, layers=by_name)
        return model


@dataclass(frozen=True)
class WeightSharing(CompressionMethod):
    """Per-layer k-means codebooks of ``2**bits`` centroids (:func:`nas.compress.sharing.share_weights`);
    ``layers`` gives some layers (by :class:`~nas.spec.ArchSpec` index) their own bits. ``bits`` None
    shares only those layers."""

    bits: int | None = 5
    init: Init = "linear"
    seed: int = 0
    layers: tuple[tuple[int, int], ...] = ()

    def apply(self, model: nn.Module) -> nn.Module:
        own = dict(self.layers)
        by_bits: dict[int, list[str]] = {}
        for name, _ in weight_layers(model):
            bits = own.get(layer_index(name), self.bits)  # type: ignore[arg-type]
            if bits is not None:
                by_bits.setdefault(bits, []).append(name)
        for bits, names in by_bits.items():
            share_weights(model, bits, init=self.init, seed=self.seed, layers=names)
        return model


@dataclass(frozen=True)
class Quantization(CompressionMethod):
    """Binary or ternary weights with a per-layer scale (:func:`nas.compress.binary.quantize_weights`)."""

    mode: Mode = "binary"
    stochastic: bool = False
    threshold: float = 0.7

    def apply(self, model: nn.Module) -> nn.Module:
        quantize_weights(model, self.mode, stochastic=self.stochastic, threshold=self.threshold)
        return model


@dataclass(frozen=True)
class Int8Quantization(CompressionMethod):
    """Per-channel symmetric int8 weights with a straight-through gradient
    (:func:`nas.compress.int8.quantize_int8_weights`); activations get int8 when exported."""

    def apply(self, model: nn.Module) -> nn.Module:
        quantize_int8_weights(model)
        return model


@dataclass(frozen=True)
class LowRank(CompressionMethod):
    """Low-rank factorization at ``ratio`` of full rank (:func:`nas.compress.lowrank.apply_lowrank`)."""

    ratio: float = 0.5
    method: LowRankMethod = "two_component"

    def apply(self, model: nn.Module) -> nn.Module:
        apply_lowrank(model, self.ratio, self.method)
        return model
