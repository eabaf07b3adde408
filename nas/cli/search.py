"""``nas search EXPERIMENT.yaml``: run or resume a search into its run folder (:mod:`nas.search`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nas.cli._args import add_device_arguments, device_of
from nas.device import check_device_name
from nas.errors import NasError
from nas.experiment import ExperimentError, load_experiment
from nas.search import redact, search
from nas.search.study import load_hint


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="run or resume a search experiment into its run folder",
                       description="Search architectures and compression settings as the experiment file says. "
                                   "Running it again on the same run folder resumes the study.")
    p.add_argument("experiment", type=Path, help="experiment YAML file (see examples/)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: results/<name>)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by workers, e.g. postgresql://user:pw@host/db "
                        "(default: study.db in the run folder)")
    p.add_argument("--workers", type=int, default=None, help="worker processes on this machine (default: the file's)")
    p.add_argument("--trials", type=int, default=None, help="override budget.trials (total for the study)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine (default); ray: Ray Tune trials (nas.search.ray)")
    p.add_argument("--address", default=None,
                   help="with --backend ray: a running Ray cluster, HOST:PORT or auto (default: start a local one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--finetune", action="store_true", help="fine-tune the winners at the end (winners.at_end)")
    add_device_arguments(p, "the experiment's device, else cpu; with --backend ray each trial uses the GPU it "
                            "reserves (resources.gpus)")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def _command(args: argparse.Namespace) -> str:
    """The command that runs this search again (resumes it), as run.json keeps it and the Ctrl+C hint says it:
    every option given, the storage URL without its password."""
    words = ["nas", "search", str(args.experiment)]
    for flag, value in (("--out", args.out), ("--storage", redact(args.storage) if args.storage else None),
                        ("--workers", args.workers), ("--trials", args.trials), ("--address", args.address),
                        ("--device", args.device)):
        if value is not None:
            words += [flag, str(value)]
    if args.backend != "local":
        words += ["--backend", args.backend]
    words += [flag for flag, on in (("--no-progress", args.no_progress), ("--finetune", args.finetune),
                                    ("--no-amp", args.no_amp)) if on]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    exp = load_experiment(args.experiment)
    if args.trials is not None:
        if args.trials < 1:
            raise ExperimentError(f"--trials must be >= 1, but got {args.trials}.")
        budget = exp.config.budget.model_copy(update={"trials": args.trials})
        exp = exp.with_config(exp.config.model_copy(update={"budget": budget}))
    if args.workers is not None and args.workers < 1:
        raise ExperimentError(f"--workers must be >= 1, but got {args.workers}.")
    if args.backend == "ray" and args.workers is not None:
        raise ExperimentError("--workers is for the local backend; Ray runs as many trials at once as the cluster's "
                              "CPUs allow (resources.cpus each).")
    if args.address is not None and args.backend != "ray":
        raise ExperimentError(f"--address {args.address} needs --backend ray.")
    if args.device is not None or args.no_amp:
        if args.backend == "local":
            device_of(args, exp.config.device, f"{exp.source}: device")  # said here, naming --device
        elif args.device is not None:
            check_device_name(args.device, "--device")  # a Ray trial resolves it where it runs
        exp = exp.with_config(exp.config.model_copy(update={"device": args.device or exp.config.device,
                                                            "amp": exp.config.amp and not args.no_amp}))
    command = _command(args)
    try:
        if args.backend == "ray":
            from nas.search.ray import search as ray_search

            result = ray_search(exp, folder=args.out, storage=args.storage, address=args.address,
                                        progress=False if args.no_progress else None, command=command)
        else:
            result = search(exp, folder=args.out, storage=args.storage, workers=args.workers,
                            progress=False if args.no_progress else None, command=command,
                            worker_index=args.worker_index)
    except KeyboardInterrupt:
        print(f"nas: interrupted; every finished trial is saved. Run `{command}` again to resume.", file=sys.stderr)
        return 130
    if args.worker_index:
        return 0
    r = result
    states = r.frame["state"].value_counts().to_dict() if len(r.frame) else {}
    print(f"{r.run.study_name}: {r.trials} trials ({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}), "
          f"Pareto front {r.front}, hypervolume {r.hypervolume:.4f}, {r.seconds:.0f} s"
          + (f" on {r.run.folder.info.device}" if r.run.folder.info.device else "")
          + f"; results in {r.run.folder.path}/")
    print(f"open the study with Optuna's tools: {load_hint(r.run.study_name, r.run.storage_url)}")
    if r.failure:
        raise NasError(f"{r.failure} (fail_reason in {r.run.folder.file('trials.csv')}).")
    if args.finetune or exp.config.winners.at_end:
        from nas.cli.finetune import finetune_winners
        from nas.winners import WinnerOptions

        options = WinnerOptions(device=args.device, amp=False if args.no_amp else None)  # as the search trained
        return finetune_winners(r.run.folder.path, options, progress=False if args.no_progress else None,
                                at_end=True)
    return 0
