"""Benchmark: winners from a supernet's weights vs from scratch, and the compressed phase with vs without its own
learning rate and batch-norm recalibration (Fashion-MNIST, issue 15 item 5).

A supernet of the fidelity benchmark's space (mobilenetv2-tiny at 28x28, :func:`supernet_fidelity.fidelity_space`)
is trained briefly (``--epochs`` x ``--samples`` images). Three winners (architectures of listed seeds, each
with a hard compression setting from the issue: binary weights at 50% sparsity, ternary at 25%, 4-bit
codebooks with rank 0.5 at 75% sparsity) are then each

1. distilled for the same budget from the supernet's largest child (extracted, not trained: the teacher
   :mod:`nas.inherit` gives ``nas finetune``), starting from (a) their supernet weights and (b) a fresh
   initialisation;
2. compressed with a recovery fine-tune after each stage (:func:`nas.compress.compress_with_recovery`), in
   the arms ``old`` (the recovery at the training lr, no recalibration: the pipeline before this change),
   ``tenth`` (a tenth of it), ``recal`` (the training lr, batch norm recalibrated after each stage and
   recovery: the default now) and ``tenth_recal`` (both); every recovery has its own cosine schedule;
   (b) runs ``old`` and ``tenth_recal`` only.

Reported: test accuracy (first ``--eval`` test images) of each, and the ratios recal/old and supernet/scratch
(distilled).
Writes ``results/bench/winners_recovery.json`` and its row in ``results/bench/README.md``.

Run: ``nice -n 10 .venv/bin/python benchmarks/winners_recovery.py`` (about 15 CPU-minutes, one thread);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from _common import write_result
from supernet_fidelity import fidelity_space

from nas import count
from nas.compress import compress_with_recovery
from nas.data import load_dataset
from nas.distill import DistillConfig, distill
from nas.inherit import largest_child, start
from nas.spec import Candidate, CompressionSpec
from nas.supernet import SupernetTraining, train_supernet
from nas.train import TrainConfig, calibration_images, evaluate

SEEDS = (264037915, 345444770, 1911139520)
COMPRESSIONS = (CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.5, quantization="binary"),
                CompressionSpec(sparsity_conv=0.25, sparsity_linear=0.25, quantization="ternary"),
                CompressionSpec(sparsity_conv=0.75, sparsity_linear=0.75, codebook_bits=4, lowrank_ratio=0.5))
#: (training-lr share, recalibrate) of each compressed-phase arm; ``recal`` is the default now
#: (:data:`nas.winners.RECOVERY_LR_SHARE` 1, chosen from this measurement). From scratch: ``old`` and ``tenth_recal``.
ARMS = {"old": (1.0, False), "tenth": (0.1, False), "recal": (1.0, True), "tenth_recal": (0.1, True)}
SCRATCH_ARMS = ("old", "tenth_recal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="supernet epochs (the first: largest network only)")
    parser.add_argument("--samples", type=int, default=2000, help="supernet training images per epoch")
    parser.add_argument("--train", type=int, default=2000, help="winner distillation images (one epoch)")
    parser.add_argument("--recovery", type=int, default=1000, help="recovery images after each stage")
    parser.add_argument("--eval", type=int, default=2000, help="test images scored (validation: half)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.samples, args.train, args.recovery, args.eval = 2, 256, 256, 128, 256
    torch.set_num_threads(1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    full = load_dataset("fashion-mnist")
    splits = replace(full, val=TensorDataset(*(t[:args.eval // 2] for t in full.val.tensors)),
                     test=TensorDataset(*(t[:args.eval] for t in full.test.tensors)))
    space = fidelity_space()
    sn = SupernetTraining(epochs=args.epochs, warmup_epochs=1, max_samples=args.samples, batch_size=64,
                          random_children=1, compressed_share=0.25, seed=0, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        net, state = train_supernet(space, splits, sn, Path(tmp) / "supernet.safetensors", progress=False)
    supernet_cpu = time.process_time() - cpu0
    calibration = calibration_images(splits, 8, 64, seed=0)
    teacher, _ = largest_child(net, calibration, 64)
    teacher_test = evaluate(teacher, splits.test)
    print(f"supernet {supernet_cpu:.0f} CPU s, largest child {teacher_test:.2%}", flush=True)
    base = TrainConfig(epochs=1, max_samples=args.train, batch_size=64, lr=0.05, threads=1, progress=False)
    # the winners' training split: the first --train images (distillation caches the teacher's logits on all of it)
    splits = replace(splits, train=TensorDataset(*(t[:args.train] for t in splits.train.tensors)))

    rows = []
    for seed, spec in zip(SEEDS, COMPRESSIONS):
        arch = space.random(seed).arch
        row = {"seed": seed, "params": count(arch).params, "compression": Candidate(arch, spec).to_dict()["compression"]}
        for init_net, init in ((net, "supernet"), (None, "scratch")):
            student, _ = start(init_net, arch, seed, calibration, 64)
            row[f"{init}_start_test"] = round(evaluate(student, splits.test), 4)
            distill(student, teacher, splits, replace(base, seed=seed), DistillConfig())
            row[f"{init}_distilled_test"] = round(evaluate(student, splits.test), 4)
            for arm, (share, recal) in ARMS.items():
                if init == "scratch" and arm not in SCRATCH_ARMS:
                    continue
                recovery = replace(base, max_samples=args.recovery, lr=share * base.lr, seed=seed)
                compressed, steps = compress_with_recovery(student, spec, splits, recovery,
                                                           calibration=calibration if recal else None)
                row[f"{init}_{arm}_test"] = round(evaluate(compressed, splits.test), 4)
                row[f"{init}_{arm}_failed"] = next((s["failed"] for s in steps if s["failed"]), None)
        rows.append(row)
        print(row, flush=True)

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    means = {k: round(mean(k), 4) for k in rows[0] if k.endswith("_test")}
    cpu = time.process_time() - cpu0
    data = {"space": space.config.model_dump(mode="json"), "dataset": "fashion-mnist", "seeds": list(SEEDS),
            "supernet": {**vars(sn), "cpu_seconds": round(supernet_cpu, 1), "history": state.history},
            "teacher_test": round(teacher_test, 4), "distill": {"images": args.train, "lr": base.lr, "batch_size": 64},
            "recovery": {"images_per_stage": args.recovery, "schedule": "cosine",
                         "recalibration": "8 batches of 64 training images"},
            "arms": {k: {"lr_share": share, "recalibrate": recal} for k, (share, recal) in ARMS.items()},
            "eval": {"val": args.eval // 2, "test": args.eval}, "winners": rows, "means": means,
            "ratio_recal_over_old": round(means["supernet_recal_test"] / max(means["supernet_old_test"], 1e-9), 2),
            "ratio_distilled_supernet_over_scratch": round(means["supernet_distilled_test"]
                                                           / max(means["scratch_distilled_test"], 1e-9), 2),
            "cpu_seconds": round(cpu, 1), "wall_seconds": round(time.perf_counter() - wall0, 1),
            "note": "one thread, nice -n 10, on a 2-core machine shared with other jobs; test accuracy on the first "
                    "eval test images"}
    summary = (f"Fashion-MNIST, 3 winners (seeds {', '.join(map(str, SEEDS))}; binary, ternary, 4-bit+rank 0.5), "
               f"compressed test accuracy, mean, from supernet weights: old recovery (training lr, no BN recal) "
               f"{means['supernet_old_test']:.1%}, lr/10 {means['supernet_tenth_test']:.1%}, BN recal (the default "
               f"now) {means['supernet_recal_test']:.1%} (**{data['ratio_recal_over_old']}x** old), lr/10 + recal "
               f"{means['supernet_tenth_recal_test']:.1%}; from scratch old {means['scratch_old_test']:.1%}, lr/10 + "
               f"recal {means['scratch_tenth_recal_test']:.1%}; distilled on the same {args.train} images from "
               f"supernet weights {means['supernet_distilled_test']:.1%} vs scratch "
               f"{means['scratch_distilled_test']:.1%} (**{data['ratio_distilled_supernet_over_scratch']}x**); "
               f"teacher (largest child, untrained) {teacher_test:.1%}; {cpu / 60:.1f} CPU-min")
    print(summary)
    if not args.quick:
        write_result("winners_recovery", data, summary)


if __name__ == "__main__":
    main()
