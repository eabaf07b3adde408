"""The run folder (docs/run-folder.md) in one place: its paths, ``run.json``, the trials table,
the Pareto front and the hypervolume. ``nas search`` writes it through :class:`RunFolder`;
``nas plot``, ``nas report`` and ``nas finetune`` read it through the same class.
"""

from __future__ import annotations

from nas.run._folder import WINNER_FILES, RunFolder, Winner, load_run
from nas.run._info import RunInfo
from nas.run._pareto import hypervolume, hypervolume_history, hypervolume_of_losses, non_dominated, normalised_losses
from nas.run._table import SILENT_WORKER, feasible, read_table, read_trials, rejected, trials_frame, typed

__all__ = [
    "SILENT_WORKER",
    "WINNER_FILES",
    "RunFolder",
    "RunInfo",
    "Winner",
    "feasible",
    "hypervolume",
    "hypervolume_history",
    "hypervolume_of_losses",
    "load_run",
    "non_dominated",
    "normalised_losses",
    "read_table",
    "read_trials",
    "rejected",
    "trials_frame",
    "typed",
]
