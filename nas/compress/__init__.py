"""Compression methods that produce real, smaller files (Deep Compression and friends).

- :mod:`~nas.compress.pruning`: unstructured magnitude pruning, schedules, lottery tickets.
- :mod:`~nas.compress.structured`: channel/filter and neuron pruning that makes a smaller dense network.
- :mod:`~nas.compress.sharing`: k-means weight sharing with centroid fine-tuning.
- :mod:`~nas.compress.binary`: binary/ternary weights with the Htanh straight-through estimator.
- :mod:`~nas.compress.lowrank`: SVD, two-component and CP factorization.
- :mod:`~nas.compress.int8`: per-channel int8 weights while training; float32 and int8 ONNX files (onnxruntime).
- :mod:`~nas.compress.huffman`: canonical Huffman coding.
- :mod:`~nas.compress.container`: the binary file format, ``save``/``load``.

:func:`apply_compression` applies a whole :class:`~nas.spec.CompressionSpec`;
:func:`~nas.compress.recovery.compress_with_recovery` does so with a recovery fine-tune
after each stage.
"""

from __future__ import annotations

from nas.compress._apply import StageOptions, apply_compression, stages
from nas.compress._base import (CompressionMethod, Int8Quantization, LowRank, MagnitudePruning, Quantization,
                               WeightSharing)
from nas.compress.binary import QuantizedWeight, hard_sigmoid, htanh, quantize_weights, straight_through
from nas.compress.container import ContainerReport, LayerStorage, decode, encode, load, save
from nas.compress.int8 import (Int8Weight, OnnxModel, export_onnx, int8_levels, quantize_int8,
                               quantize_int8_weights, run_onnx)
from nas.compress.lowrank import CPConv, LowRankLinear, TwoComponentConv, apply_lowrank, rank_for
from nas.compress.pruning import PruneSchedule, iterative_prune, magnitude_prune, make_permanent, masks, rewind
from nas.compress.recovery import compress_with_recovery
from nas.compress.sharing import SharedWeight, kmeans_codebook, share_weights
from nas.compress.structured import (ActivationTally, ChannelPruning, activation_tallies, channel_importance,
                                    prune_channels)

__all__ = [
    "ActivationTally",
    "CPConv",
    "ChannelPruning",
    "CompressionMethod",
    "ContainerReport",
    "Int8Quantization",
    "Int8Weight",
    "LayerStorage",
    "LowRank",
    "LowRankLinear",
    "MagnitudePruning",
    "OnnxModel",
    "PruneSchedule",
    "Quantization",
    "QuantizedWeight",
    "SharedWeight",
    "StageOptions",
    "TwoComponentConv",
    "WeightSharing",
    "activation_tallies",
    "apply_compression",
    "apply_lowrank",
    "channel_importance",
    "compress_with_recovery",
    "decode",
    "encode",
    "export_onnx",
    "hard_sigmoid",
    "htanh",
    "int8_levels",
    "iterative_prune",
    "kmeans_codebook",
    "load",
    "magnitude_prune",
    "make_permanent",
    "masks",
    "prune_channels",
    "quantize_int8",
    "quantize_int8_weights",
    "quantize_weights",
    "rank_for",
    "rewind",
    "run_onnx",
    "save",
    "share_weights",
    "stages",
    "straight_through",
]
