"""``nas sample SPACE -n N``: random candidates and their exact costs (the demo)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nas.compressed import running
from nas.cost import count, size_bits
from nas.errors import HardwareError, NasError
from nas.hardware import get_profile
from nas.space import load_space
from nas.spec import Conv, InvertedResidual, Linear


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sample", help="draw random candidates from a space and print their exact costs (the demo)")
    p.add_argument("space", nargs="?", default="mobilenetv2", help="built-in name or YAML file (default: %(default)s)")
    p.add_argument("-n", "--num", type=int, default=8, help="candidates to draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="first seed; candidate i uses seed + i")
    p.add_argument("--json", action="store_true", help="print one candidate JSON per line instead of a table")
    p.add_argument("--profile", default="reference-cpu",
                   help="hardware profile for the latency column (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
        cost = count(running(cand))
        c = cand.compression
        small = size_bits(cand.arch, c) / 8 / 1000
        dense = count(cand.arch).params * 4 / 1000  # the architecture uncompressed, at 32 bits
        knobs = (f"sparsity {c.sparsity_conv:.2f}/{c.sparsity_linear:.2f}, "
                 f"{c.quantization if c.quantization != 'none' else (f'{c.codebook_bits}-bit codebook' if c.codebook_bits else 'fp32')}, "
                 f"low-rank {c.lowrank_ratio or 'off'}, channels pruned {c.channel_ratio:g}")
        try:
            latency = f"{profile.latency_ms(running(cand)):7.2f}"
        except HardwareError:  # a table that does not cover this space: say so in the column, not abort
            latency = f"{'n/a':>7}"
        print(f"{args.seed + i:>5} {cand.arch.family:<14} {cost.params:>10,} {cost.madds:>13,} {latency} "
              f"{dense:>9.1f} {small:>9.1f} {dense / small:>5.1f}x  {knobs}; {_describe(cand.arch.layers)}")
    return 0


def _describe(layers: Sequence[object]) -> str:
    """A short architecture label: block count and kernels for MobileNets, widths otherwise."""
    blocks = [layer for layer in layers if isinstance(layer, InvertedResidual)]
    if blocks:
        return f"{len(blocks)} blocks, k={''.join(str(b.kernel) for b in blocks)}"
    return "widths " + "-".join(str(layer.out) for layer in layers if isinstance(layer, (Conv, Linear)))
