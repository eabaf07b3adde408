"""Pictures of runs: Pareto fronts, hypervolume, importance, fidelity, compression and latency figures.

Every function reads what it draws (a run folder, a model, a validation result) and
writes one PNG at a fixed size; none touches matplotlib's global state. ``nas plot``
(:mod:`nas.cli.plot`) and ``nas report`` (:mod:`nas.report`) call them; both pick the
run's trial and profile through the same helpers (:func:`chosen_trial`, :func:`run_profile`).
"""

from __future__ import annotations

from nas.plots._compression import compression_tradeoff, layer_table, plot_compression_tradeoff, plot_weight_distribution
from nas.plots._devices import plot_devices
from nas.plots._fidelity import Fidelity, fidelity, plot_fidelity
from nas.plots._figures import (
    LAYER_FORMATS,
    chosen_trial,
    run_latency_breakdown,
    run_profile,
    tradeoff_picture,
    weight_picture_settings,
    write_layer_table,
)
from nas.plots._latency import plot_latency_breakdown, plot_latency_validation, read_validation
from nas.plots._search import (
    ParamRanking,
    distinct_names,
    front_figsize,
    plot_front,
    plot_hypervolume,
    plot_importance,
    plot_parallel,
    rank_params,
)
from nas.plots._style import DPI, pixel_size
from nas.plots._tables import html_table, markdown_table

__all__ = [
    "DPI",
    "Fidelity",
    "LAYER_FORMATS",
    "ParamRanking",
    "chosen_trial",
    "compression_tradeoff",
    "distinct_names",
    "fidelity",
    "front_figsize",
    "html_table",
    "layer_table",
    "markdown_table",
    "plot_devices",
    "pixel_size",
    "plot_compression_tradeoff",
    "plot_fidelity",
    "plot_front",
    "plot_hypervolume",
    "plot_importance",
    "plot_latency_breakdown",
    "plot_latency_validation",
    "plot_parallel",
    "plot_weight_distribution",
    "rank_params",
    "read_validation",
    "run_latency_breakdown",
    "run_profile",
    "tradeoff_picture",
    "weight_picture_settings",
    "write_layer_table",
]
