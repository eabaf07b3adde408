"""``nas cost ARCH``: params, MAdds and a per-stage table of one architecture (a space's candidate, a
candidate JSON file, or the architecture a checkpoint holds)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.checkpoint import read_checkpoint
from nas.cli._args import read_candidate
from nas.compress.container import MAGIC
from nas.cost import Cost, count, fvcore_count, stage_costs
from nas.errors import NasError
from nas.models import build_model
from nas.space import load_space
from nas.spec import ArchSpec, Candidate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cost", help="params, MAdds and a per-stage table of an architecture",
        description="Cost one architecture: a built-in name (e.g. mobilenetv2-1.0-224), a space YAML file "
                    "(its candidate for --seed), a candidate JSON file or a checkpoint (.safetensors).")
    p.add_argument("arch", help="built-in space name, space YAML file, candidate JSON file, or checkpoint")
    p.add_argument("--seed", type=int, default=0, help="which candidate of a searchable space (default: 0)")
    p.add_argument("--vs", choices=["fvcore"], help="cross-check the counts with fvcore on the built model")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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


#: What ARCH may be, for the message about a file that is none of them.
EXPECTED = ("a built-in space name (`nas spaces`), a space YAML file, a candidate JSON file or a checkpoint "
            "(.safetensors)")


def _load_candidate(arch: str, seed: int) -> tuple[Candidate, str]:
    """The candidate ARCH names and its label: a candidate JSON file, a checkpoint's candidate, or a space's
    candidate for ``seed``. A compressed container is refused with what the command takes instead."""
    if arch.endswith(".json"):
        return read_candidate(arch), arch
    path = Path(arch)
    head = path.open("rb").read(4096) if path.is_file() else b""
    if path.suffix == ".safetensors" or head[8:10] == b'{"':  # safetensors: header length, then its JSON
        _, meta = read_checkpoint(path)
        return Candidate.from_dict(meta.get("candidate")), f"{arch} (checkpoint)"  # type: ignore[arg-type]
    if head.startswith(MAGIC):
        raise NasError(f"{arch} is a compressed container (.nasz), not an architecture: nas cost takes "
                       f"{EXPECTED}; cost the checkpoint it was made from.")
    if b"\0" in head:
        raise NasError(f"{arch} is a binary file, not an architecture: nas cost takes {EXPECTED}.")
    space = load_space(arch)
    label = space.name if space.is_fixed else f"{space.name}, seed {seed}"
    return space.random(seed), label


def _check_fvcore(arch: ArchSpec, cost: Cost) -> int:
    model = build_model(arch).eval()
    fv = fvcore_count(model, arch.input_shape)
    fv_params = sum(p.numel() for p in model.parameters())
    ok = fv.madds == cost.madds and fv.total == cost.fvcore_default and fv_params == cost.params
    print(f"fvcore: conv + linear {fv.madds:,} MAdds, default total {fv.total:,}; "
          f"torch: {fv_params:,} params -> {'identical' if ok else 'MISMATCH'}")
    return 0 if ok else 1
