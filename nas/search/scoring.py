"""Cheap scoring: a candidate's costs and constraint violations before any training, in microseconds.

Pure functions of a :class:`~nas.search.setup.Setup` and a candidate; each cost is computed as the
objective registry (:mod:`nas.objectives`) says.
"""

from __future__ import annotations

from collections.abc import Iterable

from nas.errors import HardwareError
from nas.experiment import Experiment
from nas.objectives import KINDS
from nas.search.setup import Setup
from nas.spec import Candidate, InvertedResidual

#: Random candidates drawn (seeds 0..N-1) to fix each cost's hypervolume reference point.
REFERENCE_SAMPLES = 256


def cheap_costs(setup: Setup, candidate: Candidate, only: Iterable[str] | None = None) -> dict[str, float]:
    """Every cheap cost (``latency_ms`` per profile as ``latency_ms:<profile>``, and on the first profile as
    ``latency_ms``), or those named in ``only`` plus MAdds and params (the size estimate is the slow one).
    The latency of a profile that no objective or constraint uses is left out when it cannot price the candidate."""
    wanted = None if only is None else set(only)
    out: dict[str, float] = {}
    for kind in KINDS.values():
        if kind.compute is None:
            continue
        if kind.per_profile:
            for name, profile in setup.profiles.items():
                key = f"{kind.name}:{name}"
                if wanted is None or key in wanted or (kind.name in wanted and name == setup.first_profile):
                    try:
                        out[key] = kind.compute(candidate, profile)
                    except HardwareError:
                        if name in setup.experiment.priced_profiles:
                            raise
                        # a profile no objective or constraint uses, which cannot price this candidate
                        # (never checked for coverage): its latency is left empty in trials.csv
            if f"{kind.name}:{setup.first_profile}" in out:
                out[kind.name] = out[f"{kind.name}:{setup.first_profile}"]
        elif wanted is None or kind.name in wanted or kind.name in ("madds", "params"):
            out[kind.name] = kind.compute(candidate, None)
    return out


def cheap_violations(experiment: Experiment, costs: dict[str, float]) -> dict[str, float]:
    """Each constraint known before training, as Optuna's violation (<= 0 holds), in the file's order."""
    return {c.name: c.violation(costs[c.name]) for c in experiment.constraints if c.cheap}


def late_violations(experiment: Experiment, accuracy: float) -> dict[str, float]:
    """The constraints only the evaluator can settle (accuracy), as violations; empty when there are none."""
    return {c.name: c.violation(accuracy) for c in experiment.constraints if not c.cheap}


def objective_values(experiment: Experiment, costs: dict[str, float], accuracy: float) -> tuple[float, ...]:
    """The study's values of a trial, in the order of the experiment's objectives."""
    values = {**costs, "accuracy": accuracy}
    return tuple(values[o.name] for o in experiment.objectives)


def reference_point(setup: Setup) -> dict[str, float]:
    """Each objective's fixed hypervolume reference: accuracy 0; a cost its constraint limit if it has
    one, else 1.1x its largest value over the space's first REFERENCE_SAMPLES random candidates."""
    experiment = setup.experiment
    limits = {c.name: c.limit for c in experiment.constraints if c.op == "<="}
    needed = {o.name for o in experiment.objectives if o.kind != "accuracy" and o.name not in limits}
    worst: dict[str, float] = {}
    for seed in range(REFERENCE_SAMPLES if needed else 0):
        try:
            costs = cheap_costs(setup, setup.space.random(seed), needed)
        except HardwareError:
            continue
        for k, v in costs.items():
            worst[k] = max(worst.get(k, 0.0), v)
    out = {}
    for o in experiment.objectives:
        if o.kind == "accuracy":
            out[o.name] = 0.0
        elif o.name in limits:
            out[o.name] = float(limits[o.name])
        else:
            out[o.name] = float(f"{1.1 * worst.get(o.name, 1.0):.4g}")
    return out


def short_label(candidate: Candidate) -> str:
    """A few characters that tell candidates apart on a plot: blocks, kernels, compression."""
    arch, comp = candidate.arch, candidate.compression
    blocks = [layer for layer in arch.layers if isinstance(layer, InvertedResidual)]
    kernels = "/".join(str(k) for k in sorted({b.kernel for b in blocks}))
    parts = [f"{len(blocks)}blk k{kernels}" if blocks else f"{len(arch.layers)} layers"]
    if comp.sparsity_conv or comp.sparsity_linear:
        parts.append(f"p{comp.sparsity_conv:.2f}/{comp.sparsity_linear:.2f}".replace("0.", "."))
    if comp.quantization != "none":
        parts.append(comp.quantization[:3])
    elif comp.codebook_bits is not None:
        parts.append(f"{comp.codebook_bits}b")
    if comp.lowrank_ratio is not None:
        parts.append(f"r{comp.lowrank_ratio:g}")
    return " ".join(parts)
