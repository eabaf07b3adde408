"""A study shared on PostgreSQL by independent workers, one of them killed mid-trial (issue #8).

A real server on loopback (tests/_postgres.py), three ``nas search EXP --storage URL`` processes started
as three machines would start them: each with its own run folder and its own host name
(``NAS_WORKER_HOST``), so the pid reaper, which judges only trials of its own node, leaves the killed
worker's trial alone and only the heartbeat can find it, as across real machines. The heartbeat interval
and grace period are shortened through ``NAS_HEARTBEAT_S`` / ``NAS_HEARTBEAT_GRACE_S``; the survivors,
once the budget is met, wait up to the grace period for trials still RUNNING, so the dead worker's trial
is failed and its parameters retried without any resume pass.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from _postgres import missing_reason, open_at_once, postgres_server
from nas.search import driver_url

BUDGET = 6
EXPERIMENT = {"name": "shared", "space": "mobilenetv2-tiny", "dataset": "synthetic",
              "objectives": ["accuracy", "madds"], "budget": {"trials": BUDGET}, "sampler": "random",
              "proxy": {"epochs": 3, "pruner": "none", "batch_size": 128}, "seed": 0}
HEARTBEAT = {"NAS_HEARTBEAT_S": "1", "NAS_HEARTBEAT_GRACE_S": "3"}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):  # CI's set-up installs PostgreSQL: missing there is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def storage(postgres_url: str) -> Iterator[optuna.storages.RDBStorage]:
    """The test's own connection to the server (closed after: no connection left to the garbage collector)."""
    st = optuna.storages.RDBStorage(driver_url(postgres_url))
    yield st
    st.remove_session()
    st.engine.dispose()


def running_on(storage: optuna.storages.RDBStorage, host: str) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of worker ``host`` whose candidate is drawn (the trial is under way)."""
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return []
    return [t for t in trials if t.user_attrs.get("worker", "").startswith(f"{host}:") and "candidate" in t.user_attrs]


def test_three_workers_share_a_study_and_a_killed_workers_trial_is_retried(
        postgres_url: str, storage: optuna.storages.RDBStorage, tmp_path: Path) -> None:
    exp = tmp_path / "shared.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT))
    procs = []
    for i in range(3):
        env = {**os.environ, **HEARTBEAT, "NAS_WORKER_HOST": f"machine-{i}"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nas", "search", str(exp), "--storage", postgres_url, "--out", str(tmp_path / f"run{i}"),
             "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        end = time.monotonic() + 60
        while not (victims := running_on(storage, "machine-1")):
            assert time.monotonic() < end and procs[1].poll() is None, "worker machine-1 never had a trial under way"
            time.sleep(0.05)
        os.kill(procs[1].pid, signal.SIGKILL)
        (victim,) = victims
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[1].returncode == -signal.SIGKILL
    for i in (0, 2):
        assert procs[i].returncode == 0, outputs[i][1]

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # no duplicated or missing numbers
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))  # none stuck
    # Every trial accounted for: the victim failed, the rest complete; the budget counts only the complete.
    assert trials[victim.number].state == TrialState.FAIL
    assert {t.state for t in trials if t.number != victim.number} == {TrialState.COMPLETE}
    assert BUDGET <= len(trials) - 1 <= BUDGET + 2  # each survivor may finish one trial past the budget
    # The killed trial's parameters were retried exactly once, and completed.
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    assert not retry.user_attrs["worker"].startswith("machine-1:")
    # Found by the heartbeat (the reaper records "died mid-trial" in fail_reason; it did not act).
    assert not trials[victim.number].user_attrs.get("fail_reason")
    proxy = optuna.load_study(study_name="shared:proxy", storage=storage)
    assert not proxy.get_trials(states=(TrialState.RUNNING,))  # its proxy-training trial was failed too
    # Independent workers do not draw alike: every first draw differs.
    firsts = [t.params for t in trials if "failed_trial" not in t.system_attrs]
    assert len({json.dumps(p, sort_keys=True) for p in firsts}) == len(firsts)
    assert {t.user_attrs["worker"].split(":")[0] for t in trials} == {"machine-0", "machine-1", "machine-2"}

    # Each survivor's run folder holds the whole study; all three describe the same experiment.
    metas = [json.loads((tmp_path / f"run{i}" / "run.json").read_text()) for i in range(3)]
    assert len({m["digest"] for m in metas}) == 1
    assert len({json.dumps(m["objectives"]) for m in metas}) == 1  # same reference points
    password = postgres_url.rsplit("@", 1)[0].rsplit(":", 1)[1]
    assert all(password not in json.dumps(m) and m["storage"].startswith("postgresql://nas:***@") for m in metas)
    # (A survivor leaves once no trial is RUNNING, or after the grace period: the other's last trial may be
    # missing from its folder, never the victim and its retry.)
    for i in (0, 2):
        table = pd.read_csv(tmp_path / f"run{i}" / "trials.csv").set_index("number")
        assert {victim.number, retry.number} <= set(table.index) <= set(numbers)
        assert "no heartbeat" in table.loc[victim.number, "fail_reason"]
        assert table.loc[retry.number, "retry_of"] == victim.number
        summary = re.search(r"^shared: (\d+) trials", outputs[i][0], re.MULTILINE)
        assert summary is not None and BUDGET <= int(summary[1]) <= len(trials) - 1, outputs[i][0]


def test_workers_started_at_once_all_open_a_fresh_study(postgres_url: str, storage: optuna.storages.RDBStorage) -> None:
    """Several machines starting together race to create Optuna's tables; none may fail for it."""
    import sqlalchemy

    base = postgres_url.rsplit("/", 1)[0]
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text("CREATE DATABASE fresh"))
    for done in open_at_once(f"{base}/fresh", n=4):
        assert done.returncode == 0, done.stderr
