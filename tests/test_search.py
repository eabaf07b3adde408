"""The search driver end to end, on real SQLite studies in real run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from nas.experiment import ExperimentError, parse_experiment
from nas.objectives import Objective
from nas.run import hypervolume
from nas.search import search
from nas.spec import Candidate

from _runs import nas_cmd, study_of, write, without_warnings

ROOT = Path(__file__).resolve().parents[1]

TINY = {"name": "tiny", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "budget": {"trials": 4}, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128}, "seed": 0}
CHEAP = {"name": "cheap", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
         "budget": {"trials": 30}, "sampler": "nsga2", "population": 8, "seed": 3}


def test_tiny_search_writes_every_trial_and_the_front(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = search(write(tmp_path, TINY), folder=out, progress=False)
    study = study_of(out, "tiny")
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["number"]) == [t.number for t in study.trials] == [0, 1, 2, 3]
    assert pd.read_parquet(out / "trials.parquet")["number"].tolist() == trials["number"].tolist()
    assert set(trials["state"]) == {"COMPLETE"} and trials["trained"].all()
    # the front is Optuna's, and trials.csv agrees with the study's values
    front = pd.read_csv(out / "front.csv")
    assert sorted(front["number"]) == sorted(t.number for t in study.best_trials)
    for t in study.trials:
        row = trials[trials["number"] == t.number].iloc[0]
        assert (row["accuracy"], row["madds"]) == pytest.approx(tuple(t.values))
        assert Candidate.from_json(row["candidate"]) == Candidate.from_json(t.user_attrs["candidate"])
    hv = pd.read_csv(out / "hypervolume.csv")
    assert hv["finished"].tolist() == [1, 2, 3, 4] and hv["hypervolume"].is_monotonic_increasing
    objectives = [Objective.from_dict(o) for o in json.loads((out / "run.json").read_text())["objectives"]]
    assert hv["hypervolume"].iloc[-1] == pytest.approx(hypervolume(front[["accuracy", "madds"]].to_numpy(), objectives))
    assert result.trials == 4 and result.front == len(front)
    assert (out / "experiment.yaml").read_text() == (tmp_path / "exp.yaml").read_text()
    # every trained candidate reported its validation accuracy per epoch to the pruner's study
    proxy = optuna.load_study(study_name="tiny:proxy", storage=f"sqlite:///{out / 'study.db'}")
    assert sorted(t.user_attrs["trial"] for t in proxy.trials) == [0, 1, 2, 3]
    for t in proxy.trials:
        assert t.intermediate_values == {1: pytest.approx(trials.set_index("number").loc[t.user_attrs["trial"], "accuracy"])}


def test_hypervolume_is_optunas_on_normalised_values() -> None:
    meta = [Objective.of("accuracy", reference=0.0), Objective.of("madds", reference=100.0)]
    # one point at accuracy 0.5, madds 50 -> box 0.5 x 0.5; a dominated point adds nothing
    assert hypervolume(np.array([[0.5, 50.0]]), meta) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.5, 50.0], [0.4, 60.0]]), meta) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.5, 50.0], [0.8, 90.0]]), meta) == pytest.approx(0.25 + 0.3 * 0.1)
    assert hypervolume(np.array([[0.5, 150.0]]), meta) == 0.0  # beyond the reference point


def test_resume_adds_trials_to_the_same_study(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 5}})
    search(exp, folder=out, progress=False)
    first = pd.read_csv(out / "trials.csv")
    search(write(tmp_path, {**CHEAP, "budget": {"trials": 5}}), folder=out, progress=False)  # nothing left to do
    assert len(pd.read_csv(out / "trials.csv")) == 5
    rc = subprocess.run(nas_cmd("search", str(exp), "--out", str(out), "--trials", "9", "--no-progress"),
                        capture_output=True, text=True, cwd=tmp_path)
    assert rc.returncode == 0, rc.stderr
    again = pd.read_csv(out / "trials.csv")
    assert sorted(again["number"]) == list(range(9))
    pd.testing.assert_frame_equal(again.iloc[:5][["number", "latency_ms", "size_kb"]],
                                  first[["number", "latency_ms", "size_kb"]])
    assert "9 trials" in rc.stdout


def test_a_changed_experiment_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    search(write(tmp_path, {**CHEAP, "budget": {"trials": 2}}), folder=out, progress=False)
    with pytest.raises(ExperimentError, match="different experiment"):
        search(write(tmp_path, {**CHEAP, "budget": {"trials": 2}, "sampler": "random"}), folder=out, progress=False)


def test_infeasible_candidates_are_not_trained(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = {**TINY, "constraints": {"madds": {"max": 1000}}, "budget": {"trials": 3}}  # no network is that small
    search(write(tmp_path, exp), folder=out, progress=False)
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and not trials["trained"].any() and not trials["feasible"].any()
    # refused before training: PRUNED, no accuracy (issue 18: no placeholder value for a front to pick up)
    assert set(trials["state"]) == {"PRUNED"} and trials["accuracy"].isna().all() and (trials["c:madds"] > 0).all()
    assert len(pd.read_csv(out / "front.csv")) == 0  # best_trials keeps feasible trials only
    proxy = optuna.load_study(study_name="tiny:proxy", storage=f"sqlite:///{out / 'study.db'}")
    assert proxy.trials == []


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = {**TINY, "budget": {"trials": 2}, "proxy": {"epochs": 1, "pruner": "none", "lr": 1e9}}
    result = search(write(tmp_path, exp), folder=out, progress=False)
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "FAIL"] and result.trials == 2
    assert all("loss" in r for r in trials["fail_reason"])


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 40}})
    rc = subprocess.run(nas_cmd("search", str(exp), "--out", str(out), "--workers", "2", "--trials", "30",
                                "--no-progress"), capture_output=True, text=True, cwd=tmp_path)
    assert rc.returncode == 0, rc.stderr
    trials = pd.read_csv(out / "trials.csv")
    study = study_of(out, "cheap")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == len(trials) and sorted(numbers) == list(range(len(numbers)))
    assert 30 <= len(numbers) <= 31  # --trials reaches both workers; one may finish a trial past the budget
    assert set(trials["state"]) == {"COMPLETE"}
    assert trials["worker"].nunique() == 2  # both processes did trials


def test_same_seed_same_trials(tmp_path: Path) -> None:
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 12}})
    a = search(exp, folder=tmp_path / "a", progress=False).frame
    b = search(exp, folder=tmp_path / "b", progress=False).frame
    cols = [c for c in a.columns if c.startswith("param:")] + ["latency_ms", "size_kb", "pareto"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def _wait_for(predicate, timeout: float = 180.0) -> None:  # generous: a loaded 2-core machine starts slowly
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _running(out: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    if not (out / "run.json").exists():  # written once the study's tables exist
        return []
    try:
        trials = study_of(out, name).get_trials(states=(optuna.trial.TrialState.RUNNING,))
        return [t for t in trials if "candidate" in t.user_attrs]  # under way: its candidate is drawn
    except KeyError:  # study not created yet
        return []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_killed_or_interrupted_trial_is_failed_and_retried(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "run"
    exp = write(tmp_path, {**TINY, "name": "slow", "budget": {"trials": 2}, "proxy": {"epochs": 4, "pruner": "none"}})
    proc = subprocess.Popen(nas_cmd("search", str(exp), "--out", str(out), "--no-progress"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_running(out, "slow")) == 1)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), err
    study = study_of(out, "slow")
    if sig == signal.SIGKILL:
        (victim,) = _running(out, "slow")  # nobody is left to mark it
    else:
        assert b"resume" in err
        (victim,) = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert "interrupted" in victim.user_attrs["fail_reason"]
    search(exp, folder=out, progress=False)  # resume: the dead worker's trial is failed at once and retried
    study = study_of(out, "slow")
    assert study.trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    retried = [t for t in study.trials if t.number != victim.number and t.params == victim.params]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    assert trials.loc[retried[0].number, "retry_of"] == victim.number
    assert (trials["state"] == "COMPLETE").sum() == 2  # the lost trial did not use up the budget
    proxy = optuna.load_study(study_name="slow:proxy", storage=f"sqlite:///{out / 'study.db'}")
    assert not proxy.get_trials(states=(optuna.trial.TrialState.RUNNING,))


@pytest.mark.parametrize(("patch", "message"), [
    ({"objectives": ["accuracy", "speed"]}, "unknown objective 'speed'"),
    ({"constraints": {"madds": {"min": 3}}}, r"give \{max: value\}"),
    ({"constraints": {"flops": {"max": 3}}}, "unknown name 'flops'"),
    ({"sampler": "cmaes"}, "sampler"),
    ({"budget": {"trials": None}}, "trials, minutes or both"),
    ({"name": "a b"}, "name"),
    ({"speed": 3}, "speed"),
])
def test_experiment_errors_name_the_field(patch: dict, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        parse_experiment(yaml.safe_dump({**TINY, **patch}), "exp.yaml")


def test_bad_yaml_and_unknown_space_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="not valid YAML"):
        parse_experiment("name: x\nspace: [\n", "bad.yaml")
    bad = write(tmp_path, {**CHEAP, "space": "mobilenetv9"})
    rc = subprocess.run(nas_cmd("search", str(bad), "--out", str(tmp_path / "r")), capture_output=True, text=True)
    assert rc.returncode == 2 and without_warnings(rc.stderr).count("\n") == 1 and "mobilenetv9" in rc.stderr, rc.stderr


@pytest.mark.parametrize(("budget", "population"), [({"trials": 30}, 8), ({"trials": 400}, 40),
                                                    ({"trials": 5000}, 100), ({"minutes": 5}, 16)])
def test_nsga2s_population_is_sized_to_the_budget(budget: dict, population: int) -> None:
    from nas.search.study import session_sampler

    config = parse_experiment(yaml.safe_dump({**CHEAP, "budget": budget, "population": None})).config
    assert session_sampler(config, 0)._population_size == population
    assert session_sampler(config.model_copy(update={"population": 12}), 0)._population_size == 12


def test_a_search_without_a_population_breeds_after_a_tenth_of_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "run"
    search(write(tmp_path, {**CHEAP, "budget": {"trials": 30}, "population": None}), folder=out, progress=False)
    generations = [t.system_attrs["NSGAIISampler:generation"] for t in study_of(out, "cheap").trials]
    assert generations[:8] == [0] * 8 and generations[8:16] == [1] * 8  # Optuna's default (50): all random


def test_the_default_sampler_is_tpe_for_the_supernet_and_nsga2_otherwise() -> None:
    import optuna.samplers

    from nas.search.study import session_sampler

    base = {k: v for k, v in CHEAP.items() if k != "sampler"}
    train = parse_experiment(yaml.safe_dump(base))
    assert train.config.sampler == "nsga2"
    assert isinstance(session_sampler(train.config, 0), optuna.samplers.NSGAIISampler)
    assert train.digest == parse_experiment(yaml.safe_dump(base | {"sampler": "nsga2"})).digest  # old runs resume
    supernet = parse_experiment(yaml.safe_dump(base | {"evaluator": "supernet", "dataset": "digits"}))
    assert supernet.config.sampler == "tpe"
    assert isinstance(session_sampler(supernet.config, 0), optuna.samplers.TPESampler)
    chosen = parse_experiment(yaml.safe_dump(base | {"evaluator": "supernet", "dataset": "digits", "sampler": "random"}))
    assert chosen.config.sampler == "random"
