"""What a search can optimise: one registry that experiment files, the search, the run folder,
the pictures and the report all read.

An objective's *kind* (``accuracy``, ``latency_ms``, ``madds``, ``params``, ``size_kb``) says
its direction, its label and unit, and how it is computed: accuracy by the search's evaluator
(training), every other kind from the candidate alone, in microseconds (a *cheap cost*), of the
network as it runs after its compression (:func:`nas.compressed`).
An :class:`Objective` is one column of a study: a kind, on a hardware profile for latency
(``latency_ms:<profile>`` when several profiles are objectives), with the reference point of
the run's hypervolume.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.hardware import HardwareProfile
    from nas.spec import Candidate


def _madds(candidate: Candidate, profile: HardwareProfile | None) -> float:
    from nas.compressed import running
    from nas.cost import count

    return float(count(running(candidate)).madds)


def _params(candidate: Candidate, profile: HardwareProfile | None) -> float:
    from nas.compressed import running
    from nas.cost import count

    return float(count(running(candidate)).params)


def _size_kb(candidate: Candidate, profile: HardwareProfile | None) -> float:
    from nas.cost import size_bits

    return size_bits(candidate.arch, candidate.compression) / 8000.0


def _latency_ms(candidate: Candidate, profile: HardwareProfile | None) -> float:
    if profile is None:
        raise ValueError("latency needs a hardware profile")
    from nas.compressed import running

    return float(profile.latency_ms(running(candidate)))


@dataclass(frozen=True)
class ObjectiveKind:
    """One kind of objective. ``compute(candidate, profile)`` gives a cheap cost; None for accuracy,
    which only an evaluator knows."""

    name: str
    direction: str  # "maximize" or "minimize"
    label: str
    unit: str
    compute: Callable[[Candidate, HardwareProfile | None], float] | None = None
    per_profile: bool = False

    @property
    def cheap(self) -> bool:
        return self.compute is not None


#: Every objective kind, in the order the trials table lists the cheap costs.
KINDS: dict[str, ObjectiveKind] = {k.name: k for k in (
    ObjectiveKind("accuracy", "maximize", "validation accuracy", ""),
    ObjectiveKind("madds", "minimize", "multiply-adds", "MAdds", _madds),
    ObjectiveKind("params", "minimize", "parameters", "", _params),
    ObjectiveKind("size_kb", "minimize", "compressed size", "KB", _size_kb),
    ObjectiveKind("latency_ms", "minimize", "latency", "ms", _latency_ms, per_profile=True),
)}
#: The cheap costs every trial records, objectives or not (columns of trials.csv).
CHEAP = tuple(name for name, k in KINDS.items() if k.cheap)
#: Units of plain counts, shown scaled (thousands, millions) instead.
COUNT_UNITS = ("", "MAdds", "madds", "params", "parameters")


def kind_of(name: str) -> ObjectiveKind:
    """The kind of an objective or constraint name (``latency_ms:pi4`` is ``latency_ms``)."""
    base = name.split(":", 1)[0]
    if base not in KINDS:
        raise KeyError(f"unknown objective {name!r}; choose from {sorted(KINDS)}")
    return KINDS[base]


@dataclass(frozen=True)
class Objective:
    """One column the study optimises, as ``run.json`` describes it (docs/run-folder.md)."""

    name: str
    direction: str
    label: str
    unit: str
    profile: str | None = None
    reference: float | None = None

    @classmethod
    def of(cls, name: str, profile: str | None = None, reference: float | None = None) -> Objective:
        """The objective ``name`` (a kind, or ``latency_ms:<profile>``) with the registry's text."""
        k = kind_of(name)
        label = f"{k.label} on {profile}" if k.per_profile and profile else k.label
        return cls(name, k.direction, label, k.unit, profile, reference)

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "direction": self.direction, "label": self.label,
                               "unit": self.unit, "reference": self.reference}
        if self.profile is not None:
            out["profile"] = self.profile
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objective:
        """Read a run.json entry; what it leaves out comes from the registry (an unknown name keeps itself
        as label, and is minimised)."""
        name = str(d.get("name", ""))
        base = KINDS.get(name.split(":", 1)[0])
        label, unit = (base.label, base.unit) if base else (name, "")
        direction = d.get("direction") or (base.direction if base else "minimize")
        ref = d.get("reference")
        return cls(name, str(direction), str(d.get("label") or label), str(d.get("unit", unit) or ""),
                   d.get("profile"), float(ref) if ref is not None else None)

    def display(self, values: Any) -> tuple[float, str]:
        """(factor, axis label) that shows this objective readably: accuracy in %, counts in k or M."""
        if self.kind == "accuracy" and not self.unit:
            return 100.0, f"{self.label} (%)"
        if self.kind in ("madds", "params") and self.unit in COUNT_UNITS:
            import numpy as np

            finite = np.asarray(values, dtype=float)
            top = float(np.nanmax(np.abs(finite))) if finite.size and np.isfinite(finite).any() else 0.0
            for factor, prefix in ((1e-6, "millions"), (1e-3, "thousands")):
                if top >= 1 / factor:
                    return factor, f"{self.label} ({prefix})"
            return 1.0, self.label
        return 1.0, f"{self.label} ({self.unit})" if self.unit else self.label

    def short(self, value: float) -> str:
        """The value as a table or key shows it: ``97.2%``, ``0.83 ms``, ``1.2M``."""
        if not math.isfinite(value):
            return "-"
        if self.kind == "accuracy" and not self.unit:
            return f"{100 * value:.1f}%"
        if self.kind in ("madds", "params") and self.unit in COUNT_UNITS:
            unit = f" {self.unit}" if self.unit else ""
            for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
                if abs(value) >= factor:
                    return f"{value / factor:.3g}{prefix}{unit}"
            return f"{value:.0f}{unit}"
        text = f"{value:#.3g}".rstrip(".") if abs(value) < 1e3 else f"{value:.0f}"
        return f"{text} {self.unit}".strip()

    @property
    def short_name(self) -> str:
        """``latency`` for ``latency_ms``, ``latency on pi4`` for ``latency_ms:pi4``, ``size`` for ``size_kb``."""
        base, _, profile = self.name.partition(":")
        base = base.removesuffix("_ms").removesuffix("_kb")
        return f"{base} on {profile}" if profile else base


@dataclass(frozen=True)
class Constraint:
    """A hard limit on an objective name: ``<=`` for costs, ``>=`` for accuracy."""

    name: str
    op: str  # "<=" or ">="
    limit: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 holds."""
        return value - self.limit if self.op == "<=" else self.limit - value

    @property
    def cheap(self) -> bool:
        """Known before any training."""
        return kind_of(self.name).cheap

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "limit": self.limit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Constraint:
        return cls(str(d["name"]), str(d.get("op", "<=")), float(d["limit"]))


__all__ = ["CHEAP", "KINDS", "Constraint", "Objective", "ObjectiveKind", "kind_of"]
