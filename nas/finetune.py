"""Commands that train candidates: ``nas datasets``, ``nas train``, ``nas finetune``.

``nas train`` trains a candidate from scratch on a dataset; ``nas finetune``
starts from a checkpoint (or a fresh candidate) and fine-tunes it, distilling
from a teacher checkpoint when one is given. Both save a checkpoint
(safetensors + JSON description, :mod:`nas.checkpoint`) and print a one-line
JSON summary with validation and test accuracy.

With ``--compress``, ``nas finetune`` then applies the candidate's
:class:`~nas.spec.CompressionSpec` stage by stage (:func:`nas.compress.apply_compression`)
with a recovery fine-tune after each stage, reports validation accuracy before
and after every step, and writes the compressed container (``--compressed-out``).

The candidate comes from ``--candidate FILE`` (a ``Candidate`` JSON, as
``nas sample --json`` prints) or ``--space NAME --seed N`` (drawn for the
dataset's input shape and class count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from nas.distributed import add_arguments as add_distributed_arguments
from nas.errors import NasError


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``datasets``, ``train`` and ``finetune`` on the ``nas`` sub-parsers."""
    datasets = sub.add_parser("datasets", help="list the datasets and whether their files are installed")
    datasets.add_argument("--root", default=None, help="folder to look in instead of $NAS_DATA and the system folder")
    datasets.set_defaults(run=_run_datasets)

    tr = sub.add_parser("train", help="train a candidate from scratch on a dataset and save a checkpoint")
    _common(tr)
    tr.set_defaults(run=_run_train)

    ft = sub.add_parser("finetune", help="fine-tune a run's winners, or a checkpoint or candidate, optionally "
                                         "distilling from a teacher",
                        description="With a run folder: fine-tune, distil and compress K winners spread along its "
                                    "Pareto front (nas.winners). Otherwise: fine-tune one checkpoint or candidate.")
    ft.add_argument("run_folder", nargs="?", type=Path, default=None, metavar="RUN",
                    help="a run folder written by `nas search` (then --top, --epochs, --teacher-epochs apply)")
    ft.add_argument("--top", type=int, default=None, help="winners to fine-tune (default: the experiment's winners.top)")
    ft.add_argument("--teacher-epochs", type=int, default=None, help="teacher training epochs (run mode)")
    _common(ft, out_required=False)
    ft.add_argument("--init", type=Path, default=None, help="checkpoint to start from (else a fresh candidate)")
    ft.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint to distil from")
    ft.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label cross-entropy")
    ft.add_argument("--beta", type=float, default=0.5, help="weight of the soft (teacher) term")
    ft.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T")
    ft.add_argument("--no-t2", action="store_true", help="do not scale the soft term by T^2")
    ft.add_argument("--attention", action="store_true",
                    help="add attention transfer between the last layers of each common spatial size")
    ft.add_argument("--compress", action="store_true",
                    help="then apply the candidate's compression settings, with recovery fine-tuning per stage")
    ft.add_argument("--recovery-epochs", type=int, default=1, help="fine-tuning epochs after each compression stage")
    ft.add_argument("--compressed-out", type=Path, default=None,
                    help="compressed container to write (default: --out with suffix .nasz)")
    add_distributed_arguments(ft)
    ft.set_defaults(run=_run_finetune)


