"""``nas finetune``: fine-tune a run's winners, or one checkpoint or candidate.

With a run folder it fine-tunes, distils and compresses K winners along the run's
Pareto front (:func:`nas.winners.finetune_run`). Otherwise it starts from a
checkpoint (``--init``) or a fresh candidate and fine-tunes it, distilling from a
teacher checkpoint when one is given, saves a checkpoint and prints a one-line JSON
summary with validation and test accuracy (as ``nas train`` does).

With ``--compress`` it then applies the candidate's :class:`~nas.spec.CompressionSpec`
stage by stage with a recovery fine-tune after each
(:func:`nas.compress.compress_with_recovery`), reports validation accuracy before and
after every step, and writes the compressed container (``--compressed-out``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.checkpoint import load_checkpoint
from nas.cli._training import add_training_arguments, candidate_from, candidate_source, finish, train_config
from nas.compress import compress_with_recovery, save
from nas.data import Splits, check_fits, load_dataset
from nas.distill import DistillConfig, distill
from nas.cli._distributed import add_arguments as add_distributed_arguments
from nas.cli._distributed import finetune_distributed, wants_distributed
from nas.errors import NasError
from nas.models import build_model
from nas.spec import Candidate
from nas.train import TrainConfig, evaluate, train
from nas.winners import finetune_run, print_summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("finetune", help="fine-tune a run's winners, or a checkpoint or candidate, optionally "
                                        "distilling from a teacher",
                       description="With a run folder: fine-tune, distil and compress K winners spread along its "
                                   "Pareto front (nas.winners). Otherwise: fine-tune one checkpoint or candidate.")
    p.add_argument("run_folder", nargs="?", type=Path, default=None, metavar="RUN",
                   help="a run folder written by `nas search` (then --top, --epochs, --teacher-epochs apply)")
    p.add_argument("--top", type=int, default=None, help="winners to fine-tune (default: the experiment's winners.top)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher training epochs (run mode)")
    p.add_argument("--int8", action="store_true",
                   help="export every winner as int8 ONNX, not only those with quantization: int8 (run mode)")
    add_training_arguments(p, out_required=False)
    p.add_argument("--init", type=Path, default=None, help="checkpoint to start from (else a fresh candidate)")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint to distil from")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label cross-entropy")
    p.add_argument("--beta", type=float, default=0.5, help="weight of the soft (teacher) term")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T")
    p.add_argument("--no-t2", action="store_true", help="do not scale the soft term by T^2")
    p.add_argument("--attention", action="store_true",
                   help="add attention transfer between the last layers of each common spatial size")
    p.add_argument("--compress", action="store_true",
                   help="then apply the candidate's compression settings, with recovery fine-tuning per stage")
    p.add_argument("--recovery-epochs", type=int, default=1, help="fine-tuning epochs after each compression stage")
    p.add_argument("--compressed-out", type=Path, default=None,
                   help="compressed container to write (default: --out with suffix .nasz)")
    add_distributed_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.run_folder is not None:
        return _run_winners(args)
    if args.out is None:
        raise NasError("give a run folder (nas finetune RUN --top K) or -o/--out for the fine-tuned checkpoint.")
    splits = load_dataset(args.dataset, seed=args.split_seed, root=args.data_root)
    if args.init is not None:
        if args.candidate is not None or args.space is not None:
            raise NasError("--init takes the candidate from the checkpoint; do not also give --candidate/--space.")
        model, candidate, _ = load_checkpoint(args.init)
    else:
        candidate = candidate_from(args, splits.input_shape, splits.num_classes)
        torch.manual_seed(args.seed)
        model = build_model(candidate.arch)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes, candidate_source(args))
    config = train_config(args)
    if wants_distributed(args):  # --nproc N or torchrun: data-parallel, rank 0 saves through finish
        return finetune_distributed(args, model, candidate, splits, config, finish=finish)
    summary: dict[str, Any] = {"command": "finetune", "init": str(args.init) if args.init else None}
    if args.teacher is None:
        before = evaluate(model, splits.val)
        result = train(model, splits, config)
        summary.update(val_before=before, val_accuracy=result.val_accuracy, history=result.history,
                       failed=result.failed)
    else:
        teacher, t_candidate, _ = load_checkpoint(args.teacher)
        check_fits(splits, t_candidate.arch.input_shape, t_candidate.arch.num_classes,
                   f"the teacher checkpoint {args.teacher}", f"give a teacher trained on {splits.name!r} (`nas train "
                   f"--space SPACE --dataset {splits.name} -o teacher.safetensors`)")
        dcfg = DistillConfig(alpha=args.alpha, beta=args.beta, temperature=args.temperature,
                             t2_scale=not args.no_t2, attention="auto" if args.attention else ())
        out = distill(model, teacher, splits, config, dcfg)
        summary.update(teacher=str(args.teacher), teacher_val_accuracy=out.teacher_val_accuracy,
                       val_before=out.student_val_before, val_accuracy=out.student_val_after,
                       history=out.run.history, failed=out.run.failed,
                       distill={"alpha": dcfg.alpha, "beta": dcfg.beta, "temperature": dcfg.temperature,
                                "t2_scale": dcfg.t2_scale, "attention": bool(args.attention)})
    code = finish(args, model, candidate, splits, summary)
    if args.compress:
        code = max(code, _compress(args, model, candidate, splits, config))
    return code


def _run_winners(args: argparse.Namespace) -> int:
    summary = finetune_run(args.run_folder, top=args.top, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                           progress=False if args.no_progress else None, int8=args.int8)
    print_summary(summary)
    print(f"summary: {args.run_folder / 'winners' / 'summary.md'}")
    return 0


def _compress(args: argparse.Namespace, model: nn.Module, candidate: Candidate, splits: Splits,
              config: TrainConfig) -> int:
    recovery = replace(config, epochs=args.recovery_epochs, max_samples=None, lr=config.lr / 10)
    compressed, steps = compress_with_recovery(model, candidate.compression, splits, recovery)
    path = args.compressed_out or args.out.with_suffix(".nasz")
    report = save(compressed, path)
    failed = next((s["failed"] for s in steps if s["failed"]), None)
    print(json.dumps({"command": "compress", "compression": candidate.compression.to_dict(), "steps": steps,
                      "val_accuracy": evaluate(compressed, splits.val), "test_accuracy": evaluate(compressed, splits.test),
                      "file": str(path), "file_bytes": report.file_bytes, "dense_bits": report.dense_bits,
                      "failed": failed}, sort_keys=True))
    return 1 if failed else 0
