"""Benchmark: TernGrad against plain all-reduce in 2-process data-parallel training on Fashion-MNIST.

Two processes (gloo over loopback, one thread each) train the same LeNet-300-100
(266,610 parameters) from the same initial weights, with the same seeds, data
shards, schedule and budget, once per gradient exchange: DDP's fp32 all-reduce,
TernGrad (:mod:`nas.terngrad`: 2 bits per element plus a float32 scaler per
layer, clipping at 2.5 standard deviations), and PyTorch's fp16 and PowerSGD
(rank 1) hooks. Reported: final test accuracy (mean over seeds) and the
gradient bytes each process hands to collectives per step (for 2 processes
also what a ring sends per process), and TernGrad's ratio to fp32 all-reduce.

Goal (issue #8): TernGrad bytes per step <= 1/12 of fp32 all-reduce, with test
accuracy within 0.5 points (the TernGrad paper reports parity on AlexNet).

Writes the key ``"terngrad"`` of ``results/bench/scale.json`` (other keys of
that file are kept) and sets this benchmark's row in ``results/bench/README.md``.

Run: ``.venv/bin/python benchmarks/terngrad.py`` (a few minutes on 2 idle CPU
cores; the JSON records the measured time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from _common import RESULTS, command, machine

import nas
from nas.data import load_dataset
from nas.distributed import DistConfig, launch, process_group, train_ddp
from nas.train import TrainConfig, evaluate

HOOKS = ("allreduce", "terngrad", "fp16", "powersgd")


def lenet_300_100(classes: int = 10) -> nas.ArchSpec:
    """LeNet-300-100 on the flattened 28x28 image: 266,610 parameters."""
    return nas.ArchSpec((784,), (nas.Linear(300, act="relu"), nas.Linear(100, act="relu"), nas.Linear(classes)),
                        "lenet-300-100")


def worker(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One rank: every (seed, hook) run in turn in one process group; rank 0 returns the records."""
    with process_group() as device:
        splits = load_dataset("fashion-mnist", seed=0)
        rows = []
        for seed in range(settings["seeds"]):
            for hook in settings["hooks"]:
                torch.manual_seed(seed)  # the same initial weights for every hook
                model = nas.build_model(lenet_300_100(splits.num_classes))
                config = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"],
                                     lr=settings["lr"], seed=seed, threads=settings["threads"], progress=False)
                out = train_ddp(model, splits, config, DistConfig(comm_hook=hook), device)
                if out.rank == 0:
                    rows.append({"hook": hook, "seed": seed, "val": out.run.val_accuracy,
                                 "test": evaluate(model, splits.test), "failed": out.run.failed,
                                 "seconds": round(out.run.seconds, 2), "history": out.run.history,
                                 **out.comm.summary()})
                    print(f"seed {seed} {hook:<10} test {rows[-1]['test']:.4f} "
                          f"bytes/step {rows[-1]['bytes_per_step']:>12,.0f} ({rows[-1]['seconds']:.0f} s)",
                          flush=True)
        return rows


