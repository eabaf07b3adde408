"""Deep Compression on LeNet-300-100 and LeNet-5, Fashion-MNIST, counted from the real file.

Pipeline per network (Han et al. 2016): dense training -> layer-wise magnitude
pruning at the paper's per-layer rates (about 92% of all weights) -> retraining
with the masks fixed -> 5-bit k-means weight sharing per layer with linear
initialization -> centroid fine-tuning (each centroid's gradient is the sum of its
members') -> Huffman coding of weight and relative-index codes, written to a
``nas.compress`` container. The compression rate is 32-bit dense parameters over
the container's byte size; the accuracy is measured on the official test set with
the model *loaded back from that file*.

Writes per-layer tables to ``results/deep_compression/{net}.md|csv``, all figures to
``results/bench/deep_compression.json`` and one row to ``results/bench/README.md``.

    .venv/bin/python benchmarks/deep_compression.py
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import nas
from _common import write_result
from nas.compress import load, magnitude_prune, save, share_weights
from nas.compress.container import ContainerReport, overhead_bits
from nas.data import load_dataset
from nas.train import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parents[1]
#: Per-layer pruning rates: Deep Compression's (Tables 2 and 3: weights kept 66%, 12%, 8%, 19% for LeNet-5;
#: 8%, 9%, 26% for LeNet-300-100), except LeNet-300-100's first layer, pruned to 93% instead of 92%:
#: at 92% the file measured 39.5x (Fashion-MNIST's masks cluster less than MNIST's, whose blank border
#: pixels give long runs of pruned weights), at 93% it passes 40x; 92.7% of all weights are pruned.
NETS: dict[str, dict[str, Any]] = {
    "lenet-300-100": {
        "choices": {"variant": "lenet-300-100", "mlp.hidden": "300-100"},
        "sparsity": {"layers.0.0": 0.93, "layers.1.0": 0.91, "layers.2.0": 0.74},
        "epochs": (4, 3, 1),  # dense training, retraining after pruning, centroid fine-tuning
    },
    "lenet-5": {
        "choices": {"variant": "lenet-5", "conv.channels": "20-50", "conv.kernel": 5, "conv.fc": "500"},
        "sparsity": {"layers.0.0": 0.34, "layers.2.0": 0.88, "layers.5.0": 0.92, "layers.6.0": 0.81},
        "epochs": (3, 2, 1),
    },
}


def build_arch(name: str) -> nas.ArchSpec:
    space = nas.load_space("lenet")
    choices = NETS[name]["choices"]
    return space.config.build(lambda key, options: choices.get(key, options[0]))


def layer_rows(report: ContainerReport) -> list[dict[str, Any]]:
    """Deep Compression's table: weights, % kept, weight bits (P+Q, P+Q+H), index bits (P+Q, P+Q+H), rate."""
    rows = []
    for layer in report.layers:
        rows.append({
            "layer": layer.name,
            "kind": layer.kind,
            "weights": layer.weights,
            "kept_pct": round(100 * layer.kept / layer.weights, 2),
            "weight_bits_pq": layer.value_bits,
            "weight_bits_pqh": round(layer.value_stream_bits / max(layer.kept, 1), 2),
            "index_bits_pq": layer.index_bits,
            "index_bits_pqh": round(layer.index_stream_bits / max(layer.entries, 1), 2),
            "file_bytes": layer.bits_file // 8,
            "rate_pct": round(100 * layer.bits_file / layer.dense_bits, 2),
        })
    return rows


def write_tables(name: str, rows: list[dict[str, Any]], total: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    head = ("| layer | weights | kept | weight bits P+Q | weight bits P+Q+H | index bits P+Q | index bits P+Q+H "
            "| bytes in file | compress rate |")
    lines = [f"# {name} on Fashion-MNIST: Deep Compression, measured from the container file", "",
             head, "| --- " * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['weights']:,} | {r['kept_pct']}% | {r['weight_bits_pq']} | "
                     f"{r['weight_bits_pqh']} | {r['index_bits_pq']} | {r['index_bits_pqh']} | {r['file_bytes']:,} | "
                     f"{r['rate_pct']}% |")
    lines.append(f"| (header) | | | | | | | {total['header_bytes']:,} | |")
    lines.append(f"| total | {total['weights']:,} | {total['kept_pct']}% | 5 | | | | {total['file_bytes']:,} | "
                 f"{total['rate_pct']}% ({total['rate']}x) |")
    lines += ["", f"Accuracy (test): dense {total['dense_acc']:.2f}%, compressed (loaded from file) "
              f"{total['compressed_acc']:.2f}%. Rate = 32-bit dense parameters / file size; "
              "the file also holds the header, names, shapes, Huffman tables and biases.", ""]
    (out_dir / f"{name}.md").write_text("\n".join(lines))


