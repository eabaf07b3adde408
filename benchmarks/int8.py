"""Benchmark: int8 ONNX against float32 ONNX, accuracy and onnxruntime latency, on Fashion-MNIST.

Candidates: the architectures of the first three seeds of the ``mobilenetv2`` space (at
Fashion-MNIST's 1x28x28 input) with at most 10 M MAdds (seeds 28, 62, 149; training depthwise
and grouped convs on a shared 2-core CPU is slow, so small ones), their own
compression replaced by ``quantization: int8``. Each is trained (float32, ``--epochs`` (2) on
the first ``--train`` (1,000) training images, batch 32, seed 0), exported to float32 ONNX, then:

- ``ptq``: that float32 ONNX quantized by onnxruntime (no int8-aware training);
- ``qat``: the int8 stage applied (per-channel int8 weights, straight-through gradient) and
  fine-tuned ``--recovery`` epoch(s), as ``nas finetune`` does, then exported and quantized.

Each int8 file is calibrated with MinMax and with Percentile (99.99) on 512 training images.
Accuracy: the whole test split (10,000 images) in onnxruntime. Latency: batch 1, 1 thread,
float32 and int8 files of a candidate interleaved over 21 rounds, median per-call time.
Goal: int8 >= 1.5x faster than float32 at <= 1 point of test accuracy lost.

Writes section ``int8`` of ``results/bench/compression_costs.json``.
Run: ``.venv/bin/python benchmarks/int8.py`` (about 30 minutes on 2 CPU cores shared with other jobs: torch's CPU backward of
7x7 depthwise convs takes ~15 s per batch of 128 there, hence the small training set).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nas  # noqa: E402
from _common import merge_section  # noqa: E402
from nas.compress import apply_compression  # noqa: E402
from nas.compress.int8 import OnnxModel, export_onnx, quantize_int8  # noqa: E402
from nas.data import load_dataset  # noqa: E402
from nas.hardware.measure import onnx_latency  # noqa: E402
from nas.spec import CompressionSpec  # noqa: E402
from nas.train import TrainConfig, train  # noqa: E402

MAX_MADDS = 10_000_000
CALIBRATION = 512


def candidates(n: int) -> list[tuple[int, nas.ArchSpec]]:
    space = nas.load_space("mobilenetv2").with_input((1, 28, 28), 10)
    out = []
    seed = 0
    while len(out) < n:
        arch = space.random(seed).arch
        if nas.count(arch).madds <= MAX_MADDS:
            out.append((seed, arch))
        seed += 1
    return out


def run_one(seed: int, arch: nas.ArchSpec, splits: object, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    started = time.perf_counter()

    def step(what: str) -> None:
        print(f"seed {seed}: {what} at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    torch.manual_seed(0)
    model = nas.build_model(arch)
    config = TrainConfig(epochs=args.epochs, batch_size=32, seed=0, threads=torch.get_num_threads(), progress=False)
    train(model, splits, config)
    step("trained")
    qat = apply_compression(model, CompressionSpec(quantization="int8"))
    train(qat, splits, replace(config, epochs=args.recovery, seed=1))
    step("int8-aware fine-tune done")
    calib = splits.train[:CALIBRATION][0]
    fp32 = tmp / f"s{seed}.onnx"
    export_onnx(copy.deepcopy(model), fp32, arch.input_shape)
    fp32_qat = tmp / f"s{seed}-qat.onnx"
    export_onnx(qat, fp32_qat, arch.input_shape)
    row: dict[str, object] = {"seed": seed, "madds": nas.count(arch).madds, "params": nas.count(arch).params,
                              "fp32_test_accuracy": OnnxModel(fp32).accuracy(splits.test),
                              "qat_fp32_test_accuracy": OnnxModel(fp32_qat).accuracy(splits.test)}
    step("exported")
    files = {}
    for training, source in (("ptq", fp32), ("qat", fp32_qat)):
        for method in ("minmax", "percentile"):
            path = quantize_int8(source, tmp / f"s{seed}-{training}-{method}.int8.onnx", calib, method=method)
            acc = OnnxModel(path).accuracy(splits.test)
            row[f"int8_{training}_{method}_test_accuracy"] = acc
            row[f"int8_{training}_{method}_points_lost"] = round(100 * (row["fp32_test_accuracy"] - acc), 2)
            files[(training, method)] = path
    fp32_ms, int8_ms = onnx_latency([fp32, files[("qat", "minmax")]], arch.input_shape, rounds=args.rounds)
    row.update(fp32_ms=fp32_ms, int8_ms=int8_ms, speedup=round(fp32_ms / int8_ms, 3),
               seconds=round(time.perf_counter() - started, 1))
    print(row, flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1_000, help="training images (first N of the training split)")
    p.add_argument("--val", type=int, default=500, help="validation images train() reports (first N)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--recovery", type=int, default=1, help="int8-aware fine-tuning epochs")
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args()
    full = load_dataset("fashion-mnist")
    x, y = full.train[:args.train]
    splits = replace(full, train=TensorDataset(x, y), val=TensorDataset(*full.val[:args.val]))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, arch in candidates(3):
            rows.append(run_one(seed, arch, splits, args, Path(tmp)))
            write(rows, args, len(full.test))  # after each candidate: an interrupted run keeps its figures
    return 0


def write(rows: list[dict[str, object]], args: argparse.Namespace, test_images: int) -> None:
    best = {f"{t}_{m}": round(sum(r[f"int8_{t}_{m}_points_lost"] for r in rows) / len(rows), 2)
            for t in ("ptq", "qat") for m in ("minmax", "percentile")}
    speedups = sorted(r["speedup"] for r in rows)
    summary = {
        "candidates": "mobilenetv2 space at 1x28x28, first 3 seeds with <= 10 M MAdds, compression set to int8",
        "seeds": [r["seed"] for r in rows], "train_images": args.train, "test_images": test_images,
        "epochs": args.epochs, "recovery_epochs": args.recovery, "calibration_images": CALIBRATION,
        "latency": f"onnxruntime, batch 1, 1 thread, {args.rounds} interleaved rounds, median; int8 = qat/minmax",
        "goal": ">= 1.5x faster at <= 1 point lost",
        "mean_points_lost": best, "median_speedup": speedups[len(speedups) // 2],
        "met": all(r["speedup"] >= 1.5 and r["int8_qat_minmax_points_lost"] <= 1 for r in rows),
        "rows": rows,
    }
    path = merge_section("int8", summary)
    print(f"{path}: median speedup {summary['median_speedup']}x, mean points lost {best}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
