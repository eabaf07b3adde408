"""Benchmark: trials per minute of ``nas search``'s local backend against its Ray backend, same search.

The search is ``examples/synthetic.yaml`` with its budget raised to 40 trials (tiny MobileNetV2-style
networks on the synthetic dataset, one proxy epoch, no pruning), run from scratch into a temporary
run folder by:

- ``local-1``: the local backend, one worker process;
- ``local-2``: the local backend, 2 worker processes on one study (``--workers 2``);
- ``ray-2``: the Ray backend on a local Ray instance of 2 CPUs (2 trials at once, ``resources.cpus: 1``).

``local-1`` and ``ray-2`` draw and train the same first generation of NSGA-II (16 candidates) to the same
accuracies (one sampler, same seed; the benchmark checks it); later generations depend on the order trials
finish in, and the 2 workers of ``local-2`` seed their samplers apart, so the rest are other candidates of
the same space: the work per trial is alike, not identical. Ray's start-up (``ray.init``
of a fresh local instance) is timed apart from the search; the Ray rows give the rate both without and with
it. Each configuration runs in a fresh process of its own. Overhead per trial: a trial's wall time in the study (asked to told) less its own training time
(``train_seconds``), averaged: what each backend spends around the same training (costing, bookkeeping,
and for Ray the Tune loop, result and checkpoint traffic and the actor calls). On a shared machine the
rates move with the other load (the JSON records the load average); the overheads move less.

Writes the key ``"backends"`` of ``results/bench/scale.json`` (other keys of that file are kept) and sets
this benchmark's row in ``results/bench/README.md``.

Run: ``.venv/bin/python benchmarks/backends.py`` (about 3 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from terngrad import write_section

from nas.experiment import Experiment, load_experiment
from nas.search.study import budget_population
from nas.search import search

ROOT = Path(__file__).resolve().parent.parent
SAME = ["number", "state", "accuracy", "madds", "candidate"]


def experiment(trials: int, folder: Path) -> Experiment:
    """examples/synthetic.yaml with ``trials`` as its budget, as a file: ``--workers`` processes read it."""
    data = yaml.safe_load((ROOT / "examples" / "synthetic.yaml").read_text())
    data["budget"] = {"trials": trials}
    path = folder / "synthetic.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_experiment(path)


def row(name: str, result: Any, seconds: float, **extra: Any) -> dict[str, Any]:
    frame = result.frame
    n = int(frame["state"].isin(["COMPLETE", "PRUNED", "FAIL"]).sum())
    trained = {t.number: t.user_attrs["train_seconds"] for t in result.run.study().trials
               if "train_seconds" in t.user_attrs}
    around = [d - trained[k] for k, d in zip(frame["number"], frame["duration_s"]) if k in trained]
    return {"backend": name, "trials": n, "seconds": round(seconds, 2), "trials_per_min": round(60 * n / seconds, 1),
            "trial_seconds_mean": round(float(frame["duration_s"].mean()), 3),
            "train_seconds_mean": round(sum(trained.values()) / max(1, len(trained)), 3),
            "overhead_s_per_trial": round(sum(around) / max(1, len(around)), 3), **extra}


def run_local(exp: Experiment, folder: Path, workers: int) -> tuple[dict[str, Any], pd.DataFrame]:
    start = time.perf_counter()
    result = search(exp, folder=folder, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return row(f"local-{workers}", result, seconds), result.frame


def run_ray(exp: Experiment, folder: Path, cpus: int) -> tuple[dict[str, Any], pd.DataFrame]:
    from nas.search import ray as ray_backend

    start = time.perf_counter()
    with ray_backend.ray_session(num_cpus=cpus):
        up = time.perf_counter() - start
        t0 = time.perf_counter()
        result = ray_backend.search(exp, folder=folder, progress=False)
        seconds = time.perf_counter() - t0
    total = time.perf_counter() - start
    out = row(f"ray-{cpus}", result, seconds, startup_seconds=round(up, 2),
              seconds_with_startup=round(total, 2),
              trials_per_min_with_startup=round(60 * len(result.frame) / total, 1))
    return out, result.frame


RUNS = ("local-1", "local-2", "ray-2")


def one(name: str, exp: Experiment, folder: Path) -> dict[str, Any]:
    """One configuration, in this process (``main`` gives each a fresh one: nobody starts warm)."""
    if name.startswith("local-"):
        r, _ = run_local(exp, folder, int(name.split("-")[1]))
    else:
        r, _ = run_ray(exp, folder, int(name.split("-")[1]))
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results/bench alone")
    parser.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)  # NAME FOLDER: one run, its row as JSON
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, experiment(args.trials, args.folder), args.folder / args.one)))
        return 0
    load = os.getloadavg()[0]
    rows, frames = [], {}
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        for name in RUNS:
            done = subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--one", name,
                                   "--folder", tmp], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            frame = pd.read_csv(Path(tmp) / name / "trials.csv")
            frames[name] = frame.sort_values("number").reset_index(drop=True)
            print(rows[-1], flush=True)
    first = budget_population(args.trials)  # NSGA-II's first generation: random draws, alike on both
    same = frames["ray-2"][SAME].head(first).equals(frames["local-1"][SAME].head(first))
    by = {r["backend"]: r for r in rows}
    local2, ray2 = by["local-2"], by["ray-2"]
    ratio = ray2["trials_per_min"] / local2["trials_per_min"]
    overhead = ray2["overhead_s_per_trial"] - by["local-1"]["overhead_s_per_trial"]
    data = {
        "search": f"examples/synthetic.yaml with {args.trials} trials (mobilenetv2-tiny on synthetic data, "
                  "1 proxy epoch, no pruning), from scratch in a temporary run folder",
        "load_average_at_start": round(load, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "runs": rows,
        "same_first_generation_ray2_local1": same,
        "ray_vs_local2_rate": round(ratio, 3),
        "ray_extra_overhead_s_per_trial": round(overhead, 2),
        "ray_startup_s": ray2["startup_seconds"],
    }
    summary = (f"{args.trials} trials of examples/synthetic.yaml, trials/min: local 1 worker "
               f"{by['local-1']['trials_per_min']:.0f}, local 2 workers {local2['trials_per_min']:.0f}, Ray 2 CPUs "
               f"{ray2['trials_per_min']:.0f} (**{ratio:.2f}x** local 2 workers; "
               f"{ray2['trials_per_min_with_startup']:.0f} with its {ray2['startup_seconds']:.0f} s start-up); "
               f"around the same training a trial costs {by['local-1']['overhead_s_per_trial']:.2f} s locally and "
               f"{ray2['overhead_s_per_trial']:.2f} s on Ray ({overhead:+.2f} s: Tune's loop, results, actor calls); "
               f"first NSGA-II generation identical to local: {'yes' if same else 'NO'}; "
               f"shared 2-core machine, load average {load:.1f} at start")
    print(summary)
    if not args.no_write:
        path = write_section("backends", data, summary, "(nas search throughput, local vs Ray)")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
