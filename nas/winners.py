"""From a run's Pareto front to real, small files: ``nas finetune RUN --top K``.

1. Pick K candidates spread along the front (evenly along its first cost).
2. The teacher: for a run searched with ``evaluator: supernet``, the supernet's largest child
   (:mod:`nas.inherit`); otherwise the most accurate trained architecture of the run, uncompressed,
   trained for ``winners.teacher_epochs``.
3. For each winner: train it while distilling from the teacher (Hinton loss, ``winners.epochs``),
   starting from its supernet weights when the run has a supernet, else from scratch (``init`` in the
   summary), then apply its own compression settings stage by stage with a recovery fine-tune after
   each (:func:`nas.compress.compress_with_recovery`) at its own learning rate
   (``winners.recovery_lr``, cosine: :func:`recovery_config`), batch norm recalibrated after each
   stage and recovery (``winners.recalibration_batches``).
   A winner with structured pruning is also trained from scratch at its pruned width on the same
   budget (:mod:`nas.rethinking`, ``winners.scratch``); the better on validation is kept.
4. Measure test accuracy after distillation and after compression, write the
   artifacts (``model.safetensors``, the compressed container ``model.nasz`` and its
   real size, ``model.onnx`` checked against torch with onnxruntime,
   ``candidate.json``, and for an int8 winner ``winner-K.int8.onnx`` with its onnxruntime
   test accuracy and latency; ``model.safetensors`` holds the distilled weights before
   compression, so it loads with :func:`nas.checkpoint.load_checkpoint` and can be
   compressed again), predict latency with each profile and, when a profile's
   table was measured on this very CPU, time the network here too.
5. Write ``winners/summary.csv`` and ``winners/summary.md`` (docs/run-folder.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.compressed import running
from nas.device import describe
from nas.errors import NasError
from nas.files import write_atomic
from nas.run import load_run
from nas.spec import Candidate

if TYPE_CHECKING:
    from nas.distill import DistillConfig
    from nas.objectives import Objective


def pick_winners(front: Any, objectives: Sequence[Objective], k: int) -> Any:
    """``k`` rows of the front spread evenly along its first cost objective (all of it when smaller)."""
    costs = [o.name for o in objectives if not o.maximize]
    ordered = front.sort_values(costs[0] if costs else objectives[0].name).reset_index(drop=True)
    if len(ordered) <= k:
        return ordered
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, k)})
    return ordered.iloc[picks].reset_index(drop=True)


#: Training inputs int8 calibration runs (a fixed prefix of the training split: same ranges on every run).
CALIBRATION_SAMPLES = 512


def int8_onnx(d: Path, rank: int, arch: Any, splits: Any, *, threads: int = 1) -> dict[str, Any]:
    """``d/model.onnx`` quantized to ``d/winner-{rank}.int8.onnx`` (calibrated on training inputs); both files'
    test accuracy in onnxruntime and their onnxruntime latency (batch 1, ``threads``, interleaved, median)."""
    from nas.compress.int8 import OnnxModel, quantize_int8
    from nas.data import first_inputs, fit_input
    from nas.hardware.measure import onnx_latency

    fp32, int8 = d / "model.onnx", d / f"winner-{rank}.int8.onnx"
    quantize_int8(fp32, int8, fit_input(first_inputs(splits.train, CALIBRATION_SAMPLES), arch.input_shape))
    fp32_ms, int8_ms = onnx_latency([fp32, int8], arch.input_shape, threads=threads)
    return {"onnx_test_accuracy": OnnxModel(fp32, threads=threads).accuracy(splits.test),
            "int8_test_accuracy": OnnxModel(int8, threads=threads).accuracy(splits.test),
            "onnx_ms": fp32_ms, "int8_ms": int8_ms, "int8_speedup": fp32_ms / int8_ms, "int8_file": int8.name}


def measured_here(profile: Any, candidate: Candidate) -> float | None:
    """The network's latency timed on this CPU, when ``profile`` is a table measured on this CPU; else None."""
    import torch

    from nas.hardware.lut import LutProfile
    from nas.hardware.measure import device_name, measure_networks

    if not isinstance(profile, LutProfile) or profile.data.device != device_name():
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(profile.data.threads)
    try:
        return measure_networks([running(candidate)], batch=profile.data.batch, rounds=7,
                                target_ms=profile.data.method.target_ms)[0]
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class WinnerOptions:
    """What one ``nas finetune RUN`` may change; ``None`` keeps the experiment's setting.

    ``threads`` defaults to ``proxy.threads``, as the search trains; ``teacher`` is a
    checkpoint to distil from instead of training a teacher; ``distill`` the distillation
    objective (Hinton's defaults when None); ``device`` and ``amp`` replace the experiment's
    ``device:`` and ``amp:`` (:mod:`nas.device`); ``scratch`` the Rethinking baseline's budget
    (:mod:`nas.rethinking`); ``lowrank_penalty`` low-rank regularization's weight; ``recovery_lr`` and
    ``recalibration_batches`` the compressed phase's (:func:`recovery_config`)."""

    top: int | None = None
    epochs: int | None = None
    teacher_epochs: int | None = None
    recovery_epochs: int | None = None
    max_samples: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    schedule: str | None = None
    threads: int | None = None
    seed: int | None = None
    data_root: str | None = None
    teacher: Path | None = None
    distill: DistillConfig | None = None
    int8: bool = False
    device: str | None = None
    amp: bool | None = None
    scratch: str | None = None
    lowrank_penalty: float | None = None
    recovery_lr: float | None = None
    recalibration_batches: int | None = None


