"""The ``nas`` command: small subcommands, each ``run(args) -> int``.

A subcommand lives in the module that owns its idea and registers itself with
``add_parser(subparsers)``; this file only assembles them. Errors a user can fix
(:class:`~nas.errors.NasError`) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from nas import __version__
from nas.errors import NasError


def _add_space_commands(sub: argparse._SubParsersAction) -> None:
    spaces = sub.add_parser("spaces", help="list the built-in search spaces")
    spaces.set_defaults(run=_run_spaces)

    sample = sub.add_parser(
        "sample", help="draw random candidates from a space and print their exact costs (the demo)")
    sample.add_argument("space", nargs="?", default="mobilenetv2", help="built-in name or YAML file (default: %(default)s)")
    sample.add_argument("-n", "--num", type=int, default=8, help="candidates to draw (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0, help="first seed; candidate i uses seed + i")
    sample.add_argument("--json", action="store_true", help="print one candidate JSON per line instead of a table")
    sample.set_defaults(run=_run_sample)


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
    from nas.space import load_space

    if args.num < 1:
        raise NasError(f"--num must be >= 1, but got {args.num}.")
    space = load_space(args.space)
    if args.json:
        for i in range(args.num):
            print(space.random(args.seed + i).to_json())
        return 0
    print(f"{args.num} random candidates from {space.name!r} ({space.source}), input {space.input_shape}")
    header = f"{'seed':>5} {'family':<14} {'params':>10} {'MAdds':>13} {'dense KB':>9} {'compr. KB':>9} {'rate':>6}  compression / architecture"
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
        print(f"{args.seed + i:>5} {cand.arch.family:<14} {cost.params:>10,} {cost.madds:>13,} {dense:>9.1f} "
              f"{small:>9.1f} {dense / small:>5.1f}x  {knobs}; {_describe(cand.arch.layers)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_space_commands(sub)
    __import__("nas.finetune").finetune.add_commands(sub)
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