def write_section(key: str, data: dict[str, Any], summary: str, label: str) -> Path:
    """Set ``key`` of ``results/bench/scale.json`` (read-modify-write: other keys stay) and this row of the README."""
    path = RESULTS / "scale.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = {"benchmark": key, "command": command(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), **data}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    readme = RESULTS / "README.md"
    start = f"| [{key}](scale.json)"
    lines = [line for line in (readme.read_text().splitlines() if readme.exists() else []) if not line.startswith(start)]
    readme.write_text("\n".join([*lines, f"{start} {label} | {summary} | `{doc[key]['command']}` |"]) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (32 per process)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--hooks", nargs="+", choices=HOOKS, default=list(HOOKS))
    parser.add_argument("--no-write", action="store_true", help="print only; leave results/bench alone")
    args = parser.parse_args(argv)
    if "allreduce" not in args.hooks or "terngrad" not in args.hooks:
        parser.error("--hooks must include allreduce and terngrad (the comparison)")
    start = time.perf_counter()
    settings = {"epochs": args.epochs, "seeds": args.seeds, "batch_size": args.batch_size, "lr": args.lr,
                "threads": args.threads, "hooks": args.hooks}
    rows = launch(worker, 2, settings)

    per_hook: dict[str, dict[str, Any]] = {}
    for hook in args.hooks:
        mine = [r for r in rows if r["hook"] == hook]
        per_hook[hook] = {
            "mean_test": statistics.mean(r["test"] for r in mine),
            "bytes_per_step": statistics.mean(r["bytes_per_step"] for r in mine),
            "ratio_to_fp32_allreduce": statistics.mean(r["ratio_to_fp32_allreduce"] for r in mine),
            "ring_wire_bytes_per_step": statistics.mean(r["ring_wire_bytes_per_step"] for r in mine),
            "mean_seconds": statistics.mean(r["seconds"] for r in mine),
            "failed": [r["failed"] for r in mine if r["failed"]]}
    base, tern = per_hook["allreduce"], per_hook["terngrad"]
    gap = 100 * (tern["mean_test"] - base["mean_test"])
    ratio = tern["ratio_to_fp32_allreduce"]
    goal_met = ratio <= 1 / 12 and abs(gap) <= 0.5
    total = time.perf_counter() - start
    arch = lenet_300_100()
    data = {
        "dataset": "fashion-mnist: split seed 0 (train 54,000 / val 6,000), official test 10,000; each of the 2 "
                   "processes trains on its half of the training split each epoch",
        "model": {"arch": arch.to_dict(), "params": nas.count(arch).params},
        "processes": 2, "backend": "gloo (loopback)",
        "train": {"epochs": args.epochs, "global_batch": args.batch_size, "lr": args.lr, "schedule": "cosine",
                  "optimizer": "SGD momentum 0.9 Nesterov, weight decay 5e-4", "threads_per_process": args.threads},
        "hooks": {"terngrad": {k: v for k, v in asdict(DistConfig()).items() if k.startswith("terngrad")},
                  "powersgd": {k: v for k, v in asdict(DistConfig()).items() if k.startswith("powersgd")}},
        "bytes_counted": "gradient payload each process hands to collectives per step (for 2 processes this is also "
                         "what a ring all-reduce / all-gather sends per process); not counted: a 4-byte per-step "
                         "stop flag and the initial weight broadcast",
        "per_hook": per_hook,
        "terngrad_vs_allreduce": {"test_gap_points": gap, "bytes_ratio": ratio, "bytes_fraction": f"1/{1 / ratio:.1f}"},
        "goal": "TernGrad bytes/step <= 1/12 of fp32 all-reduce with mean test accuracy within 0.5 points",
        "goal_met": goal_met,
        "runs": rows,
        "seconds_total": total,
    }
    others = ", ".join(f"{h} {100 * per_hook[h]['mean_test']:.2f}% at 1/{1 / per_hook[h]['ratio_to_fp32_allreduce']:.1f}"
                       for h in args.hooks if h not in ("allreduce", "terngrad"))
    summary = (f"LeNet-300-100, 2 gloo processes, {args.epochs} epochs, mean of {args.seeds} seeds: all-reduce "
               f"{100 * base['mean_test']:.2f}% at {base['bytes_per_step'] / 1e6:.2f} MB/step, TernGrad "
               f"{100 * tern['mean_test']:.2f}% at {tern['bytes_per_step'] / 1e3:.1f} kB/step = **1/{1 / ratio:.1f} "
               f"of the bytes, {gap:+.2f} pts** (goal <= 1/12 and within 0.5 pts: {'met' if goal_met else 'not met'})"
               f"{'; ' + others if others else ''}; wall per run {base['mean_seconds']:.0f} s all-reduce vs "
               f"{tern['mean_seconds']:.0f} s TernGrad (loopback: encoding costs more time than the bytes it saves); "
               f"{total / 60:.1f} min")
    print(summary)
    if not args.no_write:
        write_section("terngrad", data, summary, "(Fashion-MNIST test accuracy, bytes per step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
