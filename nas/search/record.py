"""One outcome type and one function that writes a trial's result into its Optuna trial.

Both backends send every finished trial through :func:`record` (as Optuna sends every result
through ``optuna/study/_tell.py``): the local backend inside its objective, the Ray driver when
Tune reports a trial finished. So trials.csv has the same columns and states whichever backend ran.

A candidate refused before training (it broke a cheap constraint) is told PRUNED, with its costs,
its constraints and the ``rejected`` user attribute, and no values: it has no accuracy, and a
COMPLETE trial with a placeholder accuracy would sit on the front of any tool that reads the study
without its constraints (optuna-dashboard 0.21's "Best Trials").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.experiment import Experiment
from nas.optuna_compat import set_dashboard_constraints
from nas.search.scoring import cheap_violations, late_violations, objective_values, short_label
from nas.spec import Candidate

#: Longest fail reason kept (a traceback's last line can be long).
REASON_CHARS = 500
STATES = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}


@dataclass(frozen=True)
class Outcome:
    """What one trial came to. ``state`` is COMPLETE, PRUNED (the evaluator or a scheduler stopped it early;
    ``accuracy`` is its last) or FAIL (``reason`` says why); ``costs`` are the cheap costs, when computed;
    ``accuracy`` is NaN when the evaluator did not run; ``attrs`` are a backend's own user attributes."""

    state: str
    costs: dict[str, float] = field(default_factory=dict)
    accuracy: float = math.nan
    trained: bool = False
    epochs: int = 0
    history: tuple[float, ...] = ()
    seconds: float | None = None
    reason: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"Outcome.state must be one of {sorted(STATES)}, but got {self.state!r}")

    @classmethod
    def failed(cls, reason: str, **kwargs: Any) -> Outcome:
        return cls("FAIL", reason=reason, **kwargs)

    def with_costs(self, costs: dict[str, float]) -> Outcome:
        return replace(self, costs=dict(costs))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what a Ray trial reports back to the driver)."""
        return {"state": self.state, "costs": self.costs, "accuracy": self.accuracy, "trained": self.trained,
                "epochs": self.epochs, "history": list(self.history), "seconds": self.seconds,
                "reason": self.reason, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        return cls(d["state"], dict(d.get("costs") or {}), float(d.get("accuracy", math.nan)),
                   bool(d.get("trained")), int(d.get("epochs") or 0), tuple(d.get("history") or ()),
                   d.get("seconds"), str(d.get("reason") or ""), dict(d.get("attrs") or {}))


def label(trial: optuna.Trial, candidate: Candidate) -> None:
    """What a trial is, set as soon as it is drawn: the candidate's JSON and its short label."""
    trial.set_user_attr("candidate", candidate.to_json())
    trial.set_user_attr("label", short_label(candidate))


def record(trial: optuna.Trial, outcome: Outcome, experiment: Experiment
           ) -> tuple[TrialState, list[float] | None]:
    """Write ``outcome`` into ``trial`` (costs, training, constraints, reason); returns what to tell the study."""
    for k, v in outcome.costs.items():
        trial.set_user_attr(k, float(v))
    trial.set_user_attr("trained", outcome.trained)
    if outcome.trained:
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("history", [round(a, 5) for a in outcome.history])
    if outcome.seconds is not None:
        trial.set_user_attr("train_seconds", round(outcome.seconds, 3))
    for k, v in outcome.attrs.items():
        trial.set_user_attr(k, v)
    violations: dict[str, float] = {}
    if outcome.costs and all(c.name in outcome.costs for c in experiment.constraints if c.cheap):
        violations = cheap_violations(experiment, outcome.costs)
    rejected = outcome.state == "COMPLETE" and not outcome.trained and experiment.needs_training \
        and any(v > 0 for v in violations.values())
    if outcome.state == "COMPLETE" and not rejected:
        violations.update(late_violations(experiment, outcome.accuracy))
    for name, v in violations.items():
        trial.set_constraint(name, v)
    if violations:
        set_dashboard_constraints(trial, list(violations.values()))
    if outcome.state == "FAIL":
        trial.set_user_attr("fail_reason", outcome.reason[:REASON_CHARS])
        return TrialState.FAIL, None
    if rejected:
        trial.set_user_attr("rejected", "broke " + ", ".join(k for k, v in violations.items() if v > 0))
        return TrialState.PRUNED, None
    if outcome.state == "PRUNED":
        trial.set_user_attr("fail_reason", outcome.reason[:REASON_CHARS])
        trial.set_user_attr("accuracy", outcome.accuracy)
        return TrialState.PRUNED, None
    return TrialState.COMPLETE, list(objective_values(experiment, outcome.costs, outcome.accuracy))