def compress_with_recovery(model: torch.nn.Module, compression: Any, splits: Any, config: Any
                           ) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Apply ``compression`` to a copy of ``model``, fine-tuning with ``config`` after each stage.

    Returns the compressed model and one record per stage: its name, validation
    accuracy right after compressing and after recovery, and any failure reason.
    """
    from nas.compress import apply_compression
    from nas.train import evaluate, train

    steps: list[dict[str, Any]] = []

    def recover(m: torch.nn.Module, stage: str) -> None:
        before = evaluate(m, splits.val)
        run = train(m, splits, config)
        steps.append({"step": f"compress:{stage}", "val_before": before, "val_after": run.val_accuracy,
                      "failed": run.failed})

    return apply_compression(model, compression, retrain=recover), steps


def _common(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    src = p.add_argument_group("candidate")
    src.add_argument("--candidate", type=Path, default=None, help="Candidate JSON file")
    src.add_argument("--space", default=None, help="built-in space name or YAML file to draw the candidate from")
    src.add_argument("--seed", type=int, default=0, help="candidate seed (with --space) and training seed")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="digits", help="dataset name (default: %(default)s; see `nas datasets`)")
    data.add_argument("--data-root", default=None, help="folder holding the dataset files")
    data.add_argument("--split-seed", type=int, default=0,
                      help="seed of the train/val split; keep it equal for teacher and student (default: %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default: 10; a run's winners.epochs)")
    t.add_argument("--max-samples", type=int, default=None, help="budget in training samples (caps epochs)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    t.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    t.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    t.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument("-o", "--out", type=Path, required=out_required, help="checkpoint file to write (.safetensors)")


def _run_datasets(args: argparse.Namespace) -> int:
    from nas.data import available_datasets, load_dataset
    from nas.errors import DataError

    for name in available_datasets():
        try:
            s = load_dataset(name, root=args.root)
            print(f"{name:<15} {'x'.join(map(str, s.input_shape)):<8} {s.num_classes:>3} classes  "
                  f"train {len(s.train):>6} val {len(s.val):>6} test {len(s.test):>6}  {s.source}")
        except DataError as exc:
            print(f"{name:<15} missing: {exc}")
    return 0


def _candidate(args: argparse.Namespace, input_shape: tuple[int, ...], num_classes: int) -> Any:
    from nas.space import load_space
    from nas.spec import Candidate

    if (args.candidate is None) == (args.space is None):
        raise NasError("give exactly one of --candidate FILE or --space NAME (with --seed).")
    if args.candidate is not None:
        try:
            return Candidate.from_json(args.candidate.read_text(encoding="utf-8"))
        except OSError as exc:
            raise NasError(f"cannot read candidate file {str(args.candidate)!r}: {exc.strerror}.") from None
        except UnicodeDecodeError:
            raise NasError(f"candidate file {str(args.candidate)!r} is not UTF-8 text (a binary or damaged file?).") from None
    space = load_space(args.space)
    if space.input_shape != input_shape or space.config.num_classes != num_classes:
        space = space.with_input(input_shape, num_classes)
    return space.random(args.seed)


def _config(args: argparse.Namespace) -> Any:
    from nas.train import TrainConfig

    return TrainConfig(epochs=args.epochs or 10, max_samples=args.max_samples, batch_size=args.batch_size, lr=args.lr,
                       schedule=args.schedule, seed=args.seed, threads=args.threads,
                       progress=False if args.no_progress else None)


def _finish(args: argparse.Namespace, model: torch.nn.Module, candidate: Any, splits: Any,
            summary: dict[str, Any]) -> int:
    from nas.checkpoint import save_checkpoint
    from nas.cost import count
    from nas.train import evaluate

    summary.update(dataset=splits.name, params=count(candidate.arch).params,
                   test_accuracy=evaluate(model, splits.test), checkpoint=str(args.out))
    save_checkpoint(args.out, model, candidate, summary)
    print(json.dumps(summary, sort_keys=True))
    return 1 if summary.get("failed") else 0


def _run_train(args: argparse.Namespace) -> int:
    from nas.data import check_fits, load_dataset
    from nas.models import build_model
    from nas.train import train

    splits = load_dataset(args.dataset, seed=args.split_seed, root=args.data_root)
    candidate = _candidate(args, splits.input_shape, splits.num_classes)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes)
    config = _config(args)
    torch.manual_seed(args.seed)
    model = build_model(candidate.arch)
    result = train(model, splits, config)
    return _finish(args, model, candidate, splits, {
        "command": "train", "val_accuracy": result.val_accuracy, "history": result.history,
        "failed": result.failed, "epochs": result.epochs, "seconds": round(result.seconds, 2)})


def _run_winners(args: argparse.Namespace) -> int:
    from nas.winners import finetune_run, print_summary

    summary = finetune_run(args.run_folder, top=args.top, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                           progress=False if args.no_progress else None)
    print_summary(summary)
    print(f"summary: {args.run_folder / 'winners' / 'summary.md'}")
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    if args.run_folder is not None:
        return _run_winners(args)
    if args.out is None:
        raise NasError("give a run folder (nas finetune RUN --top K) or -o/--out for the fine-tuned checkpoint.")
    from nas.checkpoint import load_checkpoint
    from nas.data import check_fits, load_dataset
    from nas.distill import DistillConfig, distill
    from nas.distributed import finetune_distributed, wants_distributed
    from nas.models import build_model
    from nas.train import evaluate, train

    splits = load_dataset(args.dataset, seed=args.split_seed, root=args.data_root)
    if args.init is not None:
        if args.candidate is not None or args.space is not None:
            raise NasError("--init takes the candidate from the checkpoint; do not also give --candidate/--space.")
        model, candidate, _ = load_checkpoint(args.init)
    else:
        candidate = _candidate(args, splits.input_shape, splits.num_classes)
        torch.manual_seed(args.seed)
        model = build_model(candidate.arch)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes)
    config = _config(args)
    if wants_distributed(args):  # --nproc N or torchrun: data-parallel, rank 0 saves through _finish
        return finetune_distributed(args, model, candidate, splits, config, finish=_finish)
    summary: dict[str, Any] = {"command": "finetune", "init": str(args.init) if args.init else None}
    if args.teacher is None:
        before = evaluate(model, splits.val)
        result = train(model, splits, config)
        summary.update(val_before=before, val_accuracy=result.val_accuracy, history=result.history,
                       failed=result.failed)
    else:
        teacher, t_candidate, _ = load_checkpoint(args.teacher)
        check_fits(splits, t_candidate.arch.input_shape, t_candidate.arch.num_classes)
        dcfg = DistillConfig(alpha=args.alpha, beta=args.beta, temperature=args.temperature,
                             t2_scale=not args.no_t2, attention="auto" if args.attention else ())
        out = distill(model, teacher, splits, config, dcfg)
        summary.update(teacher=str(args.teacher), teacher_val_accuracy=out.teacher_val_accuracy,
                       val_before=out.student_val_before, val_accuracy=out.student_val_after,
                       history=out.run.history, failed=out.run.failed,
                       distill={"alpha": dcfg.alpha, "beta": dcfg.beta, "temperature": dcfg.temperature,
                                "t2_scale": dcfg.t2_scale, "attention": bool(args.attention)})
    code = _finish(args, model, candidate, splits, summary)
    if args.compress:
        code = max(code, _compress(args, model, candidate, splits, config))
    return code


def _compress(args: argparse.Namespace, model: torch.nn.Module, candidate: Any, splits: Any, config: Any) -> int:
    from dataclasses import replace

    from nas.compress import save
    from nas.train import evaluate

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
