"""The exceptions ``nas`` raises for problems a user can fix.

Every error a user can cause (a bad file, an unknown name, an impossible
combination) is a :class:`NasError`. The command line prints its message on one
line and exits with status 2; library callers catch ``NasError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a pydantic error: ``field.path: what is wrong (given: value)`` per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith(("function-", "tagged-union")))
        loc = loc or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = "" if err["type"] in ("missing", "value_error") or isinstance(given, dict) else f" (given: {given!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)
