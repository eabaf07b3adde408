"""Pictures of runs: Pareto fronts, hypervolume, importance, compression and latency figures.

Every function reads what it draws (a run folder, a model, a validation result) and
writes one PNG at a fixed size; none touches matplotlib's global state. ``nas plot``
(:mod:`nas.plots.cli`) and ``nas report`` (:mod:`nas.report`) call them.
"""

from __future__ import annotations

from nas.plots._compression import compression_tradeoff, layer_table, plot_compression_tradeoff, plot_weight_distribution
from nas.plots._latency import plot_latency_breakdown, plot_latency_validation, read_validation
from nas.plots._search import front_figsize, plot_front, plot_hypervolume, plot_importance, plot_parallel
from nas.plots._style import DPI, pixel_size

__all__ = [
    "DPI",
    "compression_tradeoff",
    "front_figsize",
    "layer_table",
    "pixel_size",
    "plot_compression_tradeoff",
    "plot_front",
    "plot_hypervolume",
    "plot_importance",
    "plot_latency_breakdown",
    "plot_latency_validation",
    "plot_parallel",
    "plot_weight_distribution",
    "read_validation",
]
