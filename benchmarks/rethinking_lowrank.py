"""Benchmark: Liu et al.'s Rethinking baseline and low-rank regularization (issue 17, item 2), Fashion-MNIST.

(a) Rethinking. For LeNet-5 (Caffe's 20-50-500) and ``--mobilenets`` mobilenetv2-tiny candidates (drawn for
    28x28, the first seeds under 3M MAdds), each at ``channel_ratio`` 0.5 (l1 importance): prune + fine-tune
    (``E`` epochs dense, structured pruning, ``R`` recovery epochs: :func:`nas.compress.compress_with_recovery`)
    against the pruned architecture trained from scratch by :func:`nas.rethinking.train_from_scratch` (labels
    only, as Liu et al.) on the same epochs (Scratch-E, ``E + R``) and the same multiply-adds (Scratch-B, at
    most twice).
(b) Low-rank regularization. LeNet-5 trained ``E`` epochs without and with the penalty
    (:class:`nas.factoring.LowRankPenalty`, aimed at each ratio), then factorized at that ratio
    (:func:`nas.compress.apply_lowrank`, two-component convs, SVD linears): test accuracy right after
    factorizing and after one recovery epoch; the dense accuracy alongside.

Every training run uses the first ``--train`` training, ``--val`` validation and ``--test`` test images,
one thread, seeds ``--seeds``. Each part (``--only``) is a section of ``results/bench/rethinking_lowrank.json``;
the README row is made from the file.

Run: ``nice -n 10 .venv/bin/python benchmarks/rethinking_lowrank.py`` (both parts), or the two parts side by
side with ``--only rethinking`` and ``--only lowrank``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import TensorDataset

import nas
from nas.channels import pruned_arch
from nas.compress import apply_lowrank, compress_with_recovery
from nas.data import Splits, load_dataset
from nas.rethinking import train_from_scratch
from nas.spec import ArchSpec, Candidate, CompressionSpec, Conv, Flatten, Linear, MaxPool
from nas.train import TrainConfig, evaluate, train

from _common import merge_section, set_readme_row

LENET_5 = ArchSpec((1, 28, 28), (Conv(20, 5, bn=False, act="relu", padding=0), MaxPool(2),
                                 Conv(50, 5, bn=False, act="relu", padding=0), MaxPool(2), Flatten(),
                                 Linear(500, act="relu"), Linear(10)), "lenet-5")


#: The mobilenetv2-tiny candidates (drawn for 28x28): the first three seeds whose network is at most this many
#: MAdds (seeds 1, 4, 5; seeds 0, 2, 3 are 7-22M, too slow for this benchmark's CPU budget).
MAX_MADDS = 3_000_000


def subset(splits: Splits, n: int, n_val: int, n_test: int) -> Splits:
    """The first ``n`` training, ``n_val`` validation and ``n_test`` test images."""
    first = lambda d, k: TensorDataset(*(t[:k] for t in d.tensors))  # noqa: E731
    return replace(splits, train=first(splits.train, n), val=first(splits.val, n_val), test=first(splits.test, n_test))


def architectures(mobilenets: int) -> dict[str, ArchSpec]:
    space = nas.load_space("mobilenetv2-tiny").with_input((1, 28, 28), 10)
    small = [s for s in range(20) if nas.count(space.random(s).arch).madds <= MAX_MADDS][:mobilenets]
    return {"lenet-5": LENET_5, **{f"mobilenetv2-tiny seed {s}": space.random(s).arch for s in small}}


def rethinking(splits: Splits, seeds: list[int], epochs: int, recovery: int, base: TrainConfig,
               mobilenets: int, save: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """Part (a); ``save(results so far)`` after each architecture (a long run keeps what it finished)."""
    out: dict[str, Any] = {}
    for name, arch in architectures(mobilenets).items():
        cand = Candidate(arch, CompressionSpec(channel_ratio=0.5))
        rows = []
        for seed in seeds:
            config = replace(base, epochs=epochs, seed=seed)
            rec = replace(base, epochs=recovery, seed=seed)
            t = time.perf_counter()
            torch.manual_seed(seed)
            dense = nas.build_model(arch)
            train(dense, splits, config)
            pruned, _ = compress_with_recovery(dense, cand.compression, splits, rec)
            row = {"seed": seed, "dense_test": evaluate(dense, splits.test),
                   "pruned_test": evaluate(pruned, splits.test),
                   "pruned_seconds": round(time.perf_counter() - t, 1)}
            for budget in ("epochs", "madds"):
                t = time.perf_counter()
                s = train_from_scratch(cand, None, splits, config, rec, budget)
                assert s is not None
                row[f"scratch_{budget}_test"], row[f"scratch_{budget}_epochs"] = s.test_accuracy, s.epochs
                row[f"scratch_{budget}_seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(name, row, flush=True)
        out[name] = {"madds_dense": nas.count(arch).madds, "madds_pruned": nas.count(pruned_arch(arch, 0.5)).madds,
                     "runs": rows, **{f"mean_{k}": statistics.mean(r[k] for r in rows)
                                      for k in ("pruned_test", "scratch_epochs_test", "scratch_madds_test")}}
        save(out)
    return out


def lowrank(splits: Splits, seeds: list[int], epochs: int, ratios: list[float], weight: float,
            base: TrainConfig, save: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """Part (b); ``save(results so far)`` after each seed."""
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for seed in seeds:
        rows += _lowrank_seed(splits, seed, epochs, ratios, weight, base)
        out = _lowrank_means(rows, ratios, weight)
        save(out)
    return out


def _lowrank_seed(splits: Splits, seed: int, epochs: int, ratios: list[float], weight: float,
                  base: TrainConfig) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for ratio in ratios:
        for penalty in (0.0, weight):
            if penalty == 0 and ratio != ratios[0]:  # the plain model does not depend on the ratio
                plain = next(r for r in rows if r["seed"] == seed and r["penalty"] == 0)
                model = plain["_model"]
                seconds = plain["train_seconds"]
            else:
                torch.manual_seed(seed)
                model = nas.build_model(LENET_5)
                t = time.perf_counter()
                extra = {"lowrank_penalty": penalty, "lowrank_ratio": ratio} if penalty else {}
                train(model, splits, replace(base, epochs=epochs, seed=seed, **extra))
                seconds = round(time.perf_counter() - t, 1)
            factored = copy.deepcopy(model)
            apply_lowrank(factored, ratio)
            row = {"seed": seed, "ratio": ratio, "penalty": penalty, "dense_test": evaluate(model, splits.test),
                   "factored_test": evaluate(factored, splits.test), "train_seconds": seconds}
            train(factored, splits, replace(base, epochs=1, seed=seed))
            row["recovered_test"] = evaluate(factored, splits.test)
            rows.append({**row, "_model": model})
            print("lowrank", row, flush=True)
    return [{k: v for k, v in r.items() if k != "_model"} for r in rows]


def _lowrank_means(clean: list[dict[str, Any]], ratios: list[float], weight: float) -> dict[str, Any]:
    means = {}
    for ratio in ratios:
        for penalty in (0.0, weight):
            sel = [r for r in clean if r["ratio"] == ratio and r["penalty"] == penalty]
            seeds = sorted({r["seed"] for r in sel})
            means[f"ratio {ratio} penalty {penalty}"] = {k: statistics.mean(r[k] for r in sel)
                                                         for k in ("dense_test", "factored_test", "recovered_test")}
    return {"ratios": ratios, "weight": weight, "seeds_done": seeds, "runs": clean, "means": means}


def summary_line(data: dict[str, Any]) -> str:
    """The README row's text from the merged result file (each part fills its own section)."""
    parts = []
    if "rethinking" in data:
        r = data["rethinking"]
        parts.append(f"(a) {r['dataset']}, seeds {r['seeds']}, channel_ratio 0.5, {r['epochs']}+{r['recovery_epochs']} "
                     "epochs, prune+FT / Scratch-E / "
                     "Scratch-B test: " + "; ".join(
                         f"{k} {v['mean_pruned_test']:.1%} / {v['mean_scratch_epochs_test']:.1%} / "
                         f"{v['mean_scratch_madds_test']:.1%}" for k, v in r["architectures"].items()))
    if "lowrank" in data:
        lr, m = data["lowrank"], data["lowrank"]["means"]
        w = lr["weight"]
        parts.append(f"(b) {lr['dataset']}, seeds {lr['seeds']}, LeNet-5 {lr['epochs']} epochs, factorized without "
                     "fine-tune, without / with penalty "
                     f"{lr['weight']}: " + "; ".join(
                         f"ratio {r} {m[f'ratio {r} penalty 0.0']['factored_test']:.1%} / "
                         f"{m[f'ratio {r} penalty {w}']['factored_test']:.1%}" for r in lr["ratios"]))
    return "Fashion-MNIST, test accuracy (means): " + ". ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000, help="training images (the first N of the split)")
    ap.add_argument("--val", type=int, default=500, help="validation images (the first N; they pick the kept one)")
    ap.add_argument("--test", type=int, default=5000, help="test images (the first N of the 10,000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=3, help="E: dense epochs (the scratch budgets follow from it)")
    ap.add_argument("--recovery", type=int, default=1, help="R: recovery epochs after pruning")
    ap.add_argument("--mobilenets", type=int, default=3, help="mobilenetv2-tiny candidates in part (a)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--weight", type=float, default=0.3, help="the low-rank penalty's weight")
    ap.add_argument("--only", choices=["rethinking", "lowrank"], default=None,
                    help="run one part and merge it into the result file (the two can run side by side)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    splits = subset(load_dataset("fashion-mnist"), args.train, args.val, args.test)
    base = TrainConfig(epochs=1, batch_size=64, lr=0.05, progress=False)
    common = {"dataset": f"first {args.train} training, {args.val} validation, {args.test} test images",
              "seeds": args.seeds, "epochs": args.epochs, "train_config": {"batch_size": 64, "lr": 0.05,
                                                                             "schedule": "cosine", "threads": 1}}
    for part in ("rethinking", "lowrank"):
        if args.only not in (None, part):
            continue
        started, cpu = time.perf_counter(), time.process_time()

        def save(results: dict[str, Any], part: str = part) -> None:
            data = {**common, **({"recovery_epochs": args.recovery, "architectures": results}
                                 if part == "rethinking" else results),
                    "seconds": round(time.perf_counter() - started, 1),
                    "cpu_seconds": round(time.process_time() - cpu, 1)}
            merged = json.loads(merge_section(part, data, "rethinking_lowrank").read_text())
            set_readme_row("rethinking_lowrank", summary_line(merged), " & ".join(
                f"nice -n 10 {merged[k]['command']}" for k in ("rethinking", "lowrank") if k in merged))

        if part == "rethinking":
            rethinking(splits, args.seeds, args.epochs, args.recovery, base, args.mobilenets, save)
        else:
            lowrank(splits, args.seeds, args.epochs, args.ratios, args.weight, base, save)


if __name__ == "__main__":
    main()
