"""Pictures of runs: Pareto fronts, hypervolume, importance, compression and latency figures.

Every function reads what it draws (a run folder, a model, a validation result) and
writes one PNG at a fixed size; none touches matplotlib's global state. ``nas plot``
(:mod:`nas.plots.cli`) and ``nas report`` (:mod:`nas.report`) call them.
"""

from __future__ import annotations

from nas.plots._run import Objective, Run, Winner, load_run
from nas.plots._search import plot_front, plot_hypervolume, plot_importance, plot_parallel

__all__ = [
    "Objective",
    "Run",
    "Winner",
    "load_run",
    "plot_front",
    "plot_hypervolume",
    "plot_importance",
    "plot_parallel",
]
