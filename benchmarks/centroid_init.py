"""Deep Compression, Figure 8: k-means centroid initialization (linear, density, random) at 2-8 bits.

Han et al. (2016, section 6.2) quantize a pruned network with per-layer k-means
weight sharing started from three initializations and find that *linear*
(centroids evenly spaced between the smallest and largest weight) beats
*density* (evenly spaced quantiles) and *random* (Forgy: randomly chosen
weights), most of all at few bits, because it keeps the rare large weights.

Here: LeNet-300-100 (the ``lenet`` space) trained on the first 10,000
Fashion-MNIST training images, pruned layer-wise at the paper's LeNet-300-100
rates (92%, 91%, 74%) and retrained with the masks fixed, then for every
``bits`` and init a copy is weight-shared with :func:`nas.compress.share_weights`
and measured on the official 10,000-image test set, before and after fine-tuning
its centroids (one epoch at lr 0.01; only the centroids and biases train). One network per
seed; the seed also drives the random init. Writes
``results/bench/centroid_init.json``, ``results/bench/centroid_init.png`` and a row
in ``results/bench/README.md``.

    nice -n 10 .venv/bin/python benchmarks/centroid_init.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # scikit-learn's k-means: one thread, as torch

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import nas
from _common import RESULTS, write_result
from _fashion import first_images, lenet_300_100
from nas.codebooks import INITS
from nas.compress import encode, magnitude_prune, share_weights
from nas.data import Splits, load_dataset
from nas.plots._style import FRONT, GREY, SECOND, new_figure, save, style
from nas.train import TrainConfig, evaluate, train

#: Deep Compression's LeNet-300-100 pruning rates (Table 2: 8%, 9% and 26% of the weights kept).
SPARSITY = {"layers.0.0": 0.92, "layers.1.0": 0.91, "layers.2.0": 0.74}
COLOURS = {"linear": FRONT, "density": SECOND, "random": GREY}
MARKERS = {"linear": "o", "density": "^", "random": "s"}


def pruned_network(seed: int, data: Splits, args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, float]]:
    """LeNet-300-100 trained, pruned at the paper's rates and retrained; test accuracies on the way."""
    torch.manual_seed(seed)
    model = nas.build_model(lenet_300_100())
    base = dict(batch_size=128, seed=seed, threads=1, progress=False)
    train(model, data, TrainConfig(epochs=args.dense_epochs, lr=args.lr, **base))  # type: ignore[arg-type]
    dense = evaluate(model, data.test)
    magnitude_prune(model, layers=SPARSITY)
    train(model, data, TrainConfig(epochs=args.retrain_epochs, lr=args.lr, **base))  # type: ignore[arg-type]
    return model, {"dense": dense, "pruned": evaluate(model, data.test)}


def share_and_tune(pruned: torch.nn.Module, bits: int, init: str, seed: int, data: Splits,
                   args: argparse.Namespace) -> dict[str, Any]:
    model = copy.deepcopy(pruned)
    share_weights(model, bits, init=init, seed=seed)  # type: ignore[arg-type]
    before = evaluate(model, data.test)
    train(model, data, TrainConfig(epochs=args.centroid_epochs, lr=args.centroid_lr, weight_decay=0.0,
                                   batch_size=128, seed=seed, threads=1, progress=False))
    return {"seed": seed, "bits": bits, "init": init, "no_finetune": before, "finetuned": evaluate(model, data.test),
            "file_bytes": encode(model)[1].file_bytes}


def summarize(rows: list[dict[str, Any]], inits: list[str], bits: list[int]) -> dict[str, Any]:
    """Mean, min and max test accuracy over the seeds for each init, bits and phase."""
    out: dict[str, Any] = {}
    for init in inits:
        out[init] = {}
        for b in bits:
            cell = [r for r in rows if r["init"] == init and r["bits"] == b]
            out[init][str(b)] = {phase: {"mean": statistics.mean(r[phase] for r in cell),
                                         "min": min(r[phase] for r in cell), "max": max(r[phase] for r in cell)}
                                 for phase in ("no_finetune", "finetuned")}
    return out


