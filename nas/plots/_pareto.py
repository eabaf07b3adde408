"""Non-dominated sorting in one pair of objectives, and the run folder's normalised hypervolume."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from nas.plots._run import Objective


def minimised(values: np.ndarray, objectives: list[Objective]) -> np.ndarray:
    """Objective values (one column each) turned into losses normalised to the reference point 1.

    The contract (docs/run-folder.md), as ``nas search`` computes it: a maximised objective
    (accuracy, a fraction) becomes ``1 - v``, a cost ``v / reference``. A cost without a
    reference is left as is (then the hypervolume is not normalised).
    """
    out: np.ndarray = np.array(values, dtype=float)
    for j, o in enumerate(objectives):
        if o.maximize:
            out[:, j] = 1.0 - out[:, j]
        elif o.reference:
            out[:, j] = out[:, j] / o.reference
    return out


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows no other row dominates (all losses, minimised)."""
    n = len(losses)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        others = np.delete(losses, i, axis=0)
        dominated = np.all(others <= losses[i], axis=1) & np.any(others < losses[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def hypervolume(losses: np.ndarray) -> float:
    """Hypervolume of normalised losses against the reference point (1, ..., 1)."""
    from optuna._hypervolume import compute_hypervolume

    inside = losses[np.all(losses < 1.0, axis=1) & np.all(np.isfinite(losses), axis=1)] if len(losses) else losses
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, np.ones(losses.shape[1])))


def hypervolume_history(trials: pd.DataFrame, objectives: list[Objective]) -> pd.DataFrame:
    """``finished, number, hypervolume`` after each finished trial, from the trials table.

    What ``hypervolume.csv`` holds; used when a run folder does not have it (yet).
    Finished means COMPLETE, PRUNED or FAIL, in order of completion; only feasible
    COMPLETE trials add volume.
    """
    import pandas as pd

    names = [o.name for o in objectives]
    done = trials[trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    if "datetime_complete" in done.columns:
        done = done.assign(_t=pd.to_datetime(done["datetime_complete"], errors="coerce", utc=True))
        done = done.sort_values(["_t", "number"], kind="stable", na_position="last")
    rows = []
    points = np.empty((0, len(names)))
    for i, (_, row) in enumerate(done.iterrows(), start=1):
        values = np.array([row.get(n, np.nan) for n in names], dtype=float)
        if row["state"] == "COMPLETE" and bool(row["feasible"]) and np.isfinite(values).all():
            points = np.vstack([points, minimised(values[None, :], objectives)])
        rows.append({"finished": i, "number": int(row["number"]), "hypervolume": hypervolume(points)})
    return pd.DataFrame(rows, columns=["finished", "number", "hypervolume"])


def pair_front(x: np.ndarray, y: np.ndarray, x_max: bool, y_max: bool) -> np.ndarray:
    """Indices of the points non-dominated in (x, y), ordered from best x to worst x."""
    losses = np.column_stack([-x if x_max else x, -y if y_max else y])
    idx = np.flatnonzero(non_dominated(losses))
    return idx[np.argsort(losses[idx, 0], kind="stable")]
