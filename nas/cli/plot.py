"""``nas plot``: pictures of run folders, of a compressed checkpoint, of a profile's accuracy.

::

    nas plot RUN                          # RUN/plots/{front,hypervolume,importance,parallel,latency}.png
                                          # and fidelity.png once `nas finetune RUN` made winners
    nas plot RUN_A RUN_B --what hypervolume   # samplers compared: RUN_A/plots/hypervolume-compare.png
    nas plot CPU_RUN MCU_RUN --what devices   # one space searched per device: RUN_A/plots/devices.png
    nas plot --compression model.safetensors  # Deep Compression pictures and the per-layer table
    nas plot --validation validate.json       # predicted vs measured latency (nas hardware validate --json)
    nas plot --candidate cand.json --profile reference-cpu   # where one candidate's time goes

Works while a search is running: it draws the trials finished so far.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

from nas.checkpoint import load_checkpoint
from nas.cli._args import read_candidate, read_json_arg, recorded_normalization
from nas.errors import NasError
from nas.hardware import get_profile
from nas.plots import (
    distinct_names,
    plot_devices,
    plot_fidelity,
    plot_front,
    plot_hypervolume,
    plot_importance,
    plot_latency_breakdown,
    plot_latency_validation,
    plot_parallel,
    plot_weight_distribution,
    rank_params,
    run_latency_breakdown,
    tradeoff_picture,
    weight_picture_settings,
    write_layer_table,
)
from nas.run import RunFolder, load_run
from nas.spec import CompressionSpec

RUN_PICTURES = ("front", "hypervolume", "importance", "parallel", "latency", "fidelity", "devices")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot", help="pictures of run folders (Pareto fronts, hypervolume, importance), a compressed model, "
                     "or a latency profile",
        description="Draw PNG pictures for any run folder of `nas search` (also while it runs), a checkpoint's "
                    "compression (--compression), a profile's validation (--validation) or a candidate's "
                    "latency breakdown (--candidate).")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders; several compare their hypervolume")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the pictures (default: RUN/plots, or next to the file given)")
    p.add_argument("--what", default=None,
                   help=f"comma-separated subset of {','.join(RUN_PICTURES)} (default: every one that applies)")
    p.add_argument("--trial", type=int, default=None,
                   help="trial number for the latency picture (default: the top winner, else the most accurate "
                        "trial on the front)")
    p.add_argument("--profile", default=None,
                   help="hardware profile for latency pictures (default: the run's, else reference-cpu)")
    comp = p.add_argument_group("compression pictures")
    comp.add_argument("--compression", type=Path, metavar="CHECKPOINT", default=None,
                      help="a trained checkpoint (.safetensors): accuracy vs size for pruning / quantization / both, "
                           "weight distribution with the codebook, per-layer table")
    comp.add_argument("--spec", default=None, help="CompressionSpec JSON (object or file) for the weight picture "
                                                     "and the table (default: the checkpoint's candidate's)")
    comp.add_argument("--dataset", default=None, help="dataset to measure accuracy on (default: the checkpoint's)")
    comp.add_argument("--data-root", default=None, help="folder holding the dataset files")
    comp.add_argument("--eval-samples", type=int, default=2000,
                      help="validation samples per accuracy measurement (default: %(default)s)")
    comp.add_argument("--retrain-epochs", type=int, default=0,
                      help="fine-tune this many epochs after each compression stage (default: 0, none)")
    comp.add_argument("--layer", default=None, help="layer for the weight picture (default: the largest)")
    comp.add_argument("--no-tradeoff", action="store_true", help="skip the accuracy-vs-size picture (no data needed)")
    lat = p.add_argument_group("latency pictures")
    lat.add_argument("--validation", type=Path, metavar="JSON", default=None,
                     help="output of `nas hardware validate PROFILE --space S --json FILE`")
    lat.add_argument("--candidate", type=Path, default=None, help="candidate JSON file for a latency breakdown")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # this process only draws files
    if not (args.runs or args.compression or args.validation or args.candidate):
        raise NasError("give a RUN folder, --compression CHECKPOINT, --validation JSON or --candidate JSON; "
                       "see `nas plot --help`.")
    pictures, explicit = _what(args.what)
    written: list[Path] = []
    errors: list[tuple[str, str]] = []
    if args.runs:
        _run_pictures(args, pictures, explicit, written, errors)
    if args.compression:
        _compression_pictures(args, written)
    if args.validation:
        out = args.out or args.validation.resolve().parent
        written.append(plot_latency_validation(args.validation, out / "latency-validation.png"))
        print(f"wrote {written[-1]}")
    if args.candidate:
        written.append(_candidate_breakdown(args))
        print(f"wrote {written[-1]}")
    if not written:  # the first reason says it (a run too young to draw is too young for every picture)
        raise NasError(errors[0][1] if errors else "nothing to plot.")
    for label, why in errors:
        print(f"nas plot: skipped {label}: {why}", file=sys.stderr)
    return 0


def _what(text: str | None) -> tuple[list[str], bool]:
    """(pictures, explicit): the --what list, or every run picture when not given."""
    if text is None:
        return list(RUN_PICTURES), False
    items = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in items if w not in RUN_PICTURES]
    if unknown or not items:
        raise NasError(f"--what must be a comma-separated subset of {','.join(RUN_PICTURES)}, but got {text!r}.")
    return items, True


def _attempt(label: str, draw: Callable[[], Path], written: list[Path], errors: list[tuple[str, str]],
             strict: bool) -> None:
    try:
        written.append(draw())
        print(f"wrote {written[-1]}")
    except NasError as exc:
        if strict:
            raise
        errors.append((label, str(exc)))


def _run_pictures(args: argparse.Namespace, pictures: list[str], explicit: bool, written: list[Path],
                  errors: list[tuple[str, str]]) -> None:
    runs = [load_run(r) for r in args.runs]
    several = len(runs) > 1
    for r, name in zip(runs, distinct_names(runs)):
        out = args.out or r.path / "plots"
        prefix = f"{name}-" if several and args.out else ""  # one folder for all: a file per run
        tag = f"{name} " if several else ""
        ranked = cache(partial(rank_params, r))  # fitted once: importance and parallel show the same top choices
        draws: dict[str, Callable[[RunFolder, Path], Path]] = {
            "front": plot_front,
            "hypervolume": lambda one, path: plot_hypervolume([one], path),
            "importance": lambda one, path: plot_importance(one, path, ranked()),
            "parallel": lambda one, path: plot_parallel(one, path, ranked()),
            "latency": lambda one, path: run_latency_breakdown(one, path, args.trial, args.profile),
            "fidelity": plot_fidelity,
        }
        for name in pictures:
            if name == "devices":
                continue  # several runs in one picture, below
            if name == "fidelity" and not explicit and not r.summary_file.is_file():
                continue  # before `nas finetune RUN` there is nothing to compare: not worth a warning
            _attempt(f"{tag}{name}", partial(draws[name], r, out / f"{prefix}{name}.png"), written, errors,
                     explicit and not several)
    if several and "hypervolume" in pictures:
        out = args.out or runs[0].path / "plots"
        _attempt("hypervolume comparison", lambda: plot_hypervolume(runs, out / "hypervolume-compare.png"),
                 written, errors, explicit)
    if "devices" in pictures and (explicit or (several and len({r.info.latency_profile for r in runs}) > 1)):
        out = args.out or runs[0].path / "plots"
        _attempt("device comparison", lambda: plot_devices(runs, out / "devices.png"), written, errors, explicit)


def _candidate_breakdown(args: argparse.Namespace) -> Path:
    cand = read_candidate(args.candidate)
    out = args.out or args.candidate.resolve().parent
    return plot_latency_breakdown(get_profile(args.profile or "reference-cpu"), cand.arch,
                                  out / f"{args.candidate.stem}-latency.png", label=args.candidate.name)


def _compression_pictures(args: argparse.Namespace, written: list[Path]) -> None:
    model, candidate, meta = load_checkpoint(args.compression)
    spec = CompressionSpec.from_dict(read_json_arg(args.spec, "--spec")) if args.spec else candidate.compression
    out = args.out or args.compression.resolve().parent / "plots"
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_layer_table(candidate.arch, spec, out)}")
    sparsity, bits, note = weight_picture_settings(spec)
    written.append(plot_weight_distribution(model, out / "compression-weights.png", sparsity=sparsity, bits=bits,
                                            layer=args.layer))
    print(f"wrote {written[-1]}{note}")
    if not args.no_tradeoff:
        dataset = args.dataset or (meta.get("extra") or {}).get("dataset")
        if not dataset:
            raise NasError(f"{args.compression} does not say which dataset it was trained on: give --dataset "
                           f"(or --no-tradeoff).")
        written.append(tradeoff_picture(model, candidate.arch, dataset, out / "compression-tradeoff.png",
                                        root=args.data_root, samples=args.eval_samples,
                                        retrain_epochs=args.retrain_epochs,
                                        normalization=recorded_normalization(args.compression, dataset)))
        print(f"wrote {written[-1]}")
