"""The few parts of Optuna that ``nas`` uses and Optuna does not make public, in one place.

Each is what a public Optuna call does inside, used here on data ``nas`` already holds, so
an Optuna upgrade that moves one of them breaks this file only:

- the hypervolume (``optuna._hypervolume.compute_hypervolume``): what Optuna's own
  ``plot_hypervolume_history`` and its samplers use; there is no public function;
- the Pareto front of an already fetched trial list (what ``Study.best_trials`` computes after
  fetching every trial again: once per finished trial, that is most of a results write);
- a study's storage and a trial's storage id, to fail or label trials of *other* workers
  (the public ``Study.tell`` can finish only trials of this process);
- ``Study.ask`` with user attributes written in the same transaction (:func:`ask_labelled`), so that
  no process killed between the two leaves a trial nobody can tell apart;
- the constraints list in the format before Optuna 5 (:func:`set_dashboard_constraints`), the one
  optuna-dashboard 0.21 reads to grey infeasible trials out of its Pareto-front plot.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume as _compute_hypervolume
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY, _is_constrained_optimization
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna marks its heartbeat, retry and enqueue API experimental; the warning tells a user nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def compute_hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of minimisation ``losses`` (rows) dominated against ``reference``."""
    return float(_compute_hypervolume(losses, reference))


def pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[optuna.study.StudyDirection]
                 ) -> list[FrozenTrial]:
    """``study.best_trials`` on a fetched list: feasible trials only when any trial has constraints."""
    trials = list(trials)
    return _get_pareto_front_trials_by_trials(trials, list(directions),
                                              consider_constraint=_is_constrained_optimization(trials))


def ask_labelled(study: optuna.Study, user_attrs: dict[str, Any], params: dict[str, Any] | None = None,
                 distributions: dict[str, Any] | None = None) -> optuna.Trial:
    """A new RUNNING trial of ``study`` created with ``user_attrs`` (and ``params`` drawn from
    ``distributions``) at once (what ``ask`` then ``set_user_attr`` does in several transactions), through
    the storage's public ``create_new_trial``."""
    from datetime import datetime

    template = FrozenTrial(number=-1, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
                           datetime_start=datetime.now(), datetime_complete=None, params=dict(params or {}),
                           distributions=dict(distributions or {}), user_attrs=dict(user_attrs), system_attrs={},
                           intermediate_values={}, trial_id=-1)
    new_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, new_id)


def storage_of(study: optuna.Study) -> Any:
    """The study's storage (``BaseStorage``)."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (not its number)."""
    return int(trial._trial_id)


#: The constraints a trial has in the list format before Optuna 5 (``trial.constraints`` reads both).
DASHBOARD_CONSTRAINTS = _CONSTRAINTS_KEY


def set_dashboard_constraints(trial: optuna.Trial, violations: Sequence[float]) -> None:
    """The trial's constraint violations also as the one list optuna-dashboard 0.21 reads (system attribute
    ``constraints``); Optuna 5 stores each constraint by name (``Trial.set_constraint``), which that
    dashboard does not see, so it would draw every infeasible trial as feasible."""
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS, [float(v) for v in violations])


def named_constraints(trial: FrozenTrial) -> dict[str, float]:
    """``trial.constraints`` without the copies :func:`set_dashboard_constraints` adds (keyed "0", "1", ...)."""
    out = trial.constraints
    named = {k: v for k, v in out.items() if not k.isdigit()}
    return named or out
