"""One search space specialised for several devices: each run's accuracy/latency front on its own device,
beside the other runs' fronts timed on that device.

This is the picture that says why a search is run per device (OFA's "specialise for each platform"):
a network on the CPU's front may be far off the microcontroller's. Every panel is one run's device; its
run's front is drawn solid, the other runs' front members are re-timed on that device (the same cost
model, :func:`nas.objectives.kind_of`) and drawn as hollow points, with their accuracy as their own search
scored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.hardware import get_profile
from nas.objectives import kind_of
from nas.plots._search import front_members, pair_front
from nas.plots._style import new_figure, save, style
from nas.run import RunFolder
from nas.spec import Candidate


def _accuracy_front(run: RunFolder) -> pd.DataFrame:
    """The run's feasible trials on its (accuracy, latency_ms) front, best accuracy first."""
    names = [o.name for o in run.objectives]
    if "accuracy" not in names or "latency_ms" not in names:
        raise NasError(f"{run.path}: a device comparison needs accuracy and latency_ms among the objectives "
                       f"(this run has {', '.join(names)}).")
    feasible = run.require_trials(1, "plot")
    rows = feasible[front_members(run, feasible)] if len(feasible) > 1 else feasible
    rows = rows if len(rows) else feasible
    idx = pair_front(rows["accuracy"].to_numpy(float), rows["latency_ms"].to_numpy(float), True, False)
    return rows.iloc[idx]


def retimed(rows: pd.DataFrame, profile: str) -> np.ndarray:
    """Latency (ms) of each row's candidate on ``profile``, with the cost model the search uses."""
    device = get_profile(profile)
    latency = kind_of("latency_ms").compute
    return np.array([latency(Candidate.from_json(text), device) for text in rows["candidate"]], dtype=float)


def plot_devices(runs: Sequence[RunFolder], path: str | Path) -> Path:
    """A panel per run (its latency profile): its accuracy/latency front, and the other runs' fronts re-timed
    on its device. The runs must search accuracy and latency_ms on different profiles."""
    profiles = [r.info.latency_profile for r in runs]
    if len(runs) < 2 or len(set(profiles)) < 2:
        raise NasError("a device comparison needs two or more runs whose latency refers to different profiles "
                       f"(got {', '.join(profiles) or 'none'}).")
    fronts = [_accuracy_front(r) for r in runs]
    with style():
        fig = new_figure(4.6 * len(runs), 4.4)
        axes = fig.subplots(1, len(runs), squeeze=False)[0]
        for i, (ax, profile) in enumerate(zip(axes, profiles)):
            for j, (run, front) in enumerate(zip(runs, fronts)):
                x = front["latency_ms"].to_numpy(float) if j == i else retimed(front, profile)
                own = j == i
                ax.plot(x, 100 * front["accuracy"].to_numpy(float), marker="o", ms=5, color=f"C{j}",
                        lw=1.6, ls="-" if own else "none", mfc=f"C{j}" if own else "none",
                        label=f"{run.name}'s front" + ("" if own else f" (searched for {profiles[j]})"))
            ax.set_xlabel(f"latency on {profile} (ms)")
            ax.set_ylabel("accuracy (%, as searched)")
            ax.set_title(f"specialised for {profile}", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
        title = "One space, one accuracy estimator, a front per device: solid is the device's own search"
        others = sorted({o.name for r in runs for o in r.objectives} - {"accuracy", "latency_ms"})
        if others:  # the line is the 2-D front of that run's own points only, so another's may sit beyond it
            title += (f"\nthe searches also minimise {', '.join(others)}: a hollow point beyond the line costs more "
                      "there, breaks that run's constraints, or was missed by that device's search")
        fig.suptitle(title, fontsize=9)
        text = "; ".join(f"{r.name}: {len(f)} front points on {p}" for r, f, p in zip(runs, fronts, profiles))
        return save(fig, path, description=f"Accuracy vs latency fronts per device. {text}.")
