"""The network as it will run after its compression: one :class:`~nas.spec.ArchSpec` every cost reads.

A :class:`~nas.spec.CompressionSpec` changes what runs, not only what is stored:
structured pruning removes channels, low rank replaces a layer by two thinner
ones, int8 changes the arithmetic. :func:`compressed` folds those into the
architecture, so MAdds, parameters, every profile's latency and the storage
estimate are functions of the network the device executes, and
``nas.build_model(compressed(arch, compression))`` has the structure of the
compressed model (its module names and shapes; the tests hold fvcore to it).

Sparsity, codebooks and binary/ternary codes change the stored bits only (the
dense kernels still run), so they stay in the :class:`CompressionSpec` that
:func:`nas.size_bits` reads alongside.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from nas.channels import pruned_arch
from nas.spec import ArchSpec, Candidate, CompressionSpec


@lru_cache(maxsize=256)  # every cost of one candidate asks for it (count, latency per profile, size): once
def compressed(arch: ArchSpec, compression: CompressionSpec) -> ArchSpec:
    """``arch`` as it runs under ``compression``: channels pruned, layers factorized, int8 arithmetic.

    Structured pruning first (it chooses the widths the factorization then sees),
    as the compression stages run. The identity when ``compression`` leaves all three off.
    """
    if compression.channel_ratio > 0:
        arch = pruned_arch(arch, compression.channel_ratio)
    changes = {}
    if compression.lowrank_ratio is not None:
        changes["lowrank"] = compression.lowrank_ratio
    if compression.quantization == "int8":
        changes["precision"] = "int8"
    return dataclasses.replace(arch, **changes) if changes else arch


def running(candidate: Candidate) -> ArchSpec:
    """:func:`compressed` of a candidate's architecture and compression."""
    return compressed(candidate.arch, candidate.compression)
