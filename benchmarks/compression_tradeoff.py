"""Deep Compression, Figure 6: accuracy loss against compression rate, with retraining.

Han et al. (2016, section 6.1) compress AlexNet by pruning only, by quantization
(k-means weight sharing) only, by both, and by SVD, retraining after each stage,
and find that pruning and quantization together keep the accuracy down to a few
percent of the size, where either alone or SVD lose much earlier.

Here: LeNet-300-100 (the ``lenet`` space) trained on the first 10,000
Fashion-MNIST training images; :func:`nas.plots.compression_tradeoff` compresses a
copy per setting with :func:`nas.compress.apply_compression` (pruning: the same
sparsity in every layer; quantization: per-layer k-means codebooks, linear init;
low-rank: SVD of each linear layer at a fraction of the full rank), retraining after
each stage on the same 10,000 images (pruned / factorized weights: ``--retrain-epochs``
at lr 0.01; centroids: one epoch at lr 0.01). The size is that of
the container file ``nas compress --no-huffman --out`` writes (P+Q, measured), as a
share of the 32-bit dense parameters; accuracy is on the official 10,000-image test
set, as a change from the uncompressed network of the same seed. Writes
``results/bench/compression_tradeoff.json`` and ``.png`` and a row in
``results/bench/README.md``.

    nice -n 10 .venv/bin/python benchmarks/compression_tradeoff.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # scikit-learn's k-means: one thread, as torch

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

import nas
from _common import RESULTS, write_result
from _fashion import first_images, lenet_300_100
from nas.data import Splits, load_dataset
from nas.plots import compression_tradeoff, plot_compression_tradeoff
from nas.train import TrainConfig, evaluate, train

METHODS = ("pruning + quantization", "pruning only", "quantization only", "low-rank")


def one_seed(seed: int, data: Splits, args: argparse.Namespace) -> pd.DataFrame:
    arch = lenet_300_100()
    torch.manual_seed(seed)
    model = nas.build_model(arch)
    base: dict[str, Any] = dict(batch_size=128, seed=seed, threads=1, progress=False)
    train(model, data, TrainConfig(epochs=args.dense_epochs, lr=args.lr, **base))

    def retrain(m: nn.Module, stage: str) -> None:
        # after quantization only the centroids (1-d: no weight decay) and biases train
        train(m, data, TrainConfig(epochs=1 if stage == "quantize" else args.retrain_epochs, lr=0.01, **base))

    table = compression_tradeoff(model, arch, lambda m: evaluate(m, data.test), sparsities=args.sparsities,
                                 bits=args.bits, ranks=args.ranks, retrain=retrain, seed=seed)
    table["seed"] = seed
    table["loss points"] = 100 * (table["accuracy"].iloc[0] - table["accuracy"])
    return table


def draw(mean: pd.DataFrame, seeds: list[int]) -> Path:
    return plot_compression_tradeoff(
        mean, RESULTS / "compression_tradeoff.png", retrained=True, log_size=True, floor=-10.0,
        title=f"Deep Compression Fig. 6 on Fashion-MNIST: LeNet-300-100, retrained after each stage\n"
              f"(mean of seeds {', '.join(map(str, seeds))}; uncompressed {100 * mean['accuracy'].iloc[0]:.2f}%)")


def smallest_within(mean: pd.DataFrame, points: float) -> dict[str, float | None]:
    """Per method, the smallest size (% of dense) whose mean accuracy loss is at most ``points``."""
    out: dict[str, float | None] = {}
    for method in METHODS:
        ok = mean[(mean["method"] == method) & (mean["loss points"] <= points)]
        out[method] = None if ok.empty else round(float(ok["size %"].min()), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.97])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 5, 4, 3, 2],
                        help="quantization only; pruning + quantization pairs them with --sparsities in order")
    parser.add_argument("--ranks", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--no-write", action="store_true", help="do not update results/bench (quick trials)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = first_images(load_dataset("fashion-mnist", seed=0), args.train_samples)
    tables = []
    for seed in args.seeds:
        tables.append(one_seed(seed, data, args))
        print(tables[-1].to_string(index=False), f"\n({time.perf_counter() - start:.0f} s)", flush=True)
    runs = pd.concat(tables, ignore_index=True)
    mean = (runs.groupby(["method", "setting"], sort=False)[["file bytes", "size %", "estimate %", "accuracy",
                                                             "loss points"]].mean().reset_index())
    minutes = (time.perf_counter() - start) / 60
    if args.no_write:
        print(mean.to_string(index=False))
        return 0
    picture = draw(mean, args.seeds)
    within = {f"{p} points": smallest_within(mean, p) for p in (0.5, 1.0)}
    payload = {
        "paper": "Han et al. 2016, Deep Compression, Figure 6 (pruning + quantization best; SVD worst)",
        "set_up": {"network": "LeNet-300-100 (lenet space)",
                   "data": f"fashion-mnist, first {args.train_samples} training images (split seed 0) for training "
                           "and retraining; official test set (10,000) for every accuracy",
                   "size": "container file bytes without Huffman coding (nas.compress.encode, as `nas compress "
                           "--no-huffman --out` writes), over 32-bit dense parameters",
                   "retraining": f"after each stage at lr 0.01: pruning / low-rank {args.retrain_epochs} epochs, "
                                 "centroids (each moved by the mean of its members' gradients) 1 epoch"},
        "seeds": args.seeds, "settings": vars(args), "smallest_size_within": within,
        "mean": mean.to_dict(orient="records"), "runs": runs.to_dict(orient="records"),
        "picture": picture.name, "minutes": minutes,
    }
    half = within["0.5 points"]
    text = (f"LeNet-300-100, Fashion-MNIST (10k train), retrained, seeds {args.seeds}, size from the container "
            f"file: smallest size within 0.5 points of the uncompressed "
            f"{100 * mean['accuracy'].iloc[0]:.2f}%: "
            + ", ".join(f"{m} {'none' if v is None else f'{v:g}%'}" for m, v in half.items())
            + f"; [plot](compression_tradeoff.png); {minutes:.1f} min")
    write_result("compression_tradeoff", payload, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
