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
import copy
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.checkpoint import load_checkpoint
from nas.cli._args import recorded_normalization
from nas.cli._training import (add_training_arguments, candidate_from, candidate_source, check_numbers, fill_defaults,
                                finish, load_data, train_config)
from nas.cli._args import add_stage_arguments, stage_options
from nas.compress import StageOptions, apply_compression, compress_with_recovery, save
from nas.compress.recovery import first_failure, importance_data
from nas.data import Splits, check_fits
from nas.distill import MIN_ATTENTION_SIZE, CodistillConfig, DistillConfig, codistill, distill
from nas.cli._distributed import add_arguments as add_distributed_arguments
from nas.cli._distributed import finetune_distributed, wants_distributed
from nas.errors import NasError
from nas.models import build_model
from nas.spec import Candidate, CompressionSpec
from nas.terngrad import DEFAULT_CLIP
from nas.train import TrainConfig, epoch_lines, evaluate, train
from nas.winners import Interrupted, NothingToFinetune, WinnerOptions, finetune_run, print_summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("finetune", help="fine-tune a run's winners, or a checkpoint or candidate, optionally "
                                        "distilling from a teacher",
                       description="With a run folder: fine-tune, distil and compress K winners spread along its "
                                   "Pareto front (nas.winners). Otherwise: fine-tune one checkpoint or candidate.")
    p.add_argument("run_folder", nargs="?", type=Path, default=None, metavar="RUN",
                   help="a run folder written by `nas search`; the training, distillation, --teacher and "
                        "--recovery-epochs options replace the experiment's settings, and options that only "
                        "concern one model (--out, --init, --candidate, --compress, --nproc ...) are refused")
    p.add_argument("--top", type=int, default=None, help="winners to fine-tune (default: the experiment's winners.top)")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="teacher training epochs, at least 1 (run mode; default: the experiment's "
                        "winners.teacher_epochs)")
    p.add_argument("--scratch", choices=["epochs", "madds", "off"], default=None,
                   help="run mode: the Rethinking baseline, each winner with structured pruning also trained from "
                        "scratch at its pruned width on the same epochs (Scratch-E) or multiply-adds (Scratch-B, "
                        "at most twice the epochs), keeping the better on validation; off skips it (default: the "
                        "experiment's winners.scratch, epochs)")
    p.add_argument("--int8", action="store_true",
                   help="export every winner as int8 ONNX, not only those with quantization: int8 (run mode)")
    add_training_arguments(p, out_required=False)
    p.add_argument("--init", type=Path, default=None, help="checkpoint to start from (else a fresh candidate)")
    p.add_argument("--teacher", type=Path, nargs="+", default=None, metavar="CKPT",
                   help="teacher checkpoint to distil from (run mode: instead of training a teacher); several "
                        "checkpoints distil from their ensemble, averaging their softened outputs (one model only)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label cross-entropy")
    p.add_argument("--beta", type=float, default=0.5, help="weight of the soft (teacher) term")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T")
    p.add_argument("--no-t2", action="store_true", help="do not scale the soft term by T^2")
    p.add_argument("--attention", action="store_true",
                   help="add attention transfer between the last layers of each common spatial size of at "
                        f"least {MIN_ATTENTION_SIZE}x{MIN_ATTENTION_SIZE}")
    p.add_argument("--attention-weight", type=float, default=None, metavar="BETA",
                   help="attention transfer's beta: each pair adds beta/2 times the mean squared difference of "
                        "the normalised maps (default: 1000, Zagoruyko & Komodakis's; needs --attention)")
    p.add_argument("--hint", action="append", default=None, metavar="STUDENT:TEACHER",
                   help="FitNets hint: also match the student stage's output to the teacher stage's through a learned "
                        "1x1 conv (module paths, e.g. layers.3:layers.5; repeat for more pairs; needs one --teacher)")
    p.add_argument("--hint-weight", type=float, default=None, metavar="W",
                   help="weight of each hint's mean squared difference (default: 1; needs --hint)")
    p.add_argument("--codistill", type=int, default=None, metavar="N",
                   help="codistillation (Anil et al. 2018): train N copies of the candidate together (seeds SEED.."
                        "SEED+N-1), each also distilling from the others' average prediction; -o gets the first")
    p.add_argument("--codistill-weight", type=float, default=1.0,
                   help="weight of the codistillation term (default: %(default)s)")
    p.add_argument("--burn-in-steps", type=int, default=0,
                   help="plain training steps before the codistillation term switches on (default: %(default)s)")
    p.add_argument("--compress", action="store_true",
                   help="then apply the candidate's compression settings, with recovery fine-tuning per stage")
    p.add_argument("--prune-steps", type=int, default=1, metavar="K",
                   help="with --compress: prune in K rounds on Zhu & Gupta's cubic schedule, recovering after each "
                        "(default: %(default)s)")
    p.add_argument("--rewind", action="store_true",
                   help="with --compress: lottery-ticket rewinding, resetting the kept weights after each pruning "
                        "round to those the fine-tune started from (--init's, or the fresh candidate's), then "
                        "recovering")
    p.add_argument("--binary-rounding", choices=["sign", "stochastic"], default=None,
                   help="with --compress and a candidate with quantization: binary, how binary weights are drawn "
                        "while recovering: sign, or BinaryConnect's stochastic hard-sigmoid rule (default: the "
                        "candidate's compression.binary_rounding)")
    p.add_argument("--recovery-epochs", type=int, default=None,
                   help="fine-tuning epochs after each compression stage, 0 for none (default: 1; a run's "
                        "winners.recovery_epochs)")
    p.add_argument("--recovery-lr", type=float, default=None, metavar="LR",
                   help="peak learning rate of the recovery fine-tunes, annealed by a cosine over each (default: "
                        "a run's winners.recovery_lr, else its training lr; one model's: a tenth of --lr)")
    p.add_argument("--compressed-out", type=Path, default=None,
                   help="compressed container to write (default: --out with suffix .nasz)")
    add_stage_arguments(p)
    add_distributed_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_numbers(args)
    for name, low in (("top", 1), ("teacher_epochs", 1), ("recovery_epochs", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise NasError(f"--{name.replace('_', '-')} must be >= {low}, but got {getattr(args, name)}.")
    if args.recovery_lr is not None and not args.recovery_lr > 0:
        raise NasError(f"--recovery-lr must be > 0, but got {args.recovery_lr}.")
    if args.run_folder is not None:
        return _run_winners(args)
    if args.scratch is not None:
        raise NasError("--scratch trains a run's pruned winners from scratch (nas finetune RUN --scratch ...); "
                       "for one model, train its pruned candidate with `nas train --candidate FILE`.")
    if args.out is None:
        raise NasError("give a run folder (nas finetune RUN --top K) or -o/--out for the fine-tuned checkpoint.")
    fill_defaults(args)
    if args.recovery_epochs is None:
        args.recovery_epochs = 1
    splits = load_data(args, recorded_normalization(args.init, args.dataset))
    if args.init is not None:
        if args.candidate is not None or args.space is not None:
            raise NasError("--init takes the candidate from the checkpoint; do not also give --candidate/--space.")
        model, candidate, _ = load_checkpoint(args.init)
    else:
        candidate = candidate_from(args, splits.input_shape, splits.num_classes)
        torch.manual_seed(args.seed)
        model = build_model(candidate.arch)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes, candidate_source(args))
    spec = _compression(args, candidate)
    dcfg = _distill_config(args)
    if args.teacher is not None and len(args.teacher) > 1 and dcfg.attention:
        raise NasError(f"--attention reads one teacher's stages, but --teacher gives {len(args.teacher)}: distil "
                       f"from the ensemble without --attention, or give one teacher.")
    config = train_config(args, candidate)
    if wants_distributed(args):  # --nproc N or torchrun: data-parallel, rank 0 saves through finish
        return finetune_distributed(args, model, candidate, splits, config, finish=finish)
    summary: dict[str, Any] = {"command": "finetune", "init": str(args.init) if args.init else None,
                               "threads": config.threads}
    early = copy.deepcopy(model.state_dict()) if args.rewind else None  # what --rewind resets the kept weights to
    summary.update(_finetune(args, model, candidate, splits, config, dcfg))
    code = finish(args, model, candidate, splits, summary)
    if args.compress:
        code = max(code, _compress(args, model, spec, splits, config, early))
    return code


def _finetune(args: argparse.Namespace, model: nn.Module, candidate: Candidate, splits: Splits, config: TrainConfig,
              dcfg: DistillConfig) -> dict[str, Any]:
    """Train ``model`` in place: plainly, distilling from ``--teacher``, or codistilling; the summary's fields."""
    lines = epoch_lines(config, len(splits.train), "finetune")
    if args.codistill is not None:
        return _codistill(args, model, candidate, splits, config)
    if args.teacher is None:
        before = evaluate(model, splits.val)
        result = train(model, splits, config, on_epoch=lines)
        return dict(val_before=before, val_accuracy=result.val_accuracy, history=result.history, failed=result.failed)
    teachers = []
    for path in args.teacher:
        teacher, t_candidate, _ = load_checkpoint(path)
        check_fits(splits, t_candidate.arch.input_shape, t_candidate.arch.num_classes,
                   f"the teacher checkpoint {path}", f"give a teacher trained on {splits.name!r} (`nas train "
                   f"--space SPACE --dataset {splits.name} -o teacher.safetensors`)")
        teachers.append(teacher)
    out = distill(model, teachers, splits, config, dcfg, on_epoch=lines)
    return dict(teacher=str(args.teacher[0]) if len(args.teacher) == 1 else [str(t) for t in args.teacher],
                teacher_val_accuracy=out.teacher_val_accuracy,
                val_before=out.student_val_before, val_accuracy=out.student_val_after,
                history=out.run.history, failed=out.run.failed,
                distill={"alpha": dcfg.alpha, "beta": dcfg.beta, "temperature": dcfg.temperature,
                         "t2_scale": dcfg.t2_scale, "attention": bool(args.attention),
                         "attention_weight": dcfg.attention_weight, "attention_pairs": out.attention_pairs,
                         "hints": [list(pair) for pair in dcfg.features], "hint_weight": dcfg.feature_weight})


def _codistill(args: argparse.Namespace, model: nn.Module, candidate: Candidate, splits: Splits,
               config: TrainConfig) -> dict[str, Any]:
    """``--codistill N``: ``model`` and N - 1 fresh copies of the candidate trained together."""
    if args.codistill < 2:
        raise NasError(f"--codistill trains N >= 2 models together, but got {args.codistill}.")
    if args.teacher is not None:
        raise NasError("--codistill trains its models from each other, and --teacher gives a fixed teacher: "
                       "give one of them.")
    models = [model]
    for k in range(1, args.codistill):
        torch.manual_seed(config.seed + k)
        models.append(build_model(candidate.arch))
    before = evaluate(model, splits.val)
    out = codistill(models, splits, config, CodistillConfig(weight=args.codistill_weight,
                                                            burn_in_steps=args.burn_in_steps))
    return dict(val_before=before, val_accuracy=out.runs[0].val_accuracy, history=out.runs[0].history,
                failed=out.failed, codistill={"models": args.codistill, "weight": args.codistill_weight,
                                              "burn_in_steps": args.burn_in_steps,
                                              "val_accuracy": [r.val_accuracy for r in out.runs]})


def _distill_config(args: argparse.Namespace) -> DistillConfig:
    if args.attention_weight is not None and not args.attention:
        raise NasError("--attention-weight weights attention transfer, which is off: add --attention.")
    if args.attention_weight is not None and not args.attention_weight >= 0:
        raise NasError(f"--attention-weight must be >= 0, but got {args.attention_weight}.")
    attention_weight = {} if args.attention_weight is None else {"attention_weight": args.attention_weight}
    return DistillConfig(alpha=args.alpha, beta=args.beta, temperature=args.temperature, t2_scale=not args.no_t2,
                         attention="auto" if args.attention else (), features=_hints(args),
                         feature_weight=1.0 if args.hint_weight is None else args.hint_weight, **attention_weight)


def _hints(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """``--hint STUDENT:TEACHER`` pairs (FitNets), checked for form; the stages are checked when the models are."""
    if args.hint_weight is not None and not args.hint:
        raise NasError("--hint-weight weights FitNets hints, and none is given: add --hint STUDENT:TEACHER.")
    if args.hint_weight is not None and not args.hint_weight >= 0:
        raise NasError(f"--hint-weight must be >= 0, but got {args.hint_weight}.")
    pairs = []
    for hint in args.hint or []:
        student, sep, teacher = hint.partition(":")
        if not sep or not student or not teacher:
            raise NasError(f"--hint {hint!r} must be STUDENT:TEACHER, two module paths (e.g. layers.3:layers.5; "
                           f"see the stages `nas inspect` lists).")
        pairs.append((student, teacher))
    if pairs and (args.teacher is None or len(args.teacher) != 1):
        raise NasError("--hint matches a student stage to a teacher's: give one --teacher CKPT.")
    return tuple(pairs)


#: Options that concern one model and have no meaning for a run's winners: (flag, given?, why).
_ONE_MODEL_ONLY: list[tuple[str, Callable[[argparse.Namespace], bool], str]] = [
    ("-o/--out", lambda a: a.out is not None, "each winner is written to RUN/winners/<rank>-trial<N>/"),
    ("--compressed-out", lambda a: a.compressed_out is not None, "each winner's container is its model.nasz"),
    ("--init", lambda a: a.init is not None, "each winner is trained from scratch while it distils"),
    ("--candidate", lambda a: a.candidate is not None, "the winners are picked from the run's Pareto front"),
    ("--space", lambda a: a.space is not None, "the winners are picked from the run's Pareto front"),
    ("--dataset", lambda a: a.dataset is not None, "the winners train on the experiment's dataset"),
    ("--split-seed", lambda a: a.split_seed is not None, "the winners use the experiment's split"),
    ("--data-workers", lambda a: a.data_workers is not None, "the winners read the experiment's dataset.workers"),
    ("--augment", lambda a: a.augment is not None, "the winners train with the experiment's dataset.augment"),
    ("--binary-rounding", lambda a: a.binary_rounding is not None,
     "each winner's rounding is its candidate's (a space's compression.binary_rounding)"),
    ("--hint", lambda a: bool(a.hint), "the winners distil with the experiment's distillation settings"),
    ("--codistill", lambda a: a.codistill is not None, "each winner distils from the run's teacher"),
    ("--prune-steps", lambda a: a.prune_steps != 1, "each winner is compressed with its own settings"),
    ("--rewind", lambda a: bool(a.rewind), "each winner is compressed with its own settings"),
    ("--prune-scope/--centroid-init/--lowrank-method", lambda a: stage_options(a) != StageOptions(),
     "each winner is compressed with the methods its costs were priced for"),
    ("--compress", lambda a: bool(a.compress),
     "every winner is compressed with its own settings already (--recovery-epochs sets the recovery)"),
    ("--nproc", lambda a: a.nproc is not None,
     "winners fine-tune in one process; for data-parallel training fine-tune one winner's checkpoint: "
     "`nas finetune --init RUN/winners/1-trialN/model.safetensors --nproc N -o OUT`"),
    ("--comm-hook", lambda a: a.comm_hook != "allreduce", "winners fine-tune in one process"),
    ("--terngrad-clip", lambda a: a.terngrad_clip != DEFAULT_CLIP, "winners fine-tune in one process"),
]


def _run_winners(args: argparse.Namespace) -> int:
    for flag, given, why in _ONE_MODEL_ONLY:
        if given(args):
            raise NasError(f"{flag} does not apply to a run folder ({args.run_folder}): {why}.")
    if args.teacher is not None and len(args.teacher) > 1:
        raise NasError(f"--teacher gives {len(args.teacher)} checkpoints, but a run's winners distil from one "
                       f"teacher: give one, or distil one winner from the ensemble (`nas finetune --init "
                       f"RUN/winners/1-trialN/model.safetensors --teacher A B -o OUT`).")
    if args.teacher is not None and args.teacher_epochs is not None:
        raise NasError("--teacher-epochs trains the run's teacher, and --teacher gives one already: "
                       "give one of them.")
    options = WinnerOptions(top=args.top, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                            recovery_epochs=args.recovery_epochs, max_samples=args.max_samples,
                            batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, threads=args.threads,
                            seed=args.seed, data_root=args.data_root,
                            teacher=args.teacher[0] if args.teacher else None,
                            distill=_distill_config(args), int8=args.int8, device=args.device,
                            amp=False if args.no_amp else None, scratch=args.scratch,
                            lowrank_penalty=args.lowrank_penalty, recovery_lr=args.recovery_lr)
    return finetune_winners(args.run_folder, options, progress=False if args.no_progress else None)


def finetune_winners(folder: Path, options: WinnerOptions | None = None, *, progress: bool | None = None,
                     at_end: bool = False) -> int:
    """``nas finetune RUN`` (and ``nas search --finetune``): fine-tune, print the summary; the exit status.

    At the end of a search (``at_end``) an empty front is said plainly and is no error: the search
    succeeded. 1 when a winner failed (training or a compression stage, e.g. left at chance); 130 on
    Ctrl+C, after saying which winners are kept."""
    try:
        summary = finetune_run(folder, options, progress=progress, say=print)
    except NothingToFinetune as exc:
        if not at_end:
            raise
        print(f"winners: {exc}")
        return 0
    except Interrupted as exc:
        print(f"nas: interrupted; {exc}.", file=sys.stderr)
        return 130
    print_summary(summary)
    print(f"summary: {folder / 'winners' / 'summary.md'}")
    failed = [str(r) for r, f in zip(summary["rank"], summary["failed"]) if f]
    if failed:
        print(f"nas finetune: winner{'s' if len(failed) > 1 else ''} #{', #'.join(failed)} failed (see FAILED "
              f"above and in {folder / 'winners' / 'summary.md'}).", file=sys.stderr)
        return 1
    return 0


def _compression(args: argparse.Namespace, candidate: Candidate) -> CompressionSpec:
    """The candidate's compression settings with ``--binary-rounding`` applied (and the --compress options checked)."""
    if args.prune_steps < 1:
        raise NasError(f"--prune-steps must be >= 1, but got {args.prune_steps}.")
    if (args.prune_steps > 1 or args.rewind) and not args.compress:
        raise NasError("--prune-steps/--rewind schedule the pruning of --compress: add --compress.")
    spec = candidate.compression
    if args.binary_rounding is None:
        return spec
    if not args.compress:
        raise NasError("--binary-rounding sets how binary weights are drawn after --compress quantizes them: add "
                       "--compress.")
    if spec.quantization != "binary":
        raise NasError(f"--binary-rounding {args.binary_rounding} draws binary weights, but the candidate's "
                       f"quantization is {spec.quantization!r}; give a candidate with quantization 'binary' "
                       f"(`--candidate FILE`), or leave --binary-rounding out.")
    return replace(spec, binary_rounding=args.binary_rounding)


def _compress(args: argparse.Namespace, model: nn.Module, spec: CompressionSpec, splits: Splits,
              config: TrainConfig, early: dict[str, torch.Tensor] | None) -> int:
    steps: list[dict[str, Any]] = []
    options = stage_options(args)
    recovery_lr = args.recovery_lr or config.lr / 10
    if args.prune_steps > 1 or args.rewind:
        recovery = replace(config, epochs=max(args.recovery_epochs, 1), max_samples=None, lr=recovery_lr)
        # masks from the fine-tuned weights; with --rewind the kept ones go back to where the fine-tune started
        compressed, steps = compress_with_recovery(model, spec, splits, recovery, options, prune_steps=args.prune_steps,
                                                   rewind_to=early)
    elif args.recovery_epochs > 0:
        recovery = replace(config, epochs=args.recovery_epochs, max_samples=None, lr=recovery_lr)
        compressed, steps = compress_with_recovery(model, spec, splits, recovery, options)
    else:
        compressed = apply_compression(model, spec, options=options, data=importance_data(splits))
    path = args.compressed_out or args.out.with_suffix(".nasz")
    report = save(compressed, path)
    failed = first_failure(steps)
    print(json.dumps({"command": "compress", "compression": spec.to_dict(), "steps": steps,
                      "val_accuracy": evaluate(compressed, splits.val), "test_accuracy": evaluate(compressed, splits.test),
                      "file": str(path), "file_bytes": report.file_bytes, "dense_bits": report.dense_bits,
                      "failed": failed}, sort_keys=True))
    if failed:
        print(f"nas finetune: compression failed: {failed}.", file=sys.stderr)
    return 1 if failed else 0
