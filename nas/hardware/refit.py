"""Refit a latency table measured on another machine to this one from a few whole-network timings.

The few-shot idea of HELP (Lee et al., NeurIPS 2021: a latency model adapted to a new device from a
handful of measured networks, on features that do not depend on the device), with a linear model
small enough to fit on 20 networks and to defend. Per network, from the table and the op list:

- ``table_ms``: the table's time of its layers summed (the other machine's view of the network),
- ``madds``: its multiply-adds (millions): compute throughput differs between CPUs (AVX-512 or not),
- ``layers``: its layer count: the cost of calling one layer module differs too;

and the model is ``measured = intercept + scale * table_ms [+ per_madd * madds + per_layer * layers]``,
fitted by least squares of the *relative* error (the goal is a share within +-10%). The model with
the extra terms and the one with the scale alone are both fitted; the one with the smaller
leave-one-out error is kept (measured on the 2-core AMD EPYC this was written on, from the Intel
Xeon table over 30 mobilenetv2 networks: 4.5% against 6.9% mean error; a scale per layer kind did no
better than one scale, 6.7%). Every term is a sum over layers, so the refitted table is a copy whose
every entry is ``scale * ms + per_madd * madds + per_layer`` (at least :data:`FLOOR` of the scaled
time), with the intercept as its calibration at the space's input shape: predictions then go through
the ordinary path.

Networks are timed by the CPU time of their one torch thread (:data:`nas.hardware.measure.CLOCKS`),
the minimum over interleaved rounds: on a machine shared with other jobs the wall clock's minimum
still carries the time the process waited for a core (two measurements of the same network differed
by 10-50% on that machine, the CPU time by about 2%).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nas.errors import HardwareError
from nas.graph import ops
from nas.hardware.lut import Adaptation, Calibration, LutProfile, layer_groups, shape_key
from nas.hardware.machine import this_machine
from nas.hardware.measure import _networks, measure_networks
from nas.space import Space
from nas.spec import ArchSpec

#: At most this many networks, and this long in all (the issue's few-shot budget); at least enough to
#: leave two networks over for the scale and intercept.
MIN_NETWORKS = 4
MAX_NETWORKS = 20
MAX_SECONDS = 120.0
#: Seeds of the networks measured (validation and the benchmark's held-out networks use others).
SEED = 30_000
#: An entry keeps at least this share of its scaled time (a negative per-layer term cannot make it vanish).
FLOOR = 0.05
#: The models tried, by the features they use beyond the intercept.
MODELS = {"scale": ("table_ms",), "scale + per MAdd + per layer": ("table_ms", "madds", "layers")}


def features(profile: LutProfile, arch: ArchSpec) -> dict[str, float]:
    """``table_ms``, ``madds`` (millions) and ``layers`` of one network, summed over its priced layers."""
    groups = layer_groups(ops(arch))
    layers = profile.predict(arch, interpolate=True).layers
    return {"table_ms": sum(ms for _, ms in layers), "madds": sum(o.madds for n, _ in layers for o in groups[n]) / 1e6,
            "layers": float(len(layers))}


@dataclass(frozen=True)
class Fit:
    model: str
    intercept_ms: float
    terms: dict[str, float]  # feature -> coefficient
    loo_error: dict[str, float]  # model -> leave-one-out mean |relative error|


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients minimising sum(((x @ c) - y) / y)^2."""
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    return np.asarray(coef)


def fit(rows: list[dict[str, float]], measured: list[float]) -> Fit:
    """The model of :data:`MODELS` with the smallest leave-one-out mean |relative error| (a model with more
    terms than networks to spare is not tried; the first needs :data:`MIN_NETWORKS`)."""
    y = np.asarray(measured, dtype=float)
    loo: dict[str, float] = {}
    for model, names in MODELS.items():
        x = np.array([[1.0, *(r[n] for n in names)] for r in rows])
        if len(y) < x.shape[1] + 2:
            continue
        errors = [abs(x[i] @ _solve(x[np.arange(len(y)) != i], y[np.arange(len(y)) != i]) - y[i]) / y[i]
                  for i in range(len(y))]
        loo[model] = float(np.mean(errors))
    best = min(loo, key=lambda m: loo[m])
    names = MODELS[best]
    coef = _solve(np.array([[1.0, *(r[n] for n in names)] for r in rows]), y)
    return Fit(best, float(coef[0]), dict(zip(names, map(float, coef[1:]))), loo)


