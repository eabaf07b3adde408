"""The exceptions ``nas`` raises for problems a user can fix.

Every error a user can cause (a bad file, an unknown name, an impossible
combination) is a :class:`NasError`. The command line prints its message on one
line and exits with status 2; library callers catch ``NasError``.
"""

from __future__ import annotations


class NasError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class SpaceError(NasError):
    """A search-space file is missing, malformed or describes impossible networks."""


class SpecError(NasError):
    """An ``ArchSpec`` / ``CompressionSpec`` / ``Candidate`` is invalid or cannot be decoded."""


class DataError(NasError):
    """A dataset is unknown, missing from disk or malformed; the message says where it looked."""


class TrainError(NasError):
    """Training, distillation or a checkpoint was given settings or files it cannot use."""


class CompressError(NasError):
    """A compression setting cannot be applied, or a compressed container is truncated, altered or unreadable."""


class HardwareError(NasError):
    """A hardware profile is unknown, malformed, or lacks operators a candidate needs."""
