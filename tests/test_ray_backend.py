"""The Ray Tune backend (``nas search --backend ray``) on a local 2-CPU Ray instance, and on a cluster
started with ``ray start --head`` on loopback with token authentication (the README's many-machines recipe)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml

from nas.search import search as local_search

from _runs import nas_cmd, study_of, write

ROOT = Path(__file__).resolve().parents[1]

#: Tiny networks on the synthetic dataset; a size limit that rejects some candidates before training.
TINY = {"name": "tiny", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "constraints": {"size_kb": {"max": 100}}, "budget": {"trials": 5},
        "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128}, "seed": 0}


def sessions(folder: Path) -> list[dict]:
    return json.loads((folder / "ray" / "sessions.json").read_text())


@pytest.mark.slow
def test_ray_search_is_the_local_search_and_nas_plot_reads_it(tmp_path: Path) -> None:
    from nas.search import ray as ray_backend

    exp = write(tmp_path, TINY)
    out = tmp_path / "ray-run"
    result = ray_backend.search(exp, folder=out, num_cpus=2, progress=False)
    study = study_of(out, "tiny")
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["number"]) == [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert result.trials == 5
    # the constraint is set on the Optuna side as the local backend sets it: rejected ones are not trained,
    # and are PRUNED (issue 18)
    assert (trials["c:size_kb"] > 0).any() and (trials["c:size_kb"] <= 0).any()
    assert (trials["trained"] == (trials["c:size_kb"] <= 0)).all()
    assert (trials["state"] == trials["trained"].map({True: "COMPLETE", False: "PRUNED"})).all()
    assert sorted(pd.read_csv(out / "front.csv")["number"]) == sorted(t.number for t in study.best_trials)
    assert all(t.user_attrs["backend"] == "ray" for t in study.trials)
    assert sessions(out) == [{**sessions(out)[0], "name": "session-1", "trials": 5, "finished": True}]

    # the same objective: the same seed draws the same candidates and trains them to the same accuracy
    local = tmp_path / "local-run"
    local_search(exp, folder=local, progress=False)
    cols = ["number", "state", "accuracy", "madds", "size_kb", "feasible", "pareto", "trained", "label", "candidate"]
    pd.testing.assert_frame_equal(trials[cols], pd.read_csv(local / "trials.csv")[cols])

    done = subprocess.run(nas_cmd("plot", str(out), "--what", "front,hypervolume"), capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "plots" / "front.png").stat().st_size > 10_000
    assert (out / "plots" / "hypervolume.png").stat().st_size > 10_000


def _finished(out: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    if not (out / "run.json").exists():  # written once the study exists
        return []
    return [t for t in study_of(out, name).trials if t.state.is_finished()]


@pytest.mark.slow
def test_an_interrupted_ray_search_resumes_with_tuner_restore_then_grows(tmp_path: Path) -> None:
    exp = write(tmp_path, {**TINY, "name": "resume", "constraints": {}, "budget": {"trials": 4},
                           "proxy": {"epochs": 2, "pruner": "median", "batch_size": 128}})
    out = tmp_path / "run"
    args = nas_cmd("search", str(exp), "--backend", "ray", "--out", str(out), "--no-progress")
    env = {**os.environ, "NAS_RAY_CPUS": "2"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _finished(out, "resume") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
    running = [t.number for t in study_of(out, "resume").trials if t.state == optuna.trial.TrialState.RUNNING]
    proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state and stops
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    hint = re.search(r"Run `([^`]+)` again to resume", err)  # our words, not Tune's
    assert hint and "--backend ray" in hint.group(1) and "Tuner.restore" not in err, err
    assert sessions(out)[0]["finished"] is False
    assert running, "no trial was running when the search was interrupted"

    # Run again with a larger budget: session-1 is restored and finished, then session-2 runs the 2 more trials.
    done = subprocess.run([*args, "--trials", "6"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [(s["name"], s["trials"], s["finished"]) for s in sessions(out)] == [
        ("session-1", 4, True), ("session-2", 2, True)]
    study = study_of(out, "resume")
    states = {t.number: t.state.name for t in study.trials}
    assert sorted(states) == [0, 1, 2, 3, 4, 5] and set(states.values()) <= {"COMPLETE", "PRUNED"}
    # the trials cut off by the interruption were finished by the restored Tune trials, not failed and retried
    assert all(states[n] in ("COMPLETE", "PRUNED") for n in running)
    assert sorted(pd.read_csv(out / "trials.csv")["number"]) == [0, 1, 2, 3, 4, 5]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ray_search_on_a_cluster_address_with_its_token(tmp_path: Path) -> None:
    """The README's recipe on loopback: ``ray start --head`` with a token, ``nas search --address``."""
    token = "nas-test-" + os.urandom(12).hex()
    port = _free_port()
    head_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray_bin = str(Path(sys.executable).parent / "ray")
    # Its own temp folder (short: Ray's socket paths must fit 107 bytes), so that no address file of this
    # cluster is left where other ``ray.init()`` calls on the machine would look.
    temp = tempfile.mkdtemp(prefix="nasray")
    head = subprocess.Popen([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", temp, "--block"],
                            env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        exp = write(tmp_path, {"name": "cluster", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
                               "constraints": {"size_kb": {"max": 50}}, "budget": {"trials": 6}, "seed": 3})
        out = tmp_path / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"RAY_AUTH_TOKEN": token}
        done = subprocess.run(nas_cmd("search", str(exp), "--backend", "ray", "--address", f"127.0.0.1:{port}",
                                      "--out", str(out), "--no-progress"),
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert "cluster: 6 trials" in done.stdout
        trials = pd.read_csv(out / "trials.csv")
        assert len(trials) == 6 and set(trials["state"]) == {"COMPLETE"} and not trials["trained"].any()
    finally:
        head.terminate()  # ray start --block stops the processes it started
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_restored_trial_continues_the_proxy_training_from_its_checkpoint(tmp_path: Path) -> None:
    """The trial side of a restore, without Ray, through the evaluator seam: dense epochs, a safetensors
    checkpoint after epoch 1, then the rest of the dense phase and the compressed last epoch, numbered on
    from the checkpoint."""
    from nas.checkpoint import read_checkpoint, save_checkpoint
    from nas.experiment import parse_experiment
    from nas.search import Checkpoint, Progress, TrainEvaluator, prepare

    exp = parse_experiment(yaml.safe_dump({**TINY, "proxy": {"epochs": 3, "batch_size": 128}}))
    setup = prepare(exp)
    candidate = next(c for c in (setup.space.random(s) for s in range(50))
                     if c.compression.quantization != "none" and c.compression.lowrank_ratio is None)
    path = tmp_path / "model.safetensors"

    class Saving(Progress):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def report(self, epoch: int, accuracy: float, model: Any, last: bool) -> bool:
            self.seen.append(epoch)
            if epoch == 1:
                save_checkpoint(path, model, candidate, extra={"epoch": 1, "history": [accuracy]})
            return False

    class Restoring(Saving):
        def restored(self) -> Checkpoint | None:
            tensors, meta = read_checkpoint(path)  # the checkpoint holds the dense weights
            return Checkpoint(meta["extra"]["epoch"], meta["extra"]["history"], tensors)

    first = Saving()
    outcome = TrainEvaluator(setup).evaluate(candidate, 7, first)
    assert first.seen == [1, 2, 3] and outcome.state == "COMPLETE" and outcome.epochs == 3
    saved = read_checkpoint(path)[1]["extra"]["history"]
    second = Restoring()
    outcome = TrainEvaluator(setup).evaluate(candidate, 7, second)
    assert second.seen == [2, 3] and outcome.state == "COMPLETE" and outcome.epochs == 3
    assert len(outcome.history) == 3 and outcome.history[0] == saved[0]