def headline(summary: dict[str, Any], bits: list[int], pruned: float, seeds: list[int],
             wins: dict[str, list[int]]) -> str:
    """The README row: each init at the two fewest bits, the largest gap between inits elsewhere."""
    def cell(b: int, phase: str) -> str:
        return " / ".join(f"{100 * summary[i][str(b)][phase]['mean']:.2f}" for i in summary)

    def gap(b: int, phase: str) -> float:
        means = [summary[i][str(b)][phase]["mean"] for i in summary]
        return 100 * (max(means) - min(means))

    few, rest = sorted(bits)[:2], sorted(bits)[2:]
    spread = [100 * (c[phase]["max"] - c[phase]["min"]) for cells in summary.values() for c in cells.values()
              for phase in ("no_finetune", "finetuned")]
    names = {"no_finetune": "without centroid fine-tuning", "finetuned": "with"}
    parts = [f"{names[phase]}: " + ", ".join(f"{b} bits {cell(b, phase)}%" for b in few)
             + (f", {rest[0]}-{rest[-1]} bits within {max(gap(b, phase) for b in rest):.2f} points" if rest else "")
             for phase in ("no_finetune", "finetuned")]
    return (f"pruned LeNet-300-100 (float {100 * pruned:.2f}%), Fashion-MNIST 10k train, seeds {seeds}, test accuracy "
            f"{' / '.join(summary)} init; " + "; ".join(parts)
            + f"; linear has the best mean at bits {wins['no_finetune']} without and {wins['finetuned']} with "
              f"fine-tuning; one init's range over the seeds is {statistics.median(spread):.2f} points (median) "
              "(paper: linear best, mostly at few bits)")


def plot(summary: dict[str, Any], bits: list[int], pruned: float, seeds: list[int], path: Path) -> Path:
    with style():
        fig = new_figure(8.0, 3.8)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, phase, label in zip(axes, ("no_finetune", "finetuned"), ("without fine-tuning", "with fine-tuning")):
            for init, cells in summary.items():
                mean = [100 * cells[str(b)][phase]["mean"] for b in bits]
                low = [m - 100 * cells[str(b)][phase]["min"] for m, b in zip(mean, bits)]
                high = [100 * cells[str(b)][phase]["max"] - m for m, b in zip(mean, bits)]
                ax.errorbar(bits, mean, yerr=[low, high], color=COLOURS[init], marker=MARKERS[init], ms=4, lw=1.4,
                            capsize=2, label=f"{init} init" if phase == "no_finetune" else None)
            ax.axhline(100 * pruned, color="0.3", lw=0.8, ls="--",
                       label="pruned, 32-bit weights" if phase == "no_finetune" else None)
            ax.set_xticks(bits)
            ax.set_xlabel("bits per weight (2**bits centroids per layer)")
            ax.set_title(f"centroids {label}")
        axes[0].set_ylabel("test accuracy (%)")
        fig.suptitle(f"Centroid initialization, pruned LeNet-300-100 on Fashion-MNIST (mean and range of seeds "
                     f"{', '.join(map(str, seeds))})", fontsize=10)
        fig.legend(loc="outside lower center", ncol=4, frameon=False)
        return save(fig, path, description="Deep Compression Figure 8 reproduction: test accuracy against bits "
                                           "per weight for linear, density and random centroid initialization")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=list(range(2, 9)))
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--retrain-epochs", type=int, default=4)
    parser.add_argument("--centroid-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--centroid-lr", type=float, default=0.01,
                        help="each centroid moves by the mean of its members' gradients (nas.compress.SharedWeight), "
                             "so the weights' retraining rate suits it")
    parser.add_argument("--no-write", action="store_true", help="do not update results/bench (quick trials)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = first_images(load_dataset("fashion-mnist", seed=0), args.train_samples)
    rows: list[dict[str, Any]] = []
    networks: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        pruned, networks[seed] = pruned_network(seed, data, args)
        print(f"seed {seed}: dense {networks[seed]['dense']:.4f}, pruned {networks[seed]['pruned']:.4f}", flush=True)
        for bits in args.bits:
            for init in args.inits:
                rows.append(share_and_tune(pruned, bits, init, seed, data, args))
                r = rows[-1]
                print(f"  {bits} bits {init:<8} {r['no_finetune']:.4f} -> {r['finetuned']:.4f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    summary = summarize(rows, args.inits, args.bits)
    pruned_mean = statistics.mean(n["pruned"] for n in networks.values())
    minutes = (time.perf_counter() - start) / 60
    if args.no_write:
        return 0
    picture = plot(summary, args.bits, pruned_mean, args.seeds, RESULTS / "centroid_init.png")
    wins = {phase: [b for b in args.bits
                    if max(args.inits, key=lambda i: summary[i][str(b)][phase]["mean"]) == "linear"]
            for phase in ("no_finetune", "finetuned")}
    payload = {
        "paper": "Han et al. 2016, Deep Compression, Figure 8 (linear init best, most of all at few bits)",
        "set_up": {"network": "LeNet-300-100 (lenet space)", "pruning": SPARSITY,
                   "data": f"fashion-mnist, first {args.train_samples} training images (split seed 0); "
                           "official test set (10,000) for every accuracy",
                   "quantizer": "nas.compress.share_weights (per-layer 1-d k-means, scikit-learn)"},
        "seeds": args.seeds, "settings": vars(args), "networks": networks, "summary": summary, "runs": rows,
        "linear_best_at_bits": wins, "picture": picture.name, "minutes": minutes,
    }
    text = headline(summary, args.bits, pruned_mean, args.seeds, wins) + f"; [plot](centroid_init.png); {minutes:.1f} min"
    write_result("centroid_init", payload, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
