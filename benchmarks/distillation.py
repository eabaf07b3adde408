"""Benchmark: does distillation help a small student on Fashion-MNIST?

The same small student is trained alone (cross-entropy) and distilled from a
larger teacher (Hinton's loss), with the same budget, data and seeds (3 seeds
each), side by side with the teacher. The temperature is picked from a few
values by mean validation accuracy; test accuracy is reported for that pick. Goal: the distilled student beats the
student trained alone by >= 1 point of test accuracy on average, for a student
with at most 1/10 of the teacher's parameters. Writes
``results/bench/distillation.json`` and appends one row to
``results/bench/README.md``.

Set-up: a 0.17 M-parameter conv teacher trained on the whole training split
(4 epochs); a 12.7 k-parameter MLP student (7.3% of the teacher) trained for
one epoch on the first 10,000 training images, alone or distilled: the short
proxy budget of the search, where soft targets speed learning most.

Run: ``.venv/bin/python benchmarks/distillation.py`` (about 2.5 minutes on 2
idle CPU cores; the recorded JSON has the measured time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import nas
from nas.data import Splits, load_dataset
from nas.distill import DistillConfig, distill
from nas.spec import ArchSpec, Conv, Flatten, Linear, MaxPool
from nas.train import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parents[1]


def teacher_arch(shape: tuple[int, ...], classes: int) -> ArchSpec:
    """A small VGG-style conv net with batch norm: about 0.17 M parameters."""
    return ArchSpec(shape, (Conv(16, 3, act="relu"), MaxPool(2), Conv(32, 3, act="relu"), MaxPool(2),
                            Conv(64, 3, act="relu"), MaxPool(2), Flatten(), Linear(256, act="relu"),
                            Linear(classes)), "teacher")


def student_arch(shape: tuple[int, ...], classes: int, hidden: int) -> ArchSpec:
    """A one-hidden-layer MLP on the flattened image (the smallest student family)."""
    features = 1
    for d in shape:
        features *= d
    return ArchSpec((features,), (Linear(hidden, act="relu"), Linear(classes)), "student-mlp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--student-epochs", type=int, default=1,
                        help="the student budget, equal in both arms: a short proxy-training budget as in the search")
    parser.add_argument("--student-hidden", type=int, default=16)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0],
                        help="candidate temperatures; the one with the best mean *validation* accuracy is reported")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--teacher-samples", type=int, default=None,
                        help="the teacher trains on the first this many training images (default: all 54,000)")
    parser.add_argument("--student-samples", type=int, default=10000,
                        help="both student arms train on the first this many training images (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "distillation.json")
    parser.add_argument("--no-readme", action="store_true", help="do not append the README row")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    full = load_dataset("fashion-mnist", seed=0)
    shape, classes = full.input_shape, full.num_classes

    def first(n: int) -> Splits:
        """The same validation and test sets, with the first ``n`` images of the training split."""
        x, y = full.train.tensors
        return replace(full, train=TensorDataset(x[:n], y[:n]))

    splits = first(args.teacher_samples or len(full.train))
    student_splits = first(args.student_samples)

    torch.manual_seed(0)
    t_arch = teacher_arch(shape, classes)
    teacher = nas.build_model(t_arch)
    t0 = time.perf_counter()
    t_run = train(teacher, splits, TrainConfig(epochs=args.teacher_epochs, batch_size=128, lr=0.05,
                                               threads=args.threads, seed=0))
    teacher_seconds = time.perf_counter() - t0
    teacher_test = evaluate(teacher, splits.test)
    print(f"teacher: {nas.count(t_arch).params:,} params, val {t_run.val_accuracy:.4f}, test {teacher_test:.4f}, "
          f"{teacher_seconds:.0f} s", flush=True)

    s_arch = student_arch(shape, classes, args.student_hidden)
    student_cfg = dict(epochs=args.student_epochs, batch_size=128, lr=0.05, threads=args.threads)
    arms = ["alone"] + [f"distilled T={t:g}" for t in args.temperatures]
    all_rows: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    for seed in range(args.seeds):
        for arm, temperature in zip(arms, [None, *args.temperatures]):
            torch.manual_seed(seed)  # the same initial student weights in every arm
            student = nas.build_model(s_arch)
            cfg = TrainConfig(seed=seed, **student_cfg)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            if temperature is None:
                run = train(student, student_splits, cfg)
            else:
                dcfg = DistillConfig(alpha=args.alpha, beta=args.beta, temperature=temperature)
                run = distill(student, teacher, student_splits, cfg, dcfg).run
            all_rows[arm].append({"seed": seed, "val": run.val_accuracy, "test": evaluate(student, splits.test),
                                  "seconds": time.perf_counter() - t0, "failed": run.failed})  # type: ignore[dict-item]
            print(f"student seed {seed} {arm:<15}: val {all_rows[arm][-1]['val']:.4f} "
                  f"test {all_rows[arm][-1]['test']:.4f} ({all_rows[arm][-1]['seconds']:.0f} s)", flush=True)

    # The temperature is chosen on validation accuracy only; test accuracy is reported for that choice.
    chosen_arm = max(arms[1:], key=lambda a: statistics.mean(r["val"] for r in all_rows[a]))
    chosen_t = args.temperatures[arms.index(chosen_arm) - 1]
    dcfg = DistillConfig(alpha=args.alpha, beta=args.beta, temperature=chosen_t)
    rows = {"alone": all_rows["alone"], "distilled": all_rows[chosen_arm]}

    mean = {arm: statistics.mean(r["test"] for r in rows[arm]) for arm in rows}
    gain_points = 100 * (mean["distilled"] - mean["alone"])
    t_params, s_params = nas.count(t_arch).params, nas.count(s_arch).params
    total = time.perf_counter() - start
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else "python"
    command = " ".join(shlex.quote(a) for a in [python, os.path.relpath(__file__, ROOT),
                                                *(argv if argv is not None else sys.argv[1:])])
    result = {
        "benchmark": "distillation",
        "dataset": (f"fashion-mnist: split seed 0 (train 54,000 / val 6,000), official test 10,000; teacher "
                    f"trains on the first {len(splits.train)} training images, both student arms on the first "
                    f"{len(student_splits.train)}"),
        "teacher": {"arch": t_arch.to_dict(), "params": t_params, "epochs": args.teacher_epochs,
                    "val": t_run.val_accuracy, "test": teacher_test, "seconds": teacher_seconds},
        "student": {"arch": s_arch.to_dict(), "params": s_params, "param_ratio": s_params / t_params,
                    "train": student_cfg, "distill": {"alpha": dcfg.alpha, "beta": dcfg.beta,
                                                      "temperature": dcfg.temperature, "t2_scale": dcfg.t2_scale,
                                                      "soft_loss": dcfg.soft_loss}},
        "runs": rows,
        "temperature_choice": {"chosen": chosen_t, "rule": "best mean validation accuracy over the seeds",
                               "all_arms": all_rows},
        "mean_test": mean,
        "gain_points": gain_points,
        "goal": "distilled - alone >= 1.0 point mean test accuracy, student params <= teacher params / 10",
        "goal_met": gain_points >= 1.0 and s_params * 10 <= t_params,
        "seconds_total": total,
        "command": command,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cpus": os.cpu_count(), "threads": args.threads,
                    "processor": platform.processor() or platform.machine()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    summary = (f"MLP student {s_params:,} params ({s_params / t_params:.1%} of the {t_params:,}-param conv teacher), "
               f"{args.student_epochs} epoch(s): alone {100 * mean['alone']:.2f}%, distilled (T={chosen_t:g}, chosen on val) "
               f"{100 * mean['distilled']:.2f}% = **{gain_points:+.2f} pts** (mean of {args.seeds} seeds; goal +1.0: "
               f"{'met' if result['goal_met'] else 'not met'}); teacher {100 * teacher_test:.2f}%; "
               f"{total / 60:.1f} min")
    print(summary)
    if not args.no_readme:
        # One row per benchmark: a rerun replaces this benchmark's earlier row and keeps every other line.
        readme = ROOT / "results" / "bench" / "README.md"
        row = f"| [distillation](distillation.json) (Fashion-MNIST test accuracy) | {summary} | `{command}` |"
        lines = [line for line in readme.read_text(encoding="utf-8").splitlines()
                 if not line.startswith("| [distillation](distillation.json)")]
        readme.write_text("\n".join([*lines, row]) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
