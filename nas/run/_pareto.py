"""The run's Pareto front and hypervolume, computed once for every reader and writer.

The front is Optuna's (what ``study.best_trials`` returns). The hypervolume is Optuna's too, on
normalised minimisation values (docs/run-folder.md): a maximised objective (accuracy, a fraction)
becomes ``1 - v``, a cost ``v / reference``, so the reference point is all ones and the volume
lies in [0, 1]. A cost without a reference is left unscaled. Points that are not finite or not
inside the reference box add nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nas.objectives import Objective
from nas.optuna_compat import compute_hypervolume

if TYPE_CHECKING:
    import pandas as pd

#: Trial states that end a trial (the hypervolume history has one row per finished trial).
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def normalised_losses(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Rows of objective values as losses scaled so that the reference point is all ones."""
    out: np.ndarray = np.array(values, dtype=float, ndmin=2)
    for j, o in enumerate(objectives):
        if o.maximize:
            out[:, j] = 1.0 - out[:, j]
        elif o.reference:
            out[:, j] = out[:, j] / o.reference
    return out


def _inside(losses: np.ndarray) -> np.ndarray:
    if len(losses) == 0:
        return losses
    return losses[np.all(np.isfinite(losses), axis=1) & np.all(losses < 1.0, axis=1)]


def hypervolume_of_losses(losses: np.ndarray) -> float:
    """Hypervolume of normalised losses against the reference point (1, ..., 1)."""
    inside = _inside(np.asarray(losses, dtype=float))
    if len(inside) == 0:
        return 0.0
    return compute_hypervolume(inside, np.ones(inside.shape[1]))


def hypervolume(values: np.ndarray, objectives: Sequence[Objective]) -> float:
    """Hypervolume of rows of objective values, on the normalised scale."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return 0.0
    return hypervolume_of_losses(normalised_losses(values, objectives))


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows no other row dominates (all columns minimised)."""
    losses = np.asarray(losses, dtype=float)
    keep = np.ones(len(losses), dtype=bool)
    for i in range(len(losses)):
        others = np.delete(losses, i, axis=0)
        keep[i] = not (np.all(others <= losses[i], axis=1) & np.any(others < losses[i], axis=1)).any()
    return keep


def hypervolume_history(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """``finished, number, hypervolume`` after each finished trial (COMPLETE, PRUNED or FAIL), in order of
    completion; only feasible COMPLETE trials add volume. What ``hypervolume.csv`` holds."""
    import pandas as pd

    names = [o.name for o in objectives]
    done = trials[trials["state"].astype(str).isin(FINISHED_STATES)]
    if "datetime_complete" in done.columns:
        when = pd.to_datetime(done["datetime_complete"].replace("", None), errors="coerce", utc=True)
        done = done.assign(_when=when).sort_values(["_when", "number"], kind="stable", na_position="last")
    adds = (done["state"].astype(str) == "COMPLETE").to_numpy() & done["feasible"].astype(bool).to_numpy()
    losses = normalised_losses(done[names].to_numpy(dtype=float), objectives) if len(done) else np.empty((0, 0))
    if len(done):
        adds &= np.all(np.isfinite(losses), axis=1) & np.all(losses < 1.0, axis=1)
    rows, front, hv = [], np.empty((0, len(names))), 0.0
    for i, (number, add, loss) in enumerate(zip(done["number"], adds, losses, strict=True), start=1):
        if add:
            points = np.vstack([front, loss])
            mask = non_dominated(points)  # only front points hold volume: the volume is computed on those alone
            if mask[-1]:
                front = points[mask]
                hv = hypervolume_of_losses(front)
        rows.append({"finished": i, "number": int(number), "hypervolume": hv})
    return pd.DataFrame(rows, columns=["finished", "number", "hypervolume"])
