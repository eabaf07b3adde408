"""Benchmark: does a briefly trained supernet rank candidates as stand-alone training does? (Fashion-MNIST)

A supernet of a mobilenetv2-tiny-like space at 28x28 (multipliers 0.5/0.75, expansions 2/4, kernels 3/5,
depthwise and grouped convs; the space file's compression section kept, so that a quarter of the sandwich
steps train compressed children) is trained on one core for a few short epochs (``nas.supernet``). Then
``--candidates`` fresh candidates (seeds drawn from the OS, listed in the JSON; dense: compression off) are
scored two ways:

- supernet: extracted, batch norm recalibrated on 4 training batches, validation accuracy (what
  ``evaluator: supernet`` records, without the compression);
- stand-alone: the same architecture trained from scratch with :func:`nas.train.train` for a fixed budget,
  test accuracy.

Reported: Spearman and Kendall correlation of the two, the mean absolute gap in points, and the time of
each part. Writes ``results/bench/supernet.json`` and a row of ``results/bench/README.md``.

Run: ``.venv/bin/python benchmarks/supernet_fidelity.py`` (about 15 minutes on one core of a loaded
2-core machine); ``--quick`` for a smoke run of a minute.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from _common import write_result
from scipy.stats import kendalltau, spearmanr

from nas import build_model, count, load_space
from nas.data import load_dataset
from nas.space import Space, _validate
from nas.spec import Candidate, CompressionSpec
from nas.supernet import SupernetTraining, calibration_images, child_accuracy, train_supernet
from nas.train import TrainConfig, evaluate, train


def fidelity_space() -> Space:
    """mobilenetv2-tiny at 28x28, narrowed so that a step of the sandwich costs about a second on one core."""
    data = load_space("mobilenetv2-tiny").with_input((1, 28, 28), 10).config.model_dump()
    data |= {"name": "mobilenetv2-tiny-28", "width_multiplier": [0.5, 0.75]}
    for stage in data["stages"]:
        stage["expansion"] = [e for e in stage["expansion"] if e <= 4] or [1]
        stage["conv"] = [c for c in stage["conv"] if c != "full"]
        if "grouped" not in stage["conv"]:
            stage["groups"] = []
    return Space(_validate(data, "mobilenetv2-tiny-28 (benchmarks/supernet_fidelity.py)"), "mobilenetv2-tiny-28")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3, help="supernet epochs (the first: largest network only)")
    parser.add_argument("--samples", type=int, default=3000, help="supernet training images per epoch")
    parser.add_argument("--alone-samples", type=int, default=3000, help="stand-alone training images in all")
    parser.add_argument("--eval", type=int, default=2000, help="validation and test images scored")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="candidate seeds (default: fresh)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.epochs, args.samples, args.alone_samples, args.eval = 3, 2, 256, 256, 256
    torch.set_num_threads(1)
    full = load_dataset("fashion-mnist")
    # The first --eval images of the validation and test splits: a full pass costs more than training here.
    splits = replace(full, val=TensorDataset(*(t[:args.eval] for t in full.val.tensors)),
                     test=TensorDataset(*(t[:args.eval] for t in full.test.tensors)))
    space = fidelity_space()
    seeds = args.seeds or [random.SystemRandom().randrange(2**31) for _ in range(args.candidates)]
    config = SupernetTraining(epochs=args.epochs, warmup_epochs=1, max_samples=args.samples, batch_size=64,
                              random_children=1, compressed_share=0.25, seed=0, threads=1)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        net, state = train_supernet(space, splits, config, Path(tmp) / "supernet.safetensors", progress=False,
                                    on_epoch=lambda e, row: print(f"supernet epoch {e + 1}: {row}", flush=True))
    supernet_s = time.perf_counter() - start
    calibration = calibration_images(splits, config.recalibration_batches, config.batch_size, config.seed)

    rows = []
    for seed in seeds:
        candidate = Candidate(space.random(seed).arch, CompressionSpec())
        t = time.perf_counter()
        shared = child_accuracy(net, candidate.arch, splits, calibration, config)
        shared_s = time.perf_counter() - t
        torch.manual_seed(seed)
        model = build_model(candidate.arch)
        t = time.perf_counter()
        result = train(model, splits, TrainConfig(epochs=1, max_samples=args.alone_samples, batch_size=64, lr=0.05,
                                                  seed=seed, threads=1, progress=False))
        alone = evaluate(model, splits.test)
        rows.append({"seed": seed, "params": count(candidate.arch).params, "supernet_val": round(shared, 4),
                     "standalone_test": round(alone, 4), "standalone_failed": result.failed,
                     "supernet_s": round(shared_s, 2), "standalone_s": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)

    a, b = [r["supernet_val"] for r in rows], [r["standalone_test"] for r in rows]
    rho, tau = spearmanr(a, b).statistic, kendalltau(a, b).statistic
    gap = sum(abs(x - y) for x, y in zip(a, b)) / len(rows) * 100
    data = {
        "space": space.config.model_dump(mode="json"), "dataset": "fashion-mnist", "seeds": seeds,
        "supernet": {**vars(replace(config)), "seconds": round(supernet_s, 1), "history": state.history},
        "standalone": {"epochs": 1, "max_samples": args.alone_samples, "batch_size": 64, "lr": 0.05,
                       "split": "test"}, "eval_images": args.eval,
        "candidates": rows, "spearman": round(float(rho), 3), "kendall": round(float(tau), 3),
        "mean_abs_gap_points": round(gap, 2),
        "note": "dense candidates only (compression off); supernet accuracy on the first eval_images of the "
                "validation split, stand-alone on the first eval_images of the test split; one core, on a "
                "machine shared with other jobs",
    }
    summary = (f"supernet ({args.epochs} epochs x {args.samples} images, {supernet_s / 60:.1f} min) vs stand-alone "
               f"({args.alone_samples} images) on {len(rows)} fresh dense candidates: Spearman {rho:.2f}, "
               f"Kendall {tau:.2f}, mean gap {gap:.1f} points")
    print(summary)
    if not args.quick:
        write_result("supernet", data, summary)


if __name__ == "__main__":
    main()
