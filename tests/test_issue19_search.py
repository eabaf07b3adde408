"""Issue 19, the search side, through the `nas` command as a user runs it: budgets, profile coverage,
resumes (edited space, storage, missing study, Ctrl+C), paths in experiment files, hardware tables
built here and for another input size."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from _runs import nas_cmd, without_warnings, write

#: A small space (one stage) that the shipped reference-cpu table was not built for (input 1x12x12, 4 classes).
SPACE = {
    "name": "hw-test", "family": "mobilenetv2", "input_shape": [1, 12, 12], "num_classes": 4,
    "width_multiplier": [1.0], "stem": {"channels": 8},
    "stages": [{"depth": [1, 2], "width": [8, 16], "expansion": [2], "kernel": [3, 5], "stride": 2}],
    "head": {"channels": [16]},
}
#: A search with no training (thousands of trials a minute).
CHEAP = {"name": "cheap", "space": "lenet", "objectives": ["madds", "params"], "population": 8}


def nas(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and without_warnings(result.stderr).count("\n") == 1, result.stderr
    return without_warnings(result.stderr)


def trials(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "trials.csv")


# ------------------------------------------------------------------ item 3: budgets


@pytest.mark.slow
def test_a_minutes_only_budget_has_no_hidden_trial_limit(tmp_path: Path) -> None:
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 41}})
    assert nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path).returncode == 0
    assert len(trials(tmp_path / "run")) == 41
    # The same run with a time budget only: 41 trials are past any default trial count, yet it goes on.
    write(tmp_path, {**CHEAP, "budget": {"minutes": 0.05}})
    result = nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(trials(tmp_path / "run")) > 41


def test_an_empty_budget_is_refused_and_no_budget_section_is_forty_trials(tmp_path: Path) -> None:
    exp = write(tmp_path, {**CHEAP, "budget": {}})
    err = one_line_error(nas("search", str(exp), "--out", "run", cwd=tmp_path))
    assert "budget: give trials, minutes or both" in err and "40 trials" in err
    assert not (tmp_path / "run").exists()
    exp = write(tmp_path, {**CHEAP, "budget": {"minutes": 0.01}})
    assert nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["budget"] == {"trials": None, "minutes": 0.01}


# ------------------------------------------------------------------ item 5: coverage only where latency is used


def test_a_profile_is_checked_only_where_an_objective_or_constraint_uses_it(tmp_path: Path) -> None:
    write(tmp_path, SPACE, "space.yaml")
    base = {"name": "nolat", "space": "space.yaml", "budget": {"trials": 3}}  # profiles: [reference-cpu] by default
    exp = write(tmp_path, {**base, "objectives": ["madds", "size_kb"]})
    result = nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = trials(tmp_path / "run")
    assert list(table["state"]) == ["COMPLETE"] * 3 and table["latency_ms"].isna().all()
    for patch in ({"objectives": ["madds", "latency_ms"]},
                  {"objectives": ["madds"], "constraints": {"latency_ms": {"max": 5}}}):
        exp = write(tmp_path, {**base, **patch, "name": "lat"})
        err = one_line_error(nas("search", str(exp), "--out", "lat", cwd=tmp_path))
        assert "profile 'reference-cpu'" in err and "--input 1x12x12 --classes 4" in err
        assert not (tmp_path / "lat").exists()


# ------------------------------------------------------------------ item 6: an edited space, a session that only failed


def test_an_edited_space_file_is_refused_on_resume(tmp_path: Path) -> None:
    space = write(tmp_path, SPACE, "space.yaml")
    exp = write(tmp_path, {"name": "edit", "space": "space.yaml", "objectives": ["madds", "size_kb"],
                           "budget": {"trials": 2}})
    assert nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path).returncode == 0
    text = space.read_text()
    space.write_text("# a comment changes nothing that is drawn\n" + text)
    assert nas("search", str(exp), "--out", "run", "--trials", "3", "--no-progress", cwd=tmp_path).returncode == 0
    edited = {**SPACE, "stages": [{**SPACE["stages"][0], "kernel": [3, 7]}]}
    write(tmp_path, edited, "space.yaml")
    err = one_line_error(nas("search", str(exp), "--out", "run", "--trials", "5", "--no-progress", cwd=tmp_path))
    assert f"{space}: the search space changed since" in err
    assert len(trials(tmp_path / "run")) == 3


def test_a_session_whose_every_trial_failed_does_not_exit_0(tmp_path: Path) -> None:
    exp = write(tmp_path, {"name": "diverge", "space": "mobilenetv2-tiny", "dataset": "synthetic",
                           "objectives": ["accuracy", "madds"], "budget": {"trials": 2},
                           "proxy": {"epochs": 1, "pruner": "none", "lr": 1e9, "batch_size": 128}})
    result = nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path)
    err = one_line_error(result)
    assert "every one of the 2 trials of this session failed" in err and "loss" in err
    assert "2 trials (2 fail)" in result.stdout  # the results are still written and summed up
    assert list(trials(tmp_path / "run")["state"]) == ["FAIL", "FAIL"]


# ------------------------------------------------------------------ item 7: the storage on resume


def test_resume_reads_the_storage_back_from_run_json(tmp_path: Path) -> None:
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 3}})
    args = ("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress")
    assert nas(*args, "--storage", "sqlite:///other.db", cwd=tmp_path).returncode == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["storage"] == f"sqlite:///{(tmp_path / 'other.db').resolve()}"  # relative: resolved when started
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = nas(*args, "--trials", "5", cwd=elsewhere)  # no --storage, another folder
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="cheap", storage=f"sqlite:///{tmp_path / 'other.db'}")
    assert len(study.trials) == 5 and not (tmp_path / "run" / "study.db").exists()
    assert not list(elsewhere.iterdir())


def test_a_missing_study_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    exp = write(tmp_path, {**CHEAP, "budget": {"trials": 2}})
    assert nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path).returncode == 0
    db = tmp_path / "run" / "study.db"
    db.unlink()
    for wal in tmp_path.glob("run/study.db-*"):
        wal.unlink()
    err = one_line_error(nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path))
    assert str(db.resolve()) in err and "does not exist" in err
    assert not db.exists()
    # Another storage than the one run.json records: also one line.
    other = write(tmp_path, {**CHEAP, "name": "other", "budget": {"trials": 1}}, "other.yaml")
    assert nas("search", str(other), "--out", "o", "--no-progress", cwd=tmp_path).returncode == 0
    err = one_line_error(nas("search", str(exp), "--out", "run", "--storage", "sqlite:///o/study.db",
                             "--no-progress", cwd=tmp_path))
    assert "uses storage" in err


# ------------------------------------------------------------------ item 8: the Ctrl+C hint


def _started(folder: Path, name: str) -> bool:
    if not (folder / "study.db").is_file():
        return False
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")
        return any("candidate" in t.user_attrs for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    except KeyError:
        return False


@pytest.mark.slow
def test_the_interrupt_hint_is_the_whole_command_and_it_resumes(tmp_path: Path) -> None:
    exp = write(tmp_path, {"name": "sigint", "space": "mobilenetv2-tiny", "dataset": "synthetic",
                           "objectives": ["accuracy", "madds"], "budget": {"trials": 2},
                           "proxy": {"epochs": 4, "pruner": "none"}})
    out = tmp_path / "my runs" / "sigint"  # a folder that needs quoting
    proc = subprocess.Popen(nas_cmd("search", str(exp), "--out", str(out), "--no-progress"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts slowly
        while not _started(out, "sigint") and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130, err
    hint = re.search(r"Run `([^`]+)` again to resume", err)
    assert hint is not None, err
    words = shlex.split(hint[1])
    assert words[:3] == ["nas", "search", str(exp)] and words[words.index("--out") + 1] == str(out)
    result = subprocess.run(nas_cmd(*words[1:]), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (trials(out)["state"] == "COMPLETE").sum() == 2
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["my runs"]  # no second run elsewhere


# ------------------------------------------------------------------ item 10: paths from the experiment file


def _fake_fashion_mnist(folder: Path, n_train: int = 200, n_test: int = 50) -> None:
    """The four IDX files of a small Fashion-MNIST lookalike (28x28 images, 10 classes)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{stem}-images-idx3-ubyte").write_bytes(
            (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes())
        (folder / f"{stem}-labels-idx1-ubyte").write_bytes(
            (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())


def test_dataset_root_and_profile_files_resolve_from_the_experiment_file(tmp_path: Path) -> None:
    sub = tmp_path / "exp"
    _fake_fashion_mnist(sub / "data")
    tables = sub / "tables"
    tables.mkdir()
    env = {"NAS_HARDWARE": str(tmp_path / "unused")}
    result = nas("hardware", "build", "--space", "lenet", "--name", "mine", "--out", str(tables), "--rounds", "2",
                 cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"profiles: [{(tables / 'mine.json').resolve()}]" in result.stdout
    exp = write(sub, {"name": "paths", "space": "lenet", "dataset": {"name": "fashion-mnist", "root": "data"},
                      "objectives": ["madds", {"latency_ms": "tables/mine.json"}], "profiles": [],
                      "budget": {"trials": 2}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = nas("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    table = trials(tmp_path / "run")
    assert table["latency_ms"].notna().all()
    assert json.loads(table["candidate"][0])["arch"]["input_shape"] in ([1, 28, 28], [784])  # the dataset's shape
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["experiment_dir"] == str(sub.resolve())


# ------------------------------------------------------------------ items 11, 12: tables built here, other input sizes


def test_a_table_built_here_is_found_by_name_from_any_folder(tmp_path: Path) -> None:
    write(tmp_path, SPACE, "space.yaml")
    env = {"NAS_HARDWARE": str(tmp_path / "tables")}
    result = nas("hardware", "build", "--space", "space.yaml", "--name", "mine", "--rounds", "2", cwd=tmp_path,
                 env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tables" / "mine.json").is_file() and not (tmp_path / "hardware").exists()
    assert "profiles: [mine]" in result.stdout and str(tmp_path / "tables" / "mine.json") in result.stdout
    listed = nas("hardware", "list", "--no-plugins", cwd=tmp_path, env=env)
    assert re.search(r"^mine\s+measured\s+built here", listed.stdout, re.M), listed.stdout
    exp = write(tmp_path, {"name": "mine", "space": "space.yaml", "objectives": ["madds", "latency_ms"],
                           "profiles": ["mine"], "budget": {"trials": 2}}, "exp.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = nas("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert trials(tmp_path / "run")["latency_ms"].notna().all()
    # A built-in name would be shadowed by the built-in table: refused, with a name that works.
    err = one_line_error(nas("hardware", "build", "--space", "space.yaml", "--name", "reference-cpu", cwd=tmp_path,
                             env=env))
    assert "--name reference-cpu-here" in err


def test_a_table_for_another_input_size_is_built_by_the_command_the_error_gives(tmp_path: Path) -> None:
    write(tmp_path, SPACE, "space.yaml")
    env = {"NAS_HARDWARE": str(tmp_path / "tables")}
    assert nas("hardware", "build", "--space", "space.yaml", "--name", "mine", "--rounds", "2", cwd=tmp_path,
               env=env).returncode == 0
    # synthetic is 1x8x8 with 10 classes: the search fits the space to it, the table has 1x12x12 and 4 classes
    exp = write(tmp_path, {"name": "fit", "space": "space.yaml", "dataset": "synthetic",
                           "objectives": ["madds", "latency_ms"], "profiles": ["mine"], "budget": {"trials": 2}})
    err = one_line_error(nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path, env=env))
    assert "at input 1x8x8 with 10 classes" in err and "hw-test at 1x12x12" in err
    command = re.search(r"`(nas hardware build [^`]+)`", err)
    assert command is not None, err
    words = shlex.split(command[1])
    assert words[words.index("--input") + 1] == "1x8x8" and words[words.index("--classes") + 1] == "10"
    result = nas(*words[1:], "--rounds", "2", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    spaces = json.loads((tmp_path / "tables" / "mine.json").read_text())["spaces"]
    assert spaces == {"hw-test": [1, 12, 12], "hw-test@1x8x8": [1, 8, 8]}  # the first record is kept
    result = nas("search", str(exp), "--out", "run", "--no-progress", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert trials(tmp_path / "run")["latency_ms"].notna().all()
    err = one_line_error(nas("hardware", "build", "--space", "space.yaml", "--name", "x", "--input", "28x28",
                             cwd=tmp_path, env=env))
    assert "--input must be CxHxW" in err
