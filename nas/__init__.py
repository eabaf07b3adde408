"""nas: joint search of compact CNN architectures and their compression settings.

The public surface is the contract in DESIGN.md: load a :class:`Space`, draw
:class:`Candidate` objects from it, build them with :func:`build_model`, and cost
them from their operator list (:func:`ops`, :func:`count`, :func:`size_bits`) and
hardware profiles (:func:`get_profile`), as they run after compression (:func:`compressed`). Heavier parts are submodules:
:mod:`nas.data`, :mod:`nas.train`, :mod:`nas.distill`, :mod:`nas.compress`.
"""

from __future__ import annotations

from nas.compressed import compressed
from nas.cost import Cost, LayerSize, count, size_bits, size_report
from nas.errors import CompressError, DataError, HardwareError, NasError, SpaceError, SpecError, TrainError
from nas.graph import Op, ops
from nas.hardware import HardwareProfile, available_profiles, get_profile
from nas.models import build_model
from nas.space import Space, builtin_spaces, load_space
from nas.spec import (
    ArchSpec,
    Candidate,
    CompressionSpec,
    Conv,
    Detector,
    Flatten,
    GlobalAvgPool,
    InvertedResidual,
    Linear,
    MaxPool,
)

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "Candidate",
    "CompressionSpec",
    "Conv",
    "CompressError",
    "Cost",
    "DataError",
    "Detector",
    "Flatten",
    "GlobalAvgPool",
    "HardwareError",
    "HardwareProfile",
    "InvertedResidual",
    "LayerSize",
    "Linear",
    "MaxPool",
    "NasError",
    "Op",
    "Space",
    "SpaceError",
    "SpecError",
    "TrainError",
    "available_profiles",
    "build_model",
    "builtin_spaces",
    "compressed",
    "count",
    "get_profile",
    "load_space",
    "ops",
    "size_bits",
    "size_report",
]