def refit_ms(ms: float, madds: int, result: Fit) -> float:
    """One entry's time on this machine."""
    t = result.terms
    scaled = t["table_ms"] * ms
    return max(FLOOR * scaled, scaled + t.get("madds", 0.0) * madds / 1e6 + t.get("layers", 0.0))


def target_path(profile: LutProfile, folder: Path) -> Path:
    """Where the refitted table goes: ``NAME-here.json`` in ``folder``."""
    return folder / f"{Path(profile.path).stem if not profile.path.startswith('<') else profile.name}-here.json"


def calibrate_here(profile: LutProfile, space: Space, out: Path, *, n: int = 16, seconds: float = MAX_SECONDS,
                   rounds: int = 60, log: Callable[[str], None] = print) -> tuple[LutProfile, Fit]:
    """Measure ``n`` (at most :data:`MAX_NETWORKS`) random networks of ``space`` here, in at most ``seconds``
    (:data:`MAX_SECONDS` at most) of timing, fit the correction and write the refitted copy of ``profile``
    to ``out`` (float32 entries only: the table's int8 section is another runtime's)."""
    if not MIN_NETWORKS <= n <= MAX_NETWORKS:
        raise HardwareError(f"--here fits on {MIN_NETWORKS} to {MAX_NETWORKS} networks, but got -n {n}.")
    if not 0 < seconds <= MAX_SECONDS:
        raise HardwareError(f"--here measures for at most {MAX_SECONDS:g} s, but got {seconds:g}.")
    start = time.monotonic()
    table, archs, how = _networks(profile, space, n, SEED, "float32")
    if how["threads"] != 1:
        raise HardwareError(f"{profile.path} was measured with {how['threads']} threads; --here times networks "
                            f"by the CPU time of one thread (what a shared machine's neighbours do not inflate), "
                            f"so it refits single-thread tables only.")
    rows = [features(table, a) for a in archs]
    log(f"{profile.name}: timing {n} networks of {space.name!r} on {this_machine().cpu} (at most {seconds:.0f} s)")
    measured = measure_networks(archs, rounds=rounds, progress="calibrate --here", until=start + seconds,
                                clock="thread", **how)
    result = fit(rows, measured)
    d = profile.data
    entries = {key: e.model_copy(update={"min_ms": refit_ms(e.min_ms, e.madds, result),
                                         "median_ms": refit_ms(e.median_ms, e.madds, result),
                                         "mean_ms": refit_ms(e.mean_ms, e.madds, result),
                                         "std_ms": e.std_ms * result.terms["table_ms"]})
               for key, e in d.entries.items()}
    shape = shape_key(space.input_shape)
    adapted = Adaptation(from_device=d.device, from_file=profile.path, model=result.model, terms=result.terms,
                         intercept_ms=result.intercept_ms, networks=n, seeds=[SEED, SEED + n - 1], space=space.name,
                         input=shape, loo_error=result.loo_error, seconds=round(time.monotonic() - start, 1))
    here = this_machine()
    target = target_path(profile, out)
    data = d.model_copy(update={
        "name": target.stem, "device": here.cpu, "machine": here, "entries": entries, "precisions": {},
        "adapted": adapted, "date": datetime.now(timezone.utc).date().isoformat(),
        "calibrations": {shape: Calibration(intercept_ms=result.intercept_ms, slope=1.0, networks=n, space=space.name,
                                            fit="intercept of the machine refit (nas hardware calibrate --here)")}})
    refitted = LutProfile(data, str(target))
    refitted.save()
    return refitted, result
