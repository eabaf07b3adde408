"""Issue 18, item 4, through the `nas` command: a finished run's study as Optuna's own tools and
optuna-dashboard (0.21) read it: objective names, which study to load, proxy trials that point to
their main trial, and rejected and infeasible trials off every front."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pandas as pd
import pytest
from _runs import nas_cmd, study_of, write

from nas.plots.testing import SyntheticRun, write_synthetic_run

OBJECTIVES = ["accuracy", "madds", "size_kb"]
#: digits, two short epochs: some candidates train past the 50% floor and some do not (seeded: the same
#: ones each time); the MAdds limit refuses some before training.
EXPERIMENT = {"name": "dash", "space": "mobilenetv2-tiny", "dataset": "digits", "objectives": OBJECTIVES,
              "constraints": {"madds": {"max": 400_000}, "accuracy": {"min": 0.5}}, "budget": {"trials": 12},
              "proxy": {"epochs": 2, "pruner": "none", "batch_size": 32}, "sampler": "random", "seed": 1}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run folder made by `nas search`, and what the command printed."""
    tmp = tmp_path_factory.mktemp("i18")
    out = tmp / "run"
    done = subprocess.run(nas_cmd("search", str(write(tmp, EXPERIMENT)), "--out", str(out), "--no-progress"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def _rejected(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if "rejected" in t.user_attrs]


@pytest.mark.slow
def test_the_study_has_objective_names_and_nas_says_which_study_to_load(finished: tuple[Path, str]) -> None:
    out, stdout = finished
    url = f"sqlite:///{out / 'study.db'}"
    assert study_of(out, "dash").metric_names == OBJECTIVES
    # the storage also holds the proxy study, so Optuna cannot pick one without its name ...
    with pytest.raises(ValueError, match="does not contain exactly 1 study"):
        optuna.load_study(study_name=None, storage=url)
    # ... and nas prints the call that names it
    assert f"optuna.load_study(study_name='dash', storage='{url}')" in stdout
    assert f"optuna-dashboard {url}" in stdout


@pytest.mark.slow
def test_rejected_trials_are_pruned_with_their_costs_and_are_on_no_front(finished: tuple[Path, str]) -> None:
    out, _ = finished
    study = study_of(out, "dash")
    rejected = _rejected(study)
    assert rejected, "the MAdds limit should refuse some candidates"
    for t in rejected:
        assert t.state.name == "PRUNED" and t.values is None and not t.user_attrs["trained"]
        assert t.constraints["madds"] > 0 and t.user_attrs["rejected"] == "broke madds"
        assert t.user_attrs["madds"] == pytest.approx(t.constraints["madds"] + 400_000)
    numbers = {t.number for t in rejected}
    assert not numbers & {t.number for t in study.best_trials}
    trials = pd.read_csv(out / "trials.csv")
    assert not numbers & set(pd.read_csv(out / "front.csv")["number"])
    assert set(trials.loc[trials["state"] == "PRUNED", "number"]) == numbers
    assert not [c for c in trials.columns if c.startswith("c:") and c[2:].isdigit()]  # named constraints only
    report = subprocess.run(nas_cmd("report", str(out)), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert f"| rejected before training | {len(numbers)} (broke a cheap constraint) |" in \
        (out / "report.md").read_text()


@pytest.mark.slow
def test_proxy_trials_point_to_their_main_trial(finished: tuple[Path, str]) -> None:
    out, _ = finished
    main = {t.number: t for t in study_of(out, "dash").trials}
    proxy = study_of(out, "dash:proxy").trials
    assert len(proxy) == sum(t.user_attrs["trained"] for t in main.values()) > 0
    assert any(p.number != p.user_attrs["trial"] for p in proxy)  # the numbers differ: the attribute is needed
    for p in proxy:
        owner = main[p.user_attrs["trial"]]
        assert owner.user_attrs["proxy_trial"] == p.number
        assert p.params == owner.params and p.params


@pytest.fixture
def dashboard(finished: tuple[Path, str]) -> Iterator[str]:
    """optuna-dashboard's own WSGI app over the run's storage, served on loopback in a thread."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    storage = optuna.storages.RDBStorage(f"sqlite:///{finished[0] / 'study.db'}")
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return json.load(reply)


def _dominates(a: list[float], b: list[float], signs: list[int]) -> bool:
    return a != b and all(s * x >= s * y for x, y, s in zip(a, b, signs))


@pytest.mark.slow
def test_the_dashboard_serves_a_front_without_rejected_or_infeasible_trials(finished: tuple[Path, str],
                                                                             dashboard: str) -> None:
    out, _ = finished
    study = study_of(out, "dash")
    summaries = _get(f"{dashboard}/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "dash")
    detail = _get(f"{dashboard}/api/studies/{study_id}")
    assert detail["objective_names"] == OBJECTIVES
    served = {t["number"]: t for t in detail["trials"]}
    rejected = {t.number for t in _rejected(study)}
    infeasible = {t.number for t in study.trials if t.state.name == "COMPLETE" and max(t.constraints.values()) > 0}
    assert rejected and infeasible, "the run should have both kinds"
    # its Best Trials: complete trials only, so never a rejected one
    assert not rejected & {t["number"] for t in detail["best_trials"]}
    # the constraints it serves (the list it reads) mark exactly Optuna's infeasible trials ...
    marked = {n for n, t in served.items() if any(c > 0 for c in t["constraints"])}
    assert marked == infeasible | rejected
    # ... so the front its Pareto-front plot draws (complete, feasible by those constraints, non-dominated)
    # is Optuna's best_trials and the run's front.csv
    signs = [1 if d == "maximize" else -1 for d in detail["directions"]]
    feasible = [t for t in served.values() if t["state"] == "Complete" and all(c <= 0 for c in t["constraints"])]
    drawn = {t["number"] for t in feasible
             if not any(_dominates(u["values"], t["values"], signs) for u in feasible)}
    assert drawn == {t.number for t in study.best_trials} == set(pd.read_csv(out / "front.csv")["number"])
    assert drawn and not drawn & (infeasible | rejected)


@pytest.mark.slow
def test_a_run_folder_from_before_still_counts_its_rejected_trials(tmp_path: Path) -> None:
    """Runs recorded rejected candidates as COMPLETE, untrained, accuracy 0: the report still counts them."""
    folder = write_synthetic_run(tmp_path / "old", SyntheticRun(name="old", trials=16))
    trials = pd.read_csv(folder / "trials.csv")
    old = int(((trials["state"] == "COMPLETE") & ~trials["trained"]).sum())
    assert old > 0
    report = subprocess.run(nas_cmd("report", str(folder)), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert f"| rejected before training | {old} (broke a cheap constraint) |" in (folder / "report.md").read_text()