class NothingToFinetune(NasError):
    """The run's Pareto front is empty: no feasible completed trial to fine-tune."""


class Interrupted(KeyboardInterrupt):
    """Ctrl+C during :func:`finetune_run`; the message says what finished and where it is kept."""


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def finetune_run(folder: str | Path, options: WinnerOptions | None = None, *, progress: bool | None = None,
                 say: Callable[[str], None] | None = None, **overrides: Any) -> Any:
    """Fine-tune, distil and compress the winners of a run; returns the summary DataFrame.

    ``options`` (or its fields as keywords: ``top=2``) replace the experiment's settings.
    A winner whose compression is ``quantization: int8`` (every winner, with ``int8``) is also
    written as ``winner-K.int8.onnx`` and scored in onnxruntime (:func:`int8_onnx`). ``say``
    receives a line on the settings used (threads, winners picked). Each finished winner is
    in ``winners/summary.csv`` at once; Ctrl+C raises :class:`Interrupted`, which says so.
    ``progress`` None: a bar on a terminal, else a line per epoch on stderr."""
    import pandas as pd
    from tqdm.auto import tqdm

    from nas.checkpoint import save_checkpoint
    from nas.compress.int8 import export_onnx
    from nas.compress import save as save_container
    from nas.data import load_configured
    from nas.distill import DistillConfig, distill
    from nas.compress import compress_with_recovery
    from nas.compress.recovery import at_chance, first_failure
    from nas.factoring import lowrank_settings
    from nas.rethinking import keep_better, train_from_scratch
    from nas.hardware import get_profile
    from nas.inherit import SCRATCH, run_supernet, start
    from nas.train import TrainConfig, calibration_images, epoch_lines, evaluate

    opt = replace(options or WinnerOptions(), **overrides)
    say = say or (lambda line: None)
    run = load_run(folder)
    folder, experiment, trials = run.path, run.experiment(), run.trials
    cfg = experiment.config.winners
    top = _pick(opt.top, cfg.top)
    if top < 1:
        raise NasError(f"--top must be >= 1, but got {top}.")
    if experiment.dataset is None:
        raise NasError(f"{folder}: the experiment has no dataset (a cost-only search); winners need one to train on.")
    front = trials[trials["pareto"]]
    if front.empty:
        raise NothingToFinetune(f"{folder}: the Pareto front is empty (no feasible completed trial); "
                                f"nothing to fine-tune.")
    winners = pick_winners(front, run.objectives, top)
    ds = experiment.dataset
    shape = Candidate.from_json(winners.iloc[0]["candidate"]).arch.input_shape  # an image folder is read at it
    splits = load_configured(ds, shape, run.normalization, root=opt.data_root)
    proxy = experiment.config.proxy
    seed = _pick(opt.seed, experiment.config.seed)
    out_dir = run.winners_dir
    out_dir.mkdir(exist_ok=True)
    profiles = {name: get_profile(experiment.resolve(name)) for name in run.info.profiles}
    threads = _pick(opt.threads, proxy.threads)
    device, amp = winners_device(opt, experiment)
    lines = progress is None and not sys.stderr.isatty()  # no bar shows: a line per epoch instead
    base = TrainConfig(epochs=_pick(opt.epochs, cfg.epochs), max_samples=opt.max_samples,
                       batch_size=_pick(opt.batch_size, proxy.batch_size), lr=_pick(opt.lr, proxy.lr),
                       schedule=_pick(opt.schedule, "cosine"), seed=seed, threads=threads, progress=False,
                       device=str(device), amp=amp)
    teacher_config = replace(base, epochs=_pick(opt.teacher_epochs, cfg.teacher_epochs))
    recovery_epochs = _pick(opt.recovery_epochs, cfg.recovery_epochs)
    recovery = recovery_config(base, opt, cfg)
    batches = _pick(opt.recalibration_batches, cfg.recalibration_batches)
    calibration = calibration_images(splits, batches, base.batch_size, seed) if batches > 0 else None
    net = run_supernet(experiment, splits)
    scratch_budget, penalty = _pick(opt.scratch, cfg.scratch), _pick(opt.lowrank_penalty, cfg.lowrank_penalty)
    say(f"winners: {len(winners)} of the front's {len(front)} trials"
        + (f" (--top {top} asks for more; the front has only {len(front)})" if len(front) < top else "")
        + f"; training with {threads} thread{'s' if threads != 1 else ''}"
        + (" (--threads)" if opt.threads is not None else " (the experiment's proxy.threads; --threads N to change)")
        + f" on {describe(device)}" + (" with mixed precision" if amp and device.type == "cuda" else ""))

    say(f"winners start from the supernet's weights ({experiment.supernet_checkpoint}); the teacher is its largest "
        f"child" if net is not None else "winners start from scratch")
    say(f"compressed phase: {_recovery_line(recovery)}; batch norm "
        + (f"recalibrated on {batches} training batches after each stage" if batches else "not recalibrated"))

    def log(desc: str, config: TrainConfig) -> Any:
        return epoch_lines(replace(config, progress=None), len(splits.train), desc) if lines else None

    started = time.perf_counter()
    bar = tqdm(total=1 + len(winners), desc="winners", unit="model", disable=None if progress is None else not progress)
    rows: list[dict[str, Any]] = []
    teacher_file, teacher_saved = out_dir / "teacher.safetensors", False
    try:
        teacher, teacher_test, teacher_from = _teacher(run, winners, splits, opt, teacher_config, net, calibration,
                                                       bar, log)
        teacher_file, teacher_saved = Path(opt.teacher) if opt.teacher else teacher_file, opt.teacher is None
        bar.update()

        for rank, (_, w) in enumerate(winners.iterrows(), start=1):
            number = int(w["number"])
            cand = Candidate.from_json(w["candidate"])
            bar.set_postfix_str(f"trial {number}: {w.get('label', '')}")
            d = out_dir / f"{rank}-trial{number}"
            d.mkdir(exist_ok=True)
            write_atomic(d / "candidate.json", cand.to_json() + "\n")
            student, init = start(net, cand.arch, seed + number, calibration, base.batch_size)
            config = replace(base, seed=seed + number, **lowrank_settings(cand.compression.lowrank_ratio, penalty))
            result = distill(student, teacher, splits, config, opt.distill or DistillConfig(),
                             on_epoch=log(f"winner #{rank} (trial {number}) distil", config))
            distilled_test = evaluate(student, splits.test)
            compressed, steps = compress_with_recovery(student, cand.compression, splits, recovery,
                                                       calibration=calibration)
            failed = first_failure([{"step": "distil", "failed": result.run.failed
                                     or at_chance(result.student_val_after, splits)}, *steps])
            compressed_test = evaluate(compressed, splits.test)
            scratch = train_from_scratch(cand, teacher, splits, config, recovery, scratch_budget, opt.distill,
                                         log=lambda c: log(f"winner #{rank} (trial {number}) from scratch", c),
                                         calibration=calibration)
            rethinking = _rethinking(compressed_test, scratch, keep_better(evaluate(compressed, splits.val), scratch))
            kept_cand, kept_test = cand, distilled_test
            if rethinking["kept"] == "scratch":  # the pruned architecture trained from scratch did better
                student, kept_cand, compressed = scratch.dense, scratch.candidate, scratch.compressed
                steps = scratch.steps
                compressed_test, failed, kept_test = scratch.test_accuracy, None, evaluate(scratch.dense, splits.test)
                init = SCRATCH
            report = save_container(compressed, d / "model.nasz")
            save_checkpoint(d / "model.safetensors", student, kept_cand,  # dense, distilled: loadable, re-compressible
                            {"role": "winner (distilled, before compression; compressed: model.nasz)", "trial": number,
                             "teacher": str(teacher_file if opt.teacher else "../teacher.safetensors"),
                             "dataset": splits.name, "normalization": splits.normalization,
                             "test_accuracy": kept_test,
                             "compressed_test_accuracy": compressed_test, "steps": steps, "failed": failed,
                             "training": _settings(config), "recovery_epochs": recovery_epochs,
                             "recovery": _settings(recovery) if recovery else None,
                             "recalibration_batches": batches, "init": init, "teacher_init": teacher_from,
                             **rethinking})
            onnx_error = export_onnx(compressed, d / "model.onnx", cand.arch.input_shape,
                                     {"dataset": splits.name, **splits.normalization, "classes": list(splits.classes)})
            row: dict[str, Any] = {
                "rank": rank, "trial": number, "label": w.get("label", ""),
                "search_val_accuracy": w.get("accuracy", float("nan")),
                "distilled_val_accuracy": result.student_val_after, "distilled_test_accuracy": distilled_test,
                "compressed_test_accuracy": compressed_test, **rethinking, "teacher_test_accuracy": teacher_test,
                "file_bytes": report.file_bytes, "dense_bytes": report.dense_bits // 8,
                "rate": round(report.dense_bits / 8 / report.file_bytes, 2),
                "size_kb_estimate": w.get("size_kb", float("nan")), "params": int(w["params"]),
                "madds": int(w["madds"]), "onnx_max_abs_error": onnx_error, "folder": str(d.relative_to(folder)),
                "failed": failed or "", "device": str(device), "init": init, "teacher_init": teacher_from,
                "recovery_lr": recovery.lr if recovery else float("nan"), "recalibration_batches": batches,
            }
            if opt.int8 or cand.compression.quantization == "int8":
                row.update(int8_onnx(d, rank, cand.arch, splits))
            for name, profile in profiles.items():
                row[f"latency_ms:{name}"] = float(profile.latency_ms(running(cand)))
                here = measured_here(profile, cand)
                if here is not None:
                    row[f"measured_ms:{name}"] = here
            rows.append(row)
            summary = pd.DataFrame(rows)
            write_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
            write_atomic(out_dir / "summary.md", _markdown(summary, teacher_test, time.perf_counter() - started))
            bar.update()
            if lines:
                print(f"winner #{rank} (trial {number}) done: {len(rows)} of {len(winners)} in "
                      f"{out_dir / 'summary.csv'}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        bar.close()
        kept = (f"{len(rows)} of {len(winners)} winners finished and are kept in {out_dir / 'summary.md'}" if rows
                else f"no winner finished yet (of {len(winners)})")
        if teacher_saved:
            kept += f"; the teacher is in {teacher_file}"
        raise Interrupted(kept) from None
    bar.close()
    return pd.DataFrame(rows)


def _rethinking(pruned_test: float, scratch: Any, kept: str) -> dict[str, Any]:
    """The Rethinking baseline's summary columns (:mod:`nas.rethinking`): the prune-and-fine-tune test accuracy,
    the scratch one (NaN when it did not run), its epochs (0) and which was kept (``compressed_test_accuracy``
    and the files are the kept one's)."""
    return {"pruned_test_accuracy": pruned_test,
            "scratch_test_accuracy": float("nan") if scratch is None else scratch.test_accuracy,
            "scratch_epochs": 0 if scratch is None else scratch.epochs, "kept": "" if scratch is None else kept}


def _settings(config: Any) -> dict[str, Any]:
    """What a checkpoint records of how it was trained."""
    settings = {k: getattr(config, k) for k in ("epochs", "max_samples", "batch_size", "lr", "schedule", "seed",
                                                "threads", "device")}
    settings["amp"] = bool(config.amp) and str(config.device).startswith("cuda")  # the CPU trains in float32
    return settings


def winners_device(options: WinnerOptions, experiment: Any) -> tuple[Any, bool]:
    """Where the winners train (``--device``, else the experiment's ``device:``) and whether with mixed precision;
    a GPU this machine lacks is a one-line error naming the option."""
    from nas.device import resolve_device

    amp = experiment.config.amp if options.amp is None else options.amp
    if options.device is not None:
        return resolve_device(options.device, "--device"), amp
    return resolve_device(experiment.config.device, f"{experiment.source}: device"), amp


#: The compressed phase's peak learning rate as a share of the training lr when ``winners.recovery_lr`` is
#: not set. results/bench/winners_recovery.json (Fashion-MNIST; binary, ternary, 4-bit + rank 0.5 winners,
#: 1000 recovery images per stage): with batch norm recalibrated, the training lr recovered 47.1% mean test
#: accuracy and a tenth of it 34.0% (without recalibration 16.6% and 13.9%): binary and ternary weights need
#: large steps to move the latent weights across a threshold in a short recovery.
RECOVERY_LR_SHARE = 1.0


def recovery_config(base: Any, options: WinnerOptions, cfg: Any) -> Any:
    """The recovery fine-tune after each compression stage (None when ``recovery_epochs`` is 0): its own peak
    learning rate (``recovery_lr``, else :data:`RECOVERY_LR_SHARE` of ``base.lr``) annealed to 0 by a
    cosine over each recovery's own steps, whatever the training's schedule; the rest as ``base``."""
    epochs = _pick(options.recovery_epochs, cfg.recovery_epochs)
    if epochs == 0:
        return None
    lr = _pick(options.recovery_lr, cfg.recovery_lr) or RECOVERY_LR_SHARE * base.lr
    return replace(base, epochs=epochs, lr=lr, schedule="cosine")


def _recovery_line(recovery: Any) -> str:
    if recovery is None:
        return "no recovery fine-tune (recovery_epochs 0)"
    return (f"{recovery.epochs} recovery epoch{'s' if recovery.epochs != 1 else ''} per stage at lr {recovery.lr:g} "
            f"(cosine)")


def _teacher(run: Any, winners: Any, splits: Any, opt: WinnerOptions, config: Any, net: Any, calibration: Any,
             bar: Any, log: Callable[[str, Any], Any]) -> tuple[Any, float, str]:
    """The teacher, its test accuracy and where it came from (``supernet``, ``scratch`` or ``file``): the
    user's checkpoint (``--teacher``), else the supernet's largest child (:mod:`nas.inherit`; trained only with
    ``--teacher-epochs``), else :func:`_train_teacher`'s; the last two are saved as ``winners/teacher.safetensors``."""
    from nas.checkpoint import load_checkpoint, save_checkpoint
    from nas.data import check_fits
    from nas.inherit import SCRATCH, SUPERNET, largest_child
    from nas.train import evaluate, train

    if opt.teacher is not None:  # the user's teacher: no teacher training
        teacher, cand, _ = load_checkpoint(opt.teacher)
        check_fits(splits, cand.arch.input_shape, cand.arch.num_classes)
        return teacher, evaluate(teacher, splits.test), "file"
    if net is not None:
        teacher, cand = largest_child(net, calibration, config.batch_size)
        number, source, trained = None, SUPERNET, opt.teacher_epochs is not None
        if trained:
            bar.set_postfix_str("teacher (the supernet's largest child)")
            train(teacher, splits, config, on_epoch=log("teacher (the supernet's largest child)", config))
    else:
        teacher, cand, number = _train_teacher(run, winners, splits, config, bar, log)
        source, trained = SCRATCH, True
    test = evaluate(teacher, splits.test)
    save_checkpoint(run.winners_dir / "teacher.safetensors", teacher, cand,
                    {"role": "teacher" + (" (the supernet's largest child)" if net is not None else ""),
                     "trial": number, "init": source, "val_accuracy": evaluate(teacher, splits.val),
                     "test_accuracy": test, "dataset": splits.name, "normalization": splits.normalization,
                     "training": _settings(config) if trained else None})
    return teacher, test, source


def _train_teacher(run: Any, winners: Any, splits: Any, config: Any, bar: Any,
                   log: Callable[[str, Any], Any]) -> tuple[Any, Candidate, int]:
    """The teacher: the run's most accurate trained architecture without its compression, trained with
    ``config`` (``winners.teacher_epochs``)."""
    import torch

    from nas.models import build_model
    from nas.train import train

    done = run.completed()
    trained = done[done["trained"]]
    if "accuracy" not in trained.columns or trained.empty:
        teacher_row = winners.iloc[-1]
    else:
        teacher_row = trained.loc[trained["accuracy"].idxmax()]
    cand = Candidate.from_json(teacher_row["candidate"])
    cand = Candidate(cand.arch, replace(cand.compression, sparsity_conv=0.0, sparsity_linear=0.0, codebook_bits=None,
                                        quantization="none", lowrank_ratio=None, channel_ratio=0.0,
                                        channel_importance="l1"))
    torch.manual_seed(config.seed)
    teacher = build_model(cand.arch)
    number = int(teacher_row["number"])
    bar.set_postfix_str(f"teacher (trial {number})")
    train(teacher, splits, config, on_epoch=log(f"teacher (trial {number})", config))
    return teacher, cand, number


#: The int8 columns of the summary, when some winner has an int8 ONNX file: onnxruntime test accuracy and latency.
INT8_COLUMNS = ("onnx_test_accuracy", "int8_test_accuracy", "onnx_ms", "int8_ms", "int8_speedup")


#: The Rethinking baseline's columns in summary.md, when some winner ran it (:func:`_rethinking`).
RETHINKING_COLUMNS = ("pruned_test_accuracy", "scratch_test_accuracy", "kept")


def _any_scratch(summary: Any) -> bool:
    return "scratch_epochs" in summary.columns and bool((summary["scratch_epochs"] > 0).any())


def _markdown(summary: Any, teacher_test: float, seconds: float) -> str:
    cols = ["rank", "trial", "label", "search_val_accuracy", "distilled_test_accuracy", "compressed_test_accuracy",
            *(RETHINKING_COLUMNS if _any_scratch(summary) else ()), "file_bytes", "rate"] \
        + [c for c in summary.columns if c.startswith(("latency_ms:", "measured_ms:"))] \
        + [c for c in INT8_COLUMNS if c in summary.columns]
    lines = [f"# Winners: distilled from a teacher at {teacher_test:.2%} test accuracy, then compressed",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float) and v != v:  # NaN: a winner without an int8 file
                cells.append("-")
            elif isinstance(v, float) and "accuracy" in c:
                cells.append(f"{v:.2%}")
            elif isinstance(v, float):
                cells.append(f"{v:.3g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{len(summary)} winners in {seconds:.0f} s. Files per winner: `model.nasz` (compressed container, "
              "`file_bytes`), `model.safetensors`, `model.onnx`, `candidate.json`.", ""]
    if _any_scratch(summary):
        lines += ["Rethinking baseline (Liu et al. 2019): each winner with structured pruning was also trained from "
                  "scratch at its pruned width on the same budget (`scratch_epochs` in summary.csv); `kept` is the "
                  "one with the higher validation accuracy, and `compressed_test_accuracy` and the files are its.", ""]
    lines += [f"**Winner #{r['rank']} (trial {r['trial']}) FAILED**: {_failed(r)}." for _, r in summary.iterrows()
              if _failed(r)] + ([""] if any(_failed(r) for _, r in summary.iterrows()) else [])
    return "\n".join(lines)


def _failed(row: Any) -> str:
    """A summary row's failure reason ('' when it succeeded; summaries read back from CSV hold NaN)."""
    value = row.get("failed", "")
    return value if isinstance(value, str) else ""


def print_summary(summary: Any) -> None:
    for _, r in summary.iterrows():
        lat = "  ".join(f"{c.split(':', 1)[0].replace('_ms', '')} {r[c]:.2f} ms" for c in summary.columns
                        if c.startswith(("latency_ms:", "measured_ms:")))
        print(f"#{r['rank']} trial {r['trial']:>3} {r['label']:<28} test {r['distilled_test_accuracy']:.2%} distilled, "
              f"{r['compressed_test_accuracy']:.2%} compressed; {r['file_bytes']:,} B ({r['rate']:.1f}x)  {lat}"
              + (f"  int8 ONNX {r['int8_test_accuracy']:.2%}, {r['int8_ms']:.2f} ms vs {r['onnx_ms']:.2f} ms fp32"
                 if r.get("int8_ms", float("nan")) == r.get("int8_ms", float("nan")) and "int8_ms" in r else "")
              + (f"  (pruned {r['pruned_test_accuracy']:.2%}, from scratch {r['scratch_test_accuracy']:.2%}: kept "
                 f"{r['kept']})" if r.get("scratch_epochs", 0) > 0 else "")
              + (f"  FAILED: {_failed(r)}" if _failed(r) else ""))
