"""Calibrate-here: a table measured on another machine, before and after `nas hardware calibrate --here`.

Starts from ``hardware/reference-cpu.json`` (measured on an Intel Xeon), refits it to this machine with
``nas hardware calibrate reference-cpu --here`` (into a temporary ``$NAS_HARDWARE``, so no table of the
user's is touched), and measures held-out random networks of the space (seeds 40000.., none of them among
the refit's 30000..) end to end, one torch thread: twice with the CPU time of the thread (the clock the
refit uses: a shared machine's neighbours do not inflate it; the two give the noise floor) and once with
the wall clock. Reports the share within +-10% and the MAPE of the table before (its own calibration) and
after, against each clock, and the refit's time. Writes ``results/bench/latency_here.json``.

    .venv/bin/python benchmarks/calibrate_here.py --space mobilenetv2 -n 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from nas.hardware import get_profile
from nas.hardware.machine import this_machine
from nas.hardware.measure import measure_networks
from nas.space import load_space

HELD_OUT_SEED = 40_000


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    error = (predicted - measured) / measured
    return {"within_10pct": float(np.mean(np.abs(error) <= 0.10)), "mape": float(np.mean(np.abs(error))),
            "median_ratio": float(np.median(predicted / measured))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="reference-cpu")
    parser.add_argument("--space", default="mobilenetv2")
    parser.add_argument("-n", type=int, default=30, help="held-out networks")
    parser.add_argument("--fit-networks", type=int, default=16, help="networks the refit times (at most 20)")
    parser.add_argument("--rounds", type=int, default=60, help="as many as the refit times its networks with")
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as hw:
        env = {**os.environ, "NAS_HARDWARE": hw}
        cmd = [sys.executable, "-m", "nas", "hardware", "calibrate", args.profile, "--here", "--space", args.space,
               "-n", str(args.fit_networks)]
        start = time.monotonic()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        refit_s = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        before = get_profile(args.profile)
        after = get_profile(Path(hw) / f"{args.profile}-here.json")
    space = load_space(args.space)
    archs = [space.random(HELD_OUT_SEED + i).arch for i in range(args.n)]
    how = {"batch": 1, "rounds": args.rounds, "target_ms": 1.0}
    cpu1 = np.array(measure_networks(archs, seed=1, clock="thread", **how))
    cpu2 = np.array(measure_networks(archs, seed=2, clock="thread", **how))
    wall = np.array(measure_networks(archs, seed=3, clock="wall", **how))
    cpu = cpu1  # measured as the refit measures (one run of as many rounds); the second run: the noise floor
    predicted = {name: np.array([p.latency_ms(a) for a in archs]) for name, p in (("before", before), ("after", after))}
    adapted = after.data.adapted
    assert adapted is not None
    result = {
        "profile": args.profile, "space": args.space, "table_measured_on": before.data.device,
        "this_machine": this_machine().model_dump(),
        "refit": {"command": " ".join(["nas", *cmd[3:]]), "seconds": round(refit_s, 1),
                  "timing_seconds": adapted.seconds, "networks": adapted.networks, "seeds": adapted.seeds,
                  "model": adapted.model, "terms": adapted.terms, "intercept_ms": adapted.intercept_ms,
                  "loo_error": adapted.loo_error},
        "held_out": {"networks": args.n, "seeds": [HELD_OUT_SEED, HELD_OUT_SEED + args.n - 1], "rounds": args.rounds},
        "thread_cpu_time": {k: scores(v, cpu) for k, v in predicted.items()},
        "wall_clock": {k: scores(v, wall) for k, v in predicted.items()},
        "noise_floor_median_pct": float(np.median(np.abs(cpu1 - cpu2) / cpu) * 100),
        "wall_over_cpu_median": float(np.median(wall / cpu)),
        "goal": ">= 90% of held-out networks within +-10% after the refit",
        "measured_cpu_ms": cpu.round(4).tolist(), "measured_wall_ms": wall.round(4).tolist(),
        "predicted_before_ms": predicted["before"].round(4).tolist(),
        "predicted_after_ms": predicted["after"].round(4).tolist(),
    }
    b, a = result["thread_cpu_time"]["before"], result["thread_cpu_time"]["after"]
    summary = (f"{args.profile} ({before.data.device}) on {this_machine().cpu}, {args.n} held-out {args.space} nets: "
               f"within +-10% {100 * b['within_10pct']:.0f}% before, {100 * a['within_10pct']:.0f}% after "
               f"`calibrate --here` ({refit_s:.0f} s, {adapted.networks} nets)")
    path = write_result("latency_here", result, summary)
    print(summary)
    print(f"wall clock: within +-10% {100 * result['wall_clock']['before']['within_10pct']:.0f}% before, "
          f"{100 * result['wall_clock']['after']['within_10pct']:.0f}% after; noise floor "
          f"{result['noise_floor_median_pct']:.1f}%; wall/cpu {result['wall_over_cpu_median']:.2f}")
    print(path)


if __name__ == "__main__":
    main()
