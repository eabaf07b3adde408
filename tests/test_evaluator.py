"""The Evaluator seam and the one recorder: a new evaluator plugs in without touching a backend, every
outcome is written the same way, and Ctrl+C does not depend on where its exception lands."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import ClassVar

import optuna
import pandas as pd
import pytest

from nas.experiment import ExperimentError, parse_experiment
from nas.search import Evaluator, Outcome, Progress, Setup, record, register_evaluator, search
from nas.search.scoring import cheap_costs
from nas.spec import Candidate

from _runs import study_of, write

BASE = {"space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "budget": {"trials": 4}, "proxy": {"epochs": 2, "pruner": "none"}, "seed": 0}


@register_evaluator
class SizeEvaluator(Evaluator):
    """Accuracy made up from the network's size; counts its set-ups, evaluations and tear-downs."""

    name = "size-test"
    needs_data = False
    events: ClassVar[list[str]] = []

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.events.append("setup")

    def evaluate(self, candidate: Candidate, number: int, progress: Progress) -> Outcome:
        self.events.append(f"evaluate {number}")
        madds = cheap_costs(self.setup, candidate)["madds"]
        accuracy = 1.0 / (1.0 + madds / 1e6)
        progress.report(1, accuracy, None, last=False)
        return Outcome("COMPLETE", accuracy=accuracy, trained=True, epochs=1, history=(accuracy,))

    def close(self) -> None:
        self.events.append("close")


@register_evaluator
class SwallowingEvaluator(Evaluator):
    """Sends this process SIGINT and swallows the KeyboardInterrupt, as Python does when the exception lands
    in a garbage-collection callback; then finishes its trial normally."""

    name = "swallow-test"
    needs_data = False

    def evaluate(self, candidate: Candidate, number: int, progress: Progress) -> Outcome:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return Outcome("COMPLETE", accuracy=0.5, trained=True, epochs=1, history=(0.5,))


def test_a_new_evaluator_plugs_in_through_the_experiment_file(tmp_path: Path) -> None:
    SizeEvaluator.events.clear()
    out = tmp_path / "run"
    result = search(write(tmp_path, {**BASE, "name": "size", "evaluator": "size-test"}), folder=out, progress=False)
    assert result.trials == 4
    # set up once for the worker, one evaluation per trial, torn down once
    assert SizeEvaluator.events == ["setup", *(f"evaluate {i}" for i in range(4)), "close"]
    trials = pd.read_csv(out / "trials.csv")
    assert trials["accuracy"].tolist() == pytest.approx([1 / (1 + m / 1e6) for m in trials["madds"]])
    assert trials["trained"].all() and (trials["epochs"] == 1).all()
    proxy = optuna.load_study(study_name="size:proxy", storage=f"sqlite:///{out / 'study.db'}")
    assert len(proxy.trials) == 4  # its per-epoch reports reached the pruner's study


def test_an_unknown_evaluator_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match=r"unknown evaluator 'nope'; choose from \[.*'train'"):
        search(write(tmp_path, {**BASE, "name": "bad", "evaluator": "nope"}), folder=tmp_path / "run", progress=False)


def test_a_swallowed_interrupt_still_stops_the_search_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        search(write(tmp_path, {**BASE, "name": "swallow", "evaluator": "swallow-test"}), folder=out, progress=False)
    study = study_of(out, "swallow")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]  # no trial started after Ctrl+C; none lost
    assert pd.read_csv(out / "trials.csv")["state"].tolist() == ["COMPLETE"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


@pytest.mark.parametrize(("outcome", "state", "attrs"), [
    (Outcome("COMPLETE", {"madds": 5.0}, accuracy=0.8, trained=True, epochs=2, history=(0.5, 0.8)),
     "COMPLETE", {"trained": True, "epochs": 2, "history": [0.5, 0.8], "madds": 5.0}),
    (Outcome("PRUNED", {"madds": 5.0}, accuracy=0.3, trained=True, epochs=1, history=(0.3,), reason="pruned"),
     "PRUNED", {"fail_reason": "pruned", "accuracy": 0.3}),
    (Outcome.failed("x" * 900, costs={"madds": 50.0}), "FAIL", {"fail_reason": "x" * 500, "trained": False}),
])
def test_record_writes_an_outcome_into_a_real_trial(outcome: Outcome, state: str, attrs: dict) -> None:
    exp = parse_experiment("name: r\nspace: mobilenetv2-tiny\nobjectives: [accuracy, madds]\n"
                           "constraints: {madds: {max: 10}, accuracy: {min: 0.5}}\n")
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    got, values = record(trial, outcome, exp)
    study.tell(trial, values, state=got)
    frozen = study.trials[0]
    assert frozen.state.name == state
    assert {k: frozen.user_attrs[k] for k in attrs} == attrs
    assert frozen.constraints["madds"] == pytest.approx(outcome.costs["madds"] - 10)
    if state == "COMPLETE":
        assert frozen.values == pytest.approx([0.8, 5.0]) and frozen.constraints["accuracy"] == pytest.approx(-0.3)
    else:
        assert "accuracy" not in frozen.constraints and frozen.values is None


def test_an_outcome_survives_its_trip_from_a_ray_worker() -> None:
    outcome = Outcome("PRUNED", {"madds": 1.0, "latency_ms:pi": 2.0}, 0.4, True, 1, (0.4,), 1.5, "stopped",
                      {"ray_node": "n"})
    assert Outcome.from_dict(outcome.to_dict()) == outcome
    assert math.isnan(Outcome.failed("x").accuracy)
    with pytest.raises(ValueError, match="Outcome.state"):
        Outcome("DONE")
