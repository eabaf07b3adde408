"""Reliability tally (issue #9): bad inputs tried, faults injected, trials lost.

Three parts, all on real files, real studies and real processes:

- inputs: a catalogue of bad inputs through the ``nas`` command (experiment, space, profile, dataset,
  checkpoint and candidate files; unknown names), each must exit 2 with one line; then random
  mutations of space and experiment files (seeded), each must either load with every drawn candidate
  built, run and costed, or be rejected with one clear line -- anything else counts as a crash;
- faults: a trial that raises, one that diverges (NaN), one over its time budget, Ctrl+C and SIGKILL
  of the driver mid-trial, SIGKILL of one of three local workers, a worker on another "machine"
  (another host name, shared study) killed and found by the heartbeat, a disk that fills up while
  results are written; after each, the run is resumed and every trial finished before the fault is
  checked to be still there with the same values, and every killed trial retried;
- load: 8 local worker processes on one study for 200 cheap trials (latency + size objectives).

Writes ``results/bench/reliability.json`` and a row of ``results/bench/README.md``.

    .venv/bin/python benchmarks/reliability.py
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import io
import json
import logging
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
import yaml

import nas
from _common import write_result
from nas.checkpoint import save_checkpoint
from nas.cli import main as nas_main
from nas.errors import NasError
from nas.experiment import parse_experiment
from nas.search import cheap_costs, prepare, search

ROOT = Path(__file__).resolve().parent.parent
TINY = {"name": "tiny", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "budget": {"trials": 3}, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128}, "seed": 0}
SLOW = {**TINY, "name": "slow", "budget": {"trials": 3}, "proxy": {"epochs": 6, "pruner": "none"}}
CHEAP = {"name": "cheap", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
         "budget": {"trials": 8}, "sampler": "random", "seed": 1}


def dump(folder: Path, name: str, data: Any) -> str:
    path = folder / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def cli(argv: list[str]) -> tuple[int, str]:
    """``nas ARGV`` in this process: (exit code, stderr); an exception escaping main() is reported as code -1."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = nas_main(argv)
        except BaseException as exc:  # noqa: BLE001 - a crash is what this counts
            return -1, f"{type(exc).__name__}: {exc}"
    return code, err.getvalue()


# ----------------------------------------------------------------------------- inputs