def run_net(name: str, splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    arch = build_arch(name)
    model = nas.build_model(arch)
    base = dict(batch_size=args.batch_size, seed=args.seed, threads=args.threads, progress=False)
    dense_epochs, retrain_epochs, centroid_epochs = args.epochs or NETS[name]["epochs"]
    dense = train(model, splits, TrainConfig(epochs=dense_epochs, lr=args.lr, **base))
    dense_acc = evaluate(model, splits.test)
    t_dense = time.perf_counter() - t0

    magnitude_prune(model, layers=NETS[name]["sparsity"])
    pruned_acc_before = evaluate(model, splits.test)
    # retrain with the masks fixed (torch's prune hook keeps pruned weights at zero)
    train(model, splits, TrainConfig(epochs=retrain_epochs, lr=args.lr, **base))
    pruned_acc = evaluate(model, splits.test)

    share_weights(model, args.bits, init="linear", seed=args.seed)
    shared_acc_before = evaluate(model, splits.test)
    # only centroids and biases train; no weight decay pulling shared values to zero
    train(model, splits, TrainConfig(epochs=centroid_epochs, lr=args.lr / 50, weight_decay=0.0, **base))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.nasz"
        report = save(model, path, huffman_coding=True)
        file_bytes = path.stat().st_size
        loaded = load(path)
    compressed_acc = evaluate(loaded, splits.test)
    dense_bits = 32 * nas.count(arch).params
    rate = dense_bits / (8 * file_bytes)
    kept = sum(layer.kept for layer in report.layers)
    weights = sum(layer.weights for layer in report.layers)
    rows = layer_rows(report)
    total = {"weights": weights, "kept_pct": round(100 * kept / weights, 2), "file_bytes": file_bytes,
             "rate_pct": round(100 * 8 * file_bytes / dense_bits, 2), "rate": round(rate, 1),
             "header_bytes": report.header_bytes,
             "dense_acc": 100 * dense_acc, "compressed_acc": 100 * compressed_acc}
    write_tables(name, rows, total, ROOT / "results" / "deep_compression")
    result = {
        "params": nas.count(arch).params,
        "dense_bytes": dense_bits // 8,
        "file_bytes": file_bytes,
        "rate": rate,
        "overhead_bytes": overhead_bits(report) // 8,
        "kept_fraction": kept / weights,
        "accuracy": {"dense": dense_acc, "pruned_before_retrain": pruned_acc_before, "pruned": pruned_acc,
                     "shared_before_finetune": shared_acc_before, "compressed_from_file": compressed_acc,
                     "loss_points": 100 * (dense_acc - compressed_acc)},
        "dense_val_history": dense.history,
        "layers": rows,
        "seconds": {"dense": t_dense, "total": time.perf_counter() - t0},
    }
    print(f"{name}: dense {100 * dense_acc:.2f}% -> compressed {100 * compressed_acc:.2f}% "
          f"(pruned {100 * pruned_acc:.2f}%), {file_bytes:,} bytes, {rate:.1f}x, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--epochs", type=int, nargs=3, metavar=("DENSE", "RETRAIN", "CENTROID"),
                        help="epochs of the three training phases for every net (default: per net, see NETS)")
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not update results/bench (quick trials)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    splits = load_dataset("fashion-mnist", seed=args.seed)
    results = {name: run_net(name, splits, args) for name in args.nets}
    seconds = time.perf_counter() - start
    goal = all(r["rate"] >= 40 and r["accuracy"]["loss_points"] <= 0.3 for r in results.values())
    payload = {
        "goal": ">= 40x from the container file with <= 0.3 points test-accuracy loss, both LeNets",
        "goal_met": goal,
        "results": results,
        "settings": vars(args),
        "seconds": seconds,
    }
    if args.no_write:
        return 0
    summary = "; ".join(f"{n}: {r['rate']:.1f}x, {100 * r['accuracy']['dense']:.2f}% -> "
                        f"{100 * r['accuracy']['compressed_from_file']:.2f}%" for n, r in results.items())
    write_result("deep_compression", payload, f"Fashion-MNIST, rate from the container file: {summary}; "
                                              f"{seconds / 60:.1f} min")
    print(f"done in {seconds / 60:.1f} min; goal met: {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
