"""The ``nas`` command: small subcommands, each ``run(args) -> int``.

A subcommand lives in the module that owns its idea and registers itself with
``add_parser(subparsers)``; this file only assembles them. Errors a user can fix
(:class:`~nas.errors.NasError`) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from nas import __version__
from nas.cost import Cost
from nas.errors import HardwareError, NasError
from nas.spec import ArchSpec, Candidate


def _add_space_commands(sub: argparse._SubParsersAction) -> None:
    spaces = sub.add_parser("spaces", help="list the built-in search spaces")
    spaces.set_defaults(run=_run_spaces)

    sample = sub.add_parser(
        "sample", help="draw random candidates from a space and print their exact costs (the demo)")
    sample.add_argument("space", nargs="?", default="mobilenetv2", help="built-in name or YAML file (default: %(default)s)")
    sample.add_argument("-n", "--num", type=int, default=8, help="candidates to draw (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="first seed; candidate i uses seed + i")
    sample.add_argument("--json", action="store_true", help="print one candidate JSON per line instead of a table")
    sample.add_argument("--profile", default="reference-cpu",
                        help="hardware profile for the latency column (default: %(default)s)")
    sample.set_defaults(run=_run_sample)


def _add_cost_command(sub: argparse._SubParsersAction) -> None:
    cost = sub.add_parser(
        "cost", help="params, MAdds and a per-stage table of an architecture",
        description="Cost one architecture: a built-in name (e.g. mobilenetv2-1.0-224), a space YAML file "
                    "(its candidate for --seed) or a candidate JSON file.")
    cost.add_argument("arch", help="built-in space name, space YAML file, or candidate JSON file")
    cost.add_argument("--seed", type=int, default=0, help="which candidate of a searchable space (default: 0)")
    cost.add_argument("--vs", choices=["fvcore"], help="cross-check the counts with fvcore on the built model")
    cost.set_defaults(run=_run_cost)


def _load_candidate(arch: str, seed: int) -> tuple[Candidate, str]:
    from pathlib import Path

    from nas.space import load_space

    if arch.endswith(".json"):
        try:
            text = Path(arch).read_text(encoding="utf-8")
        except OSError as exc:
            raise NasError(f"cannot read candidate file {arch!r}: {exc.strerror}.") from None
        except UnicodeDecodeError:
            raise NasError(f"candidate file {arch!r} is not UTF-8 text (a binary or damaged file?).") from None
        return Candidate.from_json(text), arch
    space = load_space(arch)
    label = space.name if space.is_fixed else f"{space.name}, seed {seed}"
    return space.random(seed), label


def _run_cost(args: argparse.Namespace) -> int:
    from nas.cost import count, stage_costs

    cand, label = _load_candidate(args.arch, args.seed)
    arch = cand.arch
    cost = count(arch)
    print(f"{label}: input {'x'.join(map(str, arch.input_shape))}, {arch.num_classes} classes")
    header = f"{'stage':<28} {'modules':<14} {'output':<14} {'params':>12} {'MAdds':>15} {'% MAdds':>8}"
    print(header)
    print("-" * len(header))
    for row in stage_costs(arch):
        shape = "x".join(map(str, row.out_shape))
        print(f"{row.name:<28} {row.layers:<14} {shape:<14} {row.params:>12,} {row.madds:>15,} "
              f"{100 * row.madds / max(cost.madds, 1):>7.1f}%")
    print("-" * len(header))
    print(f"{'total':<58} {cost.params:>12,} {cost.madds:>15,}")
    print(f"params {cost.params / 1e6:.3f}M ({cost.params_without_norm / 1e6:.3f}M without batch norm), "
          f"MAdds {cost.madds / 1e6:.1f}M (conv + linear multiply-adds, batch 1)")
    if args.vs == "fvcore":
        return _check_fvcore(arch, cost)
    return 0


def _check_fvcore(arch: ArchSpec, cost: Cost) -> int:
    from nas.cost import fvcore_count
    from nas.models import build_model

    model = build_model(arch).eval()
    fv = fvcore_count(model, arch.input_shape)
    fv_params = sum(p.numel() for p in model.parameters())
    ok = fv.madds == cost.madds and fv.total == cost.fvcore_default and fv_params == cost.params
    print(f"fvcore: conv + linear {fv.madds:,} MAdds, default total {fv.total:,}; "
          f"torch: {fv_params:,} params -> {'identical' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def _run_spaces(args: argparse.Namespace) -> int:
    from nas.space import builtin_spaces, load_space

    for name in builtin_spaces():
        space = load_space(name)
        print(f"{name:<20} {space.config.family:<12} input {'x'.join(map(str, space.input_shape)):<8} "
              f"{space.config.description}")
    return 0


def _describe(layers: Sequence[object]) -> str:
    """A short architecture label: block count and kernels for MobileNets, widths otherwise."""
    from nas.spec import Conv, InvertedResidual, Linear

    blocks = [layer for layer in layers if isinstance(layer, InvertedResidual)]
    if blocks:
        return f"{len(blocks)} blocks, k={''.join(str(b.kernel) for b in blocks)}"
    return "widths " + "-".join(str(layer.out) for layer in layers if isinstance(layer, (Conv, Linear)))


def _run_sample(args: argparse.Namespace) -> int:
    from nas.cost import count, size_bits
    from nas.hardware import get_profile
    from nas.space import load_space

    if args.num < 1:
        raise NasError(f"--num must be >= 1, but got {args.num}.")
    space = load_space(args.space)
    profile = get_profile(args.profile)
    if args.json:
        for i in range(args.num):
            print(space.random(args.seed + i).to_json())
        return 0
    print(f"{args.num} random candidates from {space.name!r} ({space.source}), input {space.input_shape}; "
          f"latency on {profile.name!r} ({profile.kind})")
    header = (f"{'seed':>5} {'family':<14} {'params':>10} {'MAdds':>13} {'ms':>7} {'dense KB':>9} {'compr. KB':>9} "
              f"{'rate':>6}  compression / architecture")
    print(header)
    print("-" * len(header))
    for i in range(args.num):
        cand = space.random(args.seed + i)
        cost = count(cand.arch)
        c = cand.compression
        small = size_bits(cand.arch, c) / 8 / 1000
        dense = cost.params * 4 / 1000
        knobs = (f"sparsity {c.sparsity_conv:.2f}/{c.sparsity_linear:.2f}, "
                 f"{c.quantization if c.quantization != 'none' else (f'{c.codebook_bits}-bit codebook' if c.codebook_bits else 'fp32')}, "
                 f"low-rank {c.lowrank_ratio or 'off'}")
        try:
            latency = f"{profile.latency_ms(cand.arch):7.2f}"
        except HardwareError:  # a table that does not cover this space: say so in the column, not abort
            latency = f"{'n/a':>7}"
        print(f"{args.seed + i:>5} {cand.arch.family:<14} {cost.params:>10,} {cost.madds:>13,} {latency} "
              f"{dense:>9.1f} {small:>9.1f} {dense / small:>5.1f}x  {knobs}; {_describe(cand.arch.layers)}")
    return 0


#: Modules that register subcommands through ``add_commands(subparsers)``, in help order.
COMMAND_MODULES = (
    "nas.cli.search",
    "nas.finetune",
    "nas.compress.cli",
    "nas.hardware.cli",
    "nas.plots.cli", "nas.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas", description="Compact CNN architectures and their compression settings: draw them from search "
                                "spaces, cost them, train and distil them, compress them, profile their latency.")
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_space_commands(sub)
    _add_cost_command(sub)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        (module.add_parser if hasattr(module, "add_parser") else module.add_commands)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except NasError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