def _fashion(folder: Path, images: np.ndarray, labels: np.ndarray) -> str:
    folder.mkdir()
    for prefix in ("train", "t10k"):
        for name, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(folder / f"{prefix}-{name}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return str(folder)


def bad_input_catalogue(d: Path) -> dict[str, list[str]]:
    exp = {**CHEAP, "budget": {"trials": 1}}
    trained = {"objectives": ["accuracy", "madds"]}
    lut = json.loads((ROOT / "hardware" / "reference-cpu.json").read_text())
    lut["entries"] = dict(list(sorted(lut["entries"].items()))[::2])
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    ckpt = d / "ck.safetensors"
    save_checkpoint(ckpt, nas.build_model(cand.arch), cand)
    other = dump(d, "other.json", nas.load_space("mobilenetv2-tiny").random(5).to_json())
    binary = dump(d, "binary.yaml", b"\xff\xfe\x00 not text")

    def search_with(name: str, **changes: Any) -> list[str]:
        return ["search", dump(d, f"{name}.yaml", {**exp, **changes}), "--out", str(d / f"run-{name}"), "--no-progress"]

    return {
        "experiment: malformed YAML": ["search", dump(d, "e1.yaml", "name: x\nspace: [\n")],
        "experiment: not a mapping": ["search", dump(d, "e2.yaml", "- a\n")],
        "experiment: empty": ["search", dump(d, "e3.yaml", "")],
        "experiment: wrong type": search_with("e4", budget={"trials": "many"}),
        "experiment: unknown field": search_with("e5", speed=3),
        "experiment: python tag": ["search", dump(d, "e6.yaml", "!!python/object/apply:os.system ['true']\n")],
        "experiment: not UTF-8": ["search", binary],
        "experiment: missing file": ["search", str(d / "nope.yaml")],
        "unknown space": search_with("n1", space="mobilenetv9"),
        "unknown dataset": search_with("n2", dataset="mnist-9", **trained),
        "unknown profile": search_with("n3", profiles=["pixel-99"]),
        "unknown sampler": search_with("n4", sampler="cmaes"),
        "unknown objective": search_with("n5", objectives=["speed"]),
        "space: malformed YAML": search_with("s1", space=dump(d, "sp.yaml", "family: mobilenetv2\nstages: [\n")),
        "space: schema": ["sample", dump(d, "sp2.yaml", "family: mobilenetv2\nname: x\ninput_shape: [3, 32]\n")],
        "space: not UTF-8": ["sample", binary],
        "profile: malformed YAML": search_with("p1", profiles=[dump(d, "r1.yaml", "format: nas-roofline/1\nname: [x\n")]),
        "profile: schema": search_with("p2", profiles=[dump(d, "r2.yaml", "format: nas-roofline/1\nname: x\n")]),
        "profile: malformed JSON": ["sample", "mobilenetv2-tiny", "--profile", dump(d, "t.json", "{not json")],
        "profile: missing operators": search_with("p3", profiles=[dump(d, "half.json", json.dumps(lut))]),
        "dataset: folder missing": search_with("d1", dataset={"name": "fashion-mnist", "root": str(d / "none")}, **trained),
        "dataset: counts differ": search_with("d2", dataset={"name": "fashion-mnist", "root": _fashion(
            d / "fm1", np.zeros((12, 28, 28), np.uint8), np.zeros(10, np.uint8))}, **trained),
        "dataset: flat images": search_with("d3", dataset={"name": "fashion-mnist", "root": _fashion(
            d / "fm2", np.zeros((12, 784), np.uint8), np.zeros(12, np.uint8))}, **trained),
        "checkpoint: another architecture": ["compress", other, "--weights", str(ckpt)],
        "checkpoint: truncated": ["finetune", "--init", dump(d, "cut.safetensors", ckpt.read_bytes()[:-500]),
                                  "--dataset", "synthetic", "-o", str(d / "y.safetensors")],
        "checkpoint: foreign file": ["compress", dump(d, "foreign.safetensors", "hello")],
        "candidate: malformed": ["cost", dump(d, "c.json", '{"arch": {"input_shape": [1, 8')],
        "candidate: not UTF-8": ["cost", dump(d, "c2.json", b"\xff\xfe")],
    }


def _mutate(base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One to three random edits of a space file: narrow a choice list, set a field to a random value,
    delete a field or add an unknown one."""
    data = json.loads(json.dumps(base))
    values = [0, 1, 2, 3, 5, 8, 16, -1, 0.5, 1.5, math.nan, None, True, "", "x", "depthwise", "off", [1], [3, 5],
              [0.5, 1.0], [8, 16], ["grouped"], [], [1, 8, 8], {"x": 1}]
    for _ in range(rng.randint(1, 3)):
        paths: list[tuple[Any, ...]] = []

        def walk(node: Any, prefix: tuple[Any, ...]) -> None:
            if prefix:
                paths.append(prefix)
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                walk(v, (*prefix, k))

        walk(data, ())
        if not paths:
            break
        *parents, leaf = rng.choice(paths)
        node = data
        for part in parents:
            node = node[part]
        action = rng.choice(["narrow", "narrow", "narrow", "set", "delete", "extra"])
        current = node[leaf]
        if action == "narrow" and isinstance(current, list) and current:
            start = rng.randrange(len(current))
            node[leaf] = current[start:start + 2]
        elif action == "narrow" and isinstance(current, (int, float)) and not isinstance(current, bool):
            node[leaf] = type(current)(current / 2)
        elif action == "delete":
            del node[leaf]
        elif action == "extra" and isinstance(node, dict):
            node["extra_field"] = rng.choice(values)
        else:
            node[leaf] = rng.choice(values)
    return data


def _one_line(exc: BaseException) -> bool:
    return isinstance(exc, NasError) and bool(str(exc)) and "\n" not in str(exc)


def _costed(space: nas.Space, cand: nas.Candidate) -> None:
    model = nas.build_model(cand.arch).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, *cand.arch.input_shape))
    assert tuple(out.shape) == (1, cand.arch.num_classes)
    assert nas.count(cand.arch).madds > 0 and nas.size_bits(cand.arch, cand.compression) > 0
    assert 0 < nas.get_profile("raspberry-pi-4").latency_ms(cand.arch) < math.inf


def generated_spaces(d: Path, n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    bases = {name: yaml.safe_load((nas.space.BUILTIN_DIR / f"{name}.yaml").read_text())
             for name in ("mobilenetv2-tiny", "lenet")}
    tally: Counter[str] = Counter()
    crashes = []
    for i in range(n):
        path = d / f"space-{i}.yaml"
        path.write_text(yaml.safe_dump(_mutate(bases[rng.choice(sorted(bases))], rng)))
        try:
            space = nas.load_space(path)
        except Exception as exc:  # noqa: BLE001
            tally["rejected, one line" if _one_line(exc) else "crashed"] += 1
            if not _one_line(exc):
                crashes.append(f"{path.name}: {type(exc).__name__}: {exc}"[:300])
            continue
        try:
            for s in range(2):
                _costed(space, space.random(s))
                tally["candidates built and costed"] += 1
            tally["loaded"] += 1
        except Exception as exc:  # noqa: BLE001 - loaded, then failed: the "in between" this counts
            tally["crashed"] += 1
            crashes.append(f"{path.name}: loaded, then {type(exc).__name__}: {exc}"[:300])
    return {"tried": n, **tally, "crashes": crashes}


def generated_experiments(d: Path, n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    (d / "good-space.yaml").write_text((nas.space.BUILTIN_DIR / "mobilenetv2-tiny.yaml").read_text())
    fields: dict[str, tuple[list[Any], list[Any]]] = {
        "dataset": (["synthetic", "digits", {"name": "synthetic", "split_seed": 1}], ["nope", {"name": "x", "y": 1}]),
        "objectives": ([["accuracy", "madds"], ["latency_ms", "size_kb"], ["params"],
                        ["accuracy", {"latency_ms": "raspberry-pi-4"}]], [["speed"], [], "accuracy"]),
        "profiles": ([["reference-cpu"], ["raspberry-pi-4", "reference-cpu"]], [["pixel-99"], []]),
        "constraints": ([{"madds": {"max": 1e6}}, {"size_kb": {"max": 50}}, {"accuracy": {"min": 0.5}}],
                        [{"madds": {"min": 1}}, {"flops": {"max": 1}}]),
        "budget": ([{"trials": 3}, {"minutes": 1}], [{"trials": 0}, {"trials": None}]),
        "sampler": (["nsga2", "nsga3", "tpe", "random"], ["cmaes"]),
        "proxy": ([{"epochs": 1}, {"pruner": "halving"}], [{"epochs": 0}, {"pruner": "x"}]),
        "seed": ([0, 7], ["x"]),
    }
    tally: Counter[str] = Counter()
    crashes = []
    for i in range(n):
        data: dict[str, Any] = {"name": "a b" if rng.random() < 0.1 else "e",
                                "space": "nope" if rng.random() < 0.1 else rng.choice(
                                    ["mobilenetv2-tiny", "lenet", "good-space.yaml"])}
        for key, (valid, invalid) in fields.items():
            if rng.random() < 0.5:
                data[key] = rng.choice(invalid) if rng.random() < 0.15 else rng.choice(valid)
        if rng.random() < 0.05:
            data["speed"] = 1
        source = str(d / f"experiment-{i}.yaml")
        try:
            exp = parse_experiment(yaml.safe_dump(data), source)
            setup = prepare(exp, data=False)
        except Exception as exc:  # noqa: BLE001
            tally["rejected, one line" if _one_line(exc) else "crashed"] += 1
            if not _one_line(exc):
                crashes.append(f"{data}: {type(exc).__name__}: {exc}"[:300])
            continue
        try:
            study = optuna.create_study(directions=[o.direction for o in exp.objectives],
                                        sampler=optuna.samplers.RandomSampler(seed=i))
            for _ in range(2):
                cand = setup.space.sample(study.ask())
                costs = cheap_costs(setup, cand)
                assert all(math.isfinite(costs[o.name]) for o in exp.objectives if o.kind != "accuracy")
                _costed(setup.space, cand)
                tally["candidates built and costed"] += 1
            tally["loaded"] += 1
        except Exception as exc:  # noqa: BLE001
            tally["crashed"] += 1
            crashes.append(f"{data}: loaded, then {type(exc).__name__}: {exc}"[:300])
    return {"tried": n, **tally, "crashes": crashes}


# ----------------------------------------------------------------------------- faults


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def _storage(url: str) -> optuna.storages.RDBStorage:
    """One connection per study for all the polling (not a new engine every 50 ms)."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    return _STORAGES[url]


def _study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(f"sqlite:///{folder / 'study.db'}"))


def _finished(folder: Path, name: str) -> dict[int, tuple[float, ...] | None]:
    """Trial number -> values of the trials finished so far (COMPLETE; failed with their own reason)."""
    if not (folder / "run.json").exists():  # written once the study's tables exist
        return {}
    try:
        trials = _study(folder, name).trials
    except KeyError:
        return {}
    return {t.number: tuple(t.values) if t.values else None for t in trials if t.state.is_finished()}


def _lost(before: dict[int, Any], folder: Path, name: str) -> int:
    """Trials finished before the fault that the resumed study or its trials.csv no longer has as they were."""
    after = _finished(folder, name)
    table = pd.read_csv(folder / "trials.csv")
    return sum(1 for n, v in before.items() if after.get(n, "gone") != v or n not in set(table["number"]))


def _unretried(folder: Path, name: str, victims: list[optuna.trial.FrozenTrial]) -> int:
    trials = _study(folder, name).trials
    return sum(1 for v in victims if not any(t.number != v.number and t.params == v.params
                                             and t.state.name == "COMPLETE" for t in trials))


def _running(folder: Path, name: str, worker: str = "") -> list[optuna.trial.FrozenTrial]:
    if not (folder / "run.json").exists():
        return []
    try:
        trials = _study(folder, name).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return []
    return [t for t in trials if "candidate" in t.user_attrs and t.user_attrs.get("worker", "").startswith(worker)]


def _wait(predicate: Any, timeout: float = 600) -> Any:
    """Poll until ``predicate()`` is true; generous, since a loaded 2-core machine starts processes slowly."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise RuntimeError("timed out waiting")


def _nas(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "nas", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def fault_in_process(d: Path, kind: str) -> dict[str, Any]:
    """A trial that raises, diverges or overruns its time budget: failed with its reason, the search goes on."""
    import nas.train

    out = d / f"fault-{kind}"
    exp = dict(TINY)
    real = nas.train.train
    calls: list[int] = []
    if kind == "raises":
        def flaky(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("injected fault")
            return real(*args, **kwargs)
        nas.train.train = flaky  # type: ignore[assignment]
    elif kind == "nan":
        exp["proxy"] = {**TINY["proxy"], "lr": 1e9}
    else:
        exp["proxy"] = {"epochs": 2, "pruner": "none", "max_seconds": 1e-6}
    try:
        search(dump(d, f"{kind}.yaml", exp), folder=out, progress=False)
    finally:
        nas.train.train = real  # type: ignore[assignment]
    table = pd.read_csv(out / "trials.csv")
    failed = table[table["state"] == "FAIL"]
    proxy_running = len(optuna.load_study(study_name="tiny:proxy", storage=f"sqlite:///{out / 'study.db'}")
                        .get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    return {"fault": kind, "trials": len(table), "failed_with_reason": int(failed["fail_reason"].fillna("").str.len().gt(0).sum()),
            "failed_without_reason": int(failed["fail_reason"].fillna("").eq("").sum()),
            "budget_used": len(table) == exp["budget"]["trials"], "stuck_running": proxy_running, "lost": 0}


def fault_signal(d: Path, sig: signal.Signals) -> dict[str, Any]:
    """Ctrl+C or SIGKILL of the driver mid-trial, then resume."""
    out = d / f"fault-{sig.name}"
    exp = dump(d, f"{sig.name}.yaml", SLOW)
    proc = _nas("search", exp, "--out", str(out), "--no-progress")
    try:
        _wait(lambda: len(_finished(out, "slow")) >= 1 and _running(out, "slow"))
        before = _finished(out, "slow")
        (victim,) = _running(out, "slow")
        os.kill(proc.pid, sig)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    search(exp, folder=out, progress=False)
    return {"fault": f"{sig.name} of the driver mid-trial", "exit": proc.returncode, "lost": _lost(before, out, "slow"),
            "killed_trials": 1, "not_retried": _unretried(out, "slow", [victim]),
            "stuck_running": len(_running(out, "slow"))}


def fault_worker_killed(d: Path) -> dict[str, Any]:
    """SIGKILL of one of three local workers (--workers 3) mid-trial: the pid reaper fails and retries it."""
    out = d / "fault-worker"
    exp = dump(d, "workers.yaml", {**SLOW, "budget": {"trials": 6}, "proxy": {"epochs": 4, "pruner": "none"}})
    proc = _nas("search", exp, "--out", str(out), "--workers", "3", "--no-progress")
    try:
        def others() -> list[optuna.trial.FrozenTrial]:
            return [t for t in _running(out, "slow") if not t.user_attrs["worker"].endswith(f":{proc.pid}")]
        (victim, *_) = _wait(others)
        before = _finished(out, "slow")
        os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
        proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.communicate()
    search(exp, folder=out, progress=False)  # the driver reported the dead worker; resume to finish
    return {"fault": "SIGKILL of one of 3 local workers mid-trial", "lost": _lost(before, out, "slow"),
            "killed_trials": 1, "not_retried": _unretried(out, "slow", [victim]),
            "stuck_running": len(_running(out, "slow"))}


def fault_heartbeat(d: Path) -> dict[str, Any]:
    """Two independent workers (two host names, as two machines) on one shared study; one is killed
    mid-trial and only the heartbeat can tell (1 s interval, 3 s grace period)."""
    storage = f"sqlite:///{d / 'shared.db'}"
    exp = dump(d, "shared.yaml", {**SLOW, "name": "shared", "budget": {"trials": 5}, "proxy": {"epochs": 3, "pruner": "none"}})
    env = {"NAS_HEARTBEAT_S": "1", "NAS_HEARTBEAT_GRACE_S": "3"}
    procs = [_nas("search", exp, "--storage", storage, "--out", str(d / f"shared-{h}"), "--no-progress",
                  env={**env, "NAS_WORKER_HOST": h}) for h in ("machine-a", "machine-b")]
    study = lambda: optuna.load_study(study_name="shared", storage=_storage(storage))  # noqa: E731

    def victim_running() -> list[optuna.trial.FrozenTrial]:
        if not all((d / f"shared-{h}" / "run.json").exists() for h in ("machine-a", "machine-b")):
            return []
        try:
            return [t for t in study().get_trials(states=(optuna.trial.TrialState.RUNNING,))
                    if "candidate" in t.user_attrs and t.user_attrs.get("worker", "").startswith("machine-b:")]
        except Exception:  # noqa: BLE001 - not created yet
            return []
    try:
        (victim,) = _wait(victim_running)
        before = {t.number: tuple(t.values) for t in study().trials if t.state.name == "COMPLETE"}
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[0].communicate(timeout=300)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    trials = study().trials
    after = {t.number: tuple(t.values) for t in trials if t.state.name == "COMPLETE"}
    return {"fault": "worker on another host killed mid-trial (heartbeat)", "exit": procs[0].returncode,
            "lost": sum(1 for n, v in before.items() if after.get(n) != v), "killed_trials": 1,
            "not_retried": int(not any(t.system_attrs.get("failed_trial") == victim.number and t.state.name == "COMPLETE"
                                       for t in trials)),
            "stuck_running": sum(t.state.name in ("RUNNING", "WAITING") for t in trials)}


def fault_disk_full(d: Path) -> dict[str, Any]:
    """The disk fills up while results are written (every fsync after the first fails with ENOSPC)."""
    out = d / "fault-disk"
    exp = dump(d, "disk.yaml", CHEAP)
    cli(["search", exp, "--out", str(out), "--trials", "4", "--no-progress"])
    before = _finished(out, "cheap")
    files = {name: (out / name).read_bytes() for name in ("trials.parquet", "front.csv", "hypervolume.csv")}
    real, calls = os.fsync, []

    def full(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    os.fsync = full
    try:
        code, err = cli(["search", exp, "--out", str(out), "--no-progress"])
    finally:
        os.fsync = real
    whole = all((out / name).read_bytes() == data for name, data in files.items()) and not list(out.glob(".*.tmp"))
    readable = len(pd.read_csv(out / "trials.csv")) >= len(before)
    code2, _ = cli(["search", exp, "--out", str(out), "--no-progress"])
    return {"fault": "disk full while writing results", "exit": code, "one_line_error": err.count("\n") == 1,
            "earlier_files_whole": whole and readable, "resumed_exit": code2, "lost": _lost(before, out, "cheap")}


def load(d: Path, workers: int, trials: int) -> dict[str, Any]:
    out = d / "load"
    exp = dump(d, "load.yaml", {"name": "load", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
                                "budget": {"trials": trials}, "sampler": "nsga2", "population": 16, "seed": 0})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nas", "search", exp, "--out", str(out), "--workers", str(workers),
                           "--no-progress"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    study = _study(out, "load")
    numbers = [t.number for t in study.trials]
    table = pd.read_csv(out / "trials.csv")
    states = Counter(t.state.name for t in study.trials)
    return {"workers": workers, "budget": trials, "exit": done.returncode, "trials": len(numbers),
            "states": dict(states), "unique_numbers": len(set(numbers)) == len(numbers) == numbers[-1] + 1,
            "rows_in_trials_csv": len(table), "rows_duplicated": int(table["number"].duplicated().sum()),
            "workers_that_ran_trials": int(table["worker"].nunique()), "seconds": round(seconds, 1),
            "lost": len(numbers) - states.get("COMPLETE", 0)}


# ----------------------------------------------------------------------------- a new user's path (issue #19)


def _run(*argv: str, cwd: Path | None = None, shell: str | None = None) -> tuple[int, str, str]:
    """A real ``nas`` process (or a shell line with ``NAS`` standing for it): (exit code, stdout, stderr)."""
    cmd = shell.replace("NAS", f"{sys.executable} -m nas") if shell else [sys.executable, "-m", "nas", *argv]
    done = subprocess.run(cmd, shell=bool(shell), cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done.returncode, done.stdout, done.stderr


def new_user_path(d: Path) -> dict[str, dict[str, Any]]:
    """Issue #19's inputs and faults through the ``nas`` command in subprocesses, as its user met them. Each
    case is ``clear`` (the right exit and a one-line message, or the right result), a ``traceback``, or a
    ``silent`` wrong result (exit 0 with the wrong outcome)."""
    d = d / "new-user"
    d.mkdir()
    cases: dict[str, dict[str, Any]] = {}

    def case(name: str, code: int, err: str, ok: bool, silent: bool = False) -> None:
        traceback = "Traceback" in err
        cases[name] = {"exit": code, "outcome": "traceback" if traceback else "clear" if ok else
                       "silent" if silent or code == 0 else "unclear", "stderr": err.strip()[-200:]}

    def one_line(code: int, err: str) -> bool:
        return code == 2 and err.strip().count("\n") == 0 and bool(err.strip())

    # a finished run to resume and fine-tune: cost-only with its own copy of a space file
    space = d / "space.yaml"
    shutil.copy(ROOT / "search_spaces" / "mobilenetv2-tiny.yaml", space)
    exp = dump(d, "cheap.yaml", {**CHEAP, "space": "space.yaml", "budget": {"trials": 2}})
    code, _, err = _run("search", exp, "--out", str(d / "run"), "--no-progress")
    case("a cost-only search runs", code, err, code == 0)
    trained = dump(d, "trained.yaml", {**TINY, "budget": {"trials": 2}})
    code, _, err = _run("search", trained, "--out", str(d / "trained"), "--no-progress")
    case("a trained search runs", code, err, code == 0)

    # options and defaults
    code, _, err = _run("search", dump(d, "empty-budget.yaml", {**CHEAP, "budget": {}}), "--out", str(d / "eb"))
    case("budget: {} (was 40 hidden trials)", code, err, one_line(code, err), silent=code == 0)
    code, out, err = _run("search", dump(d, "minutes.yaml", {**CHEAP, "budget": {"minutes": 0.25}}), "--out",
                          str(d / "minutes"), "--no-progress")
    trials = len(_study(d / "minutes", "cheap").trials) if code == 0 else 0  # cost-only: tens of ms each
    case("budget: 15 s of minutes only runs past the old hidden 40 trials", code, err, code == 0 and trials > 40,
         silent=trials == 40)
    code, _, err = _run("finetune", str(d / "trained"), "--epochs", "0")
    case("finetune --epochs 0 (was 10 epochs)", code, err, one_line(code, err), silent=code == 0)
    code, _, err = _run("finetune", str(d / "trained"), "--compress")
    case("finetune RUN --compress (was ignored)", code, err, one_line(code, err), silent=code == 0)
    code, _, err = _run("finetune", str(d / "trained"), "--nproc", "2")
    case("finetune RUN --nproc 2 (was ignored)", code, err, one_line(code, err), silent=code == 0)

    # resume and run folders
    space.write_text(space.read_text().replace("depth: [1, 2, 3]", "depth: [1, 2]"))
    code, _, err = _run("search", exp, "--out", str(d / "run"), "--no-progress")
    case("resume after the space file was edited", code, err, one_line(code, err), silent=code == 0)
    shutil.copy(ROOT / "search_spaces" / "mobilenetv2-tiny.yaml", space)
    db = d / "run" / "study.db"
    db.rename(d / "study.db.bak")
    code, _, err = _run("search", exp, "--out", str(d / "run"), "--no-progress")
    case("resume after study.db was deleted (nothing created)", code, err, one_line(code, err) and not db.exists())
    (d / "study.db.bak").rename(db)
    elsewhere = d / "elsewhere"
    elsewhere.mkdir()
    code, _, err = _run("search", "../cheap.yaml", "--out", str(d / "run"), "--no-progress", cwd=elsewhere)
    case("resume from another folder finds the space and storage", code, err, code == 0)

    # files and messages
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    model = nas.build_model(cand.arch)
    ckpt = d / "model.safetensors"
    save_checkpoint(ckpt, model, cand)
    nasz = d / "good.nasz"
    nas.compress.save(nas.compress.apply_compression(model, cand.compression), nasz)
    code, out, err = _run("inspect", str(nasz))
    case("nas inspect a container", code, err, code == 0 and bool(out.strip()))
    code, _, err = _run("compress", str(nasz))
    case("nas compress a container (was a utf-8 codec error)", code, err, one_line(code, err) and "inspect" in err)
    code, _, err = _run("compress", dump(d, "cand.json", cand.to_json()), "--spec", str(d / "nofile.json"))
    case("--spec nofile.json (was 'Expecting value')", code, err, one_line(code, err) and "nofile.json" in err)
    code, out, err = _run("cost", str(ckpt))
    case("nas cost a checkpoint (was 'search space file')", code, err, code == 0 and bool(out.strip()))
    for name, line in (("nas spaces | head -1", "NAS spaces | head -1"),
                       ("nas sample | head -1", "NAS sample mobilenetv2-tiny -n 50 | head -1")):
        code, _, err = _run(shell=line)
        case(f"{name} (was BrokenPipeError)", code, err, "Traceback" not in err and "BrokenPipe" not in err)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", type=int, default=300, help="generated space files")
    parser.add_argument("--experiments", type=int, default=300, help="generated experiment files")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200, help="load test budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-new-user", action="store_true", help="run the new-user path only (no tally file)")
    args = parser.parse_args()
    optuna.logging.disable_default_handler()  # failed trials are expected here; their reasons are in the tally
    logging.getLogger("optuna").addHandler(logging.NullHandler())
    torch.set_num_threads(1)
    started = time.perf_counter()
    d = Path(tempfile.mkdtemp(prefix="nas-reliability-"))
    if args.only_new_user:
        try:
            print(json.dumps(new_user_path(d), indent=1))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    try:
        catalogue = bad_input_catalogue(d)
        cli_results = {}
        for name, argv in catalogue.items():
            code, err = cli(argv)
            cli_results[name] = {"exit": code, "one_line": err.count("\n") == 1 and "Traceback" not in err,
                                 "error": err.strip()[:200]}
        clear = sum(r["exit"] == 2 and r["one_line"] for r in cli_results.values())
        spaces = generated_spaces(d, args.spaces, args.seed)
        experiments = generated_experiments(d, args.experiments, args.seed)
        faults = [fault_in_process(d, kind) for kind in ("raises", "nan", "time")]
        faults += [fault_signal(d, signal.SIGINT), fault_signal(d, signal.SIGKILL), fault_worker_killed(d),
                   fault_heartbeat(d), fault_disk_full(d)]
        load_result = load(d, args.workers, args.trials)
        user_path = new_user_path(d)
    finally:
        for st in _STORAGES.values():
            st.engine.dispose()
        shutil.rmtree(d, ignore_errors=True)
    inputs_tried = len(catalogue) + spaces["tried"] + experiments["tried"]
    crashes = (len(catalogue) - clear) + spaces.get("crashed", 0) + experiments.get("crashed", 0)
    lost = sum(f["lost"] for f in faults) + sum(f.get("not_retried", 0) for f in faults) + load_result["lost"]
    stuck = sum(f.get("stuck_running", 0) for f in faults)
    outcomes = Counter(c["outcome"] for c in user_path.values())
    inputs_tried += len(user_path)
    crashes += outcomes["traceback"]
    data = {
        "tally": {"inputs_tried": inputs_tried, "inputs_clear": inputs_tried - crashes, "inputs_crashed": crashes,
                  "faults_injected": len(faults), "trials_lost": lost, "trials_stuck_running": stuck,
                  "load_trials": load_result["trials"], "load_lost": load_result["lost"],
                  "new_user_cases": len(user_path), "new_user_clear": outcomes["clear"],
                  "tracebacks": outcomes["traceback"], "silent_wrong_results": outcomes["silent"],
                  "unclear": outcomes["unclear"]},
        "new_user_path": user_path,
        "bad_input_cli": {"tried": len(catalogue), "exit_2_one_line": clear, "cases": cli_results},
        "generated_spaces": spaces, "generated_experiments": experiments,
        "faults": faults, "load": load_result, "seconds": round(time.perf_counter() - started, 1),
    }
    summary = (f"{inputs_tried} inputs tried ({len(catalogue)} bad inputs through the CLI: {clear} exit 2 with one line; "
               f"{spaces['tried']} generated spaces, {experiments['tried']} generated experiments: "
               f"{spaces.get('loaded', 0) + experiments.get('loaded', 0)} loaded and costed, the rest rejected with "
               f"one line), **{crashes} crashes**; {len(faults)} faults injected (trial raises, NaN, time budget, "
               f"Ctrl+C, SIGKILL of driver, of a local worker, of a remote worker via heartbeat, disk full): "
               f"**{lost} trials lost**, {stuck} left running; load: {load_result['workers']} workers, "
               f"{load_result['trials']} trials for a budget of {load_result['budget']}, each exactly once, "
               f"{load_result['lost']} lost, {load_result['seconds']:.0f} s; issue #19's new-user path: "
               f"{len(user_path)} cases, {outcomes['clear']} clear, {outcomes['traceback']} tracebacks, "
               f"{outcomes['silent']} silent wrong results; {data['seconds'] / 60:.1f} min")
    path = write_result("reliability", data, summary)
    print(json.dumps(data["tally"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
