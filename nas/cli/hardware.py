"""``nas hardware list | build | calibrate | validate``: latency profiles."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from nas.errors import NasError
from nas.hardware import USER_ENV, LutProfile, available_profiles, get_profile, is_builtin, user_dir
from nas.hardware.lut import shape_key
from nas.hardware.measure import build_table, calibrate, validate
from nas.hardware.refit import MAX_NETWORKS, MAX_SECONDS, calibrate_here
from nas.space import Space, load_space


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hw = sub.add_parser("hardware", help="latency profiles: list, build, calibrate, validate")
    hw_sub = hw.add_subparsers(dest="hardware_command", metavar="ACTION")
    hw_sub.required = True

    ls = hw_sub.add_parser("list", help="built-in profiles and installed plugins, with their source")
    ls.add_argument("--no-plugins", action="store_true", help="do not load plugins (also: NAS_DISABLE_PLUGIN_AUTOLOAD=1)")

    build = hw_sub.add_parser("build", help="measure every layer a space can produce into a latency table")
    build.add_argument("--space", required=True, help="search space name or YAML file")
    build.add_argument("--name", required=True, help="profile name; the table is written to OUT/NAME.json")
    build.add_argument("--out", type=Path, default=None,
                       help=f"folder for the table (default: ${USER_ENV}, else ~/.local/share/nas/hardware, where "
                            "profiles are looked up by name; a table elsewhere is named by its path)")
    _input_options(build)
    build.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    build.add_argument("--batch", type=int, default=1, help="batch size (default: %(default)s)")
    build.add_argument("--rounds", type=int, default=11, help="interleaved timing rounds (default: %(default)s)")
    build.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                       help="what runs each layer: torch modules, or ONNX files in onnxruntime (default: %(default)s)")
    build.add_argument("--precision", choices=["float32", "int8"], default="float32",
                       help="int8: layers quantized with onnxruntime, stored beside the float32 entries "
                            "(needs --runtime onnxruntime; default: %(default)s)")

    for action, helptext, n in (("calibrate", "fit the table's correction on measured whole networks", 30),
                                ("validate", "measure held-out networks and report prediction accuracy", 50)):
        p = hw_sub.add_parser(action, help=helptext)
        p.add_argument("profile", help="profile name or table file (.json)")
        p.add_argument("--space", required=True, help="search space the networks are drawn from")
        p.add_argument("-n", type=int, default=None,
                       help=f"networks (default: {n}" + (f"; with --here {HERE_NETWORKS}, at most {MAX_NETWORKS})"
                                                         if action == "calibrate" else ")"))
        if action == "calibrate":
            p.add_argument("--here", action="store_true",
                           help="refit a table measured on another machine to this one (its entries rescaled, "
                                f"fitted on whole networks timed here for at most {MAX_SECONDS:.0f} s), "
                                f"written as NAME-here.json into ${USER_ENV} (default ~/.local/share/nas/hardware)")
        _input_options(p)
        p.add_argument("--precision", choices=["float32", "int8"], default="float32",
                       help="the table's entries of this precision, networks run with their runtime "
                            "(default: %(default)s)")
        p.add_argument("--json", type=Path, help="also write the results to this file" if action == "validate"
                       else argparse.SUPPRESS)
    hw.set_defaults(run=run)


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", metavar="CxHxW", default=None,
                   help="the space's networks at this input shape, e.g. 1x28x28 for Fashion-MNIST, as a search on "
                        "such a dataset fits them (default: the space's own)")
    p.add_argument("--classes", type=int, default=None,
                   help="with that many classes (default: the space's own)")


def _space(args: argparse.Namespace) -> Space:
    """The space of ``--space``, at ``--input`` / ``--classes`` when given (as a search fits it to its dataset)."""
    space = load_space(args.space)
    if args.input is None and args.classes is None:
        return space
    shape = space.input_shape
    if args.input is not None:
        try:
            shape = tuple(int(d) for d in args.input.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise NasError(f"--input must be CxHxW (e.g. 1x28x28) or a feature count, but got {args.input!r}.")
    if args.classes is not None and args.classes < 2:
        raise NasError(f"--classes must be >= 2, but got {args.classes}.")
    return space.with_input(shape, args.classes or space.config.num_classes)


def run(args: argparse.Namespace) -> int:
    return _ACTIONS[args.hardware_command](args)


def _list(args: argparse.Namespace) -> int:
    rows = available_profiles(plugins=False if args.no_plugins else None)
    print(f"{'name':<24} {'kind':<12} {'source':<36} where")
    for p in rows:
        print(f"{p.name:<24} {p.kind:<12} {p.source:<36} {p.where}")
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.batch < 1 or args.rounds < 2:
        raise NasError(f"--threads and --batch must be >= 1 and --rounds >= 2, but got "
                       f"{args.threads}, {args.batch}, {args.rounds}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise NasError(f"--name must be a plain name (letters, digits, '_', '.', '-'), but got {args.name!r}; "
                       f"choose the folder with --out.")
    builtin = [p.name for p in available_profiles(plugins=False) if p.source == "built-in"]
    if args.out is None and args.name in builtin:
        raise NasError(f"--name {args.name} is a built-in profile (measured on another machine); name the table "
                       f"built on this one otherwise, e.g. --name {args.name}-here.")
    space = _space(args)
    out = args.out if args.out is not None else user_dir()
    profile = build_table(space, args.name, out / f"{args.name}.json", threads=args.threads,
                          batch=args.batch, rounds=args.rounds, runtime=args.runtime, precision=args.precision)
    table = profile.view(args.precision).data
    # Looked up by name from its folder (the user's or the built-in one); elsewhere named by its path.
    named = args.name if args.out is None or is_builtin(profile.path) else str(Path(profile.path).resolve())
    flags = "" if args.precision == "float32" else f" --precision {args.precision}"
    flags += "".join(f" --{k} {getattr(args, k)}" for k in ("input", "classes") if getattr(args, k) is not None)
    print(f"{profile.path}: {len(table.entries)} {args.precision} entries at input {shape_key(space.input_shape)}, "
          f"{space.config.num_classes} classes. Name it in an experiment as `profiles: [{named}]`. "
          f"Next: `nas hardware calibrate {named} --space {args.space}{flags}`")
    return 0


def _lut(name: str) -> LutProfile:
    profile = get_profile(name)
    if not isinstance(profile, LutProfile):
        raise NasError(f"{name!r} is a {profile.kind} profile; only measured tables (.json) are calibrated/validated.")
    return profile


#: Networks ``calibrate --here`` times by default.
HERE_NETWORKS = 16


def _calibrate(args: argparse.Namespace) -> int:
    profile = _lut(args.profile)
    if args.here and not profile.elsewhere():
        print(f"{profile.path} was measured on this machine: fitting its calibration as without --here.")
    elif args.here:
        return _calibrate_here(profile, args)
    for shape, cal in calibrate(profile, _space(args), args.n or 30, precision=args.precision).items():
        print(f"{profile.path}, input {shape}: latency = {cal.intercept_ms:.4f} ms + {cal.slope:.4f} x sum of "
              f"layer times (fitted on {cal.networks} networks of {cal.space!r})")
    return 0


def _calibrate_here(profile: LutProfile, args: argparse.Namespace) -> int:
    if args.precision != "float32":
        raise NasError("--here refits the float32 entries (torch); measure int8 entries on this machine with "
                       "`nas hardware build ... --runtime onnxruntime --precision int8`.")
    space = _space(args)
    here, fit = calibrate_here(profile, space, user_dir(), n=args.n or HERE_NETWORKS)
    terms = {"table_ms": "x table time", "madds": "ms per MAdd (millions)", "layers": "ms per layer"}
    scales = ", ".join(f"{v:.4g} {terms[k]}" for k, v in fit.terms.items())
    loo = ", ".join(f"{m} {100 * e:.1f}%" for m, e in fit.loo_error.items())
    assert here.data.adapted is not None
    print(f"{here.path}: {profile.name} refitted to {here.data.device} on {here.data.adapted.networks} networks of "
          f"{space.name!r} in {here.data.adapted.seconds:.0f} s: {fit.model} ({scales}), intercept "
          f"{fit.intercept_ms:.4f} ms; leave-one-out error: {loo}. Name it in an experiment as "
          f"`profiles: [{here.name}]`; check it with `nas hardware validate {here.name} --space {args.space}`.")
    return 0


def _validate(args: argparse.Namespace) -> int:
    profile = _lut(args.profile)
    result = validate(profile, _space(args), args.n or 50, precision=args.precision)
    for label, key in (("calibrated", "calibrated"), ("naive sum", "naive_sum")):
        s = result[key]
        if s is None:
            print(f"{label:<11} (no calibration yet: run `nas hardware calibrate`)")
            continue
        print(f"{label:<11} within +-10%: {100 * s['within_10pct']:5.1f}%   MAPE {100 * s['mape']:5.1f}%   "
              f"Spearman {s['spearman']:.3f}")
    print(f"noise floor: the same network measured twice differs by {result['noise_floor_median_pct']:.1f}% "
          f"(median over {result['networks']} networks)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


#: What each ``nas hardware ACTION`` runs.
_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list, "build": _build, "calibrate": _calibrate, "validate": _validate}
