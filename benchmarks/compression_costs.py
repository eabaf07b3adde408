"""Costs of the network as it runs after its compression: the cost model against fvcore, and how fast
fresh candidates are scored.

- ``fvcore`` (section of ``results/bench/compression_costs.json``): random candidates of every
  searchable space, each compressed by the real stages (:func:`nas.compress.apply_compression`:
  structured pruning, low rank, magnitude pruning, binary/ternary; not the k-means codebooks, which
  change values only and take seconds per layer), fvcore run on the
  compressed model, compared with ``nas.count(nas.compressed(arch, compression))``: MAdds, fvcore's
  default total and parameters, with no tolerance.
- ``scoring``: the search's cheap scoring (``nas.search.scoring.cheap_costs``: MAdds, params,
  size, latency on a measured table) of candidates never scored before in the process, in a fresh
  process. The first ``--cold`` candidates are reported apart (imports done, memo caches empty,
  the per-layer memos and the Huffman tables filling up); the rest is the rate a search sees, over
  all of them and per 1,000 (it rises as the per-layer memos fill), and ``second_pass_per_s``
  scores the same candidates again: the floor once every layer has been priced.
  The baseline, in the same run, builds each candidate's compressed network and runs fvcore on it.

    .venv/bin/python benchmarks/compression_costs.py --fvcore 200 --score 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import nas
from _common import merge_section
from nas.compress import apply_compression
from nas.cost import fvcore_count
from nas.space import builtin_spaces

SEARCHABLE = [name for name in builtin_spaces() if not nas.load_space(name).is_fixed]


def fvcore_section(n: int, seed0: int) -> dict:
    per_space = max(1, n // len(SEARCHABLE))
    rows, mismatches = [], []
    seeds = list(range(seed0, seed0 + per_space))
    with tqdm(total=per_space * len(SEARCHABLE), desc="cost model vs fvcore", unit="model") as bar:
        for name in SEARCHABLE:
            space = nas.load_space(name)
            for seed in seeds:
                cand = space.random(seed)
                # k-means codebooks change values only (and cost seconds per layer): left out here.
                stages = dataclasses.replace(cand.compression, codebook_bits=None)
                model = apply_compression(nas.build_model(cand.arch), stages).eval()
                fv = fvcore_count(model, cand.arch.input_shape)
                cost = nas.count(nas.compressed(cand.arch, cand.compression))
                params = sum(p.numel() for p in model.parameters())
                same = (cost.madds, cost.fvcore_default, cost.params) == (fv.madds, fv.total, params)
                c = cand.compression
                rows.append({"space": name, "seed": seed, "channel_ratio": c.channel_ratio,
                             "lowrank_ratio": c.lowrank_ratio, "madds": cost.madds, "fvcore_madds": fv.madds,
                             "dense_madds": nas.count(cand.arch).madds, "match": same})
                if not same:
                    mismatches.append(rows[-1])
                bar.update()
    structural = [r for r in rows if r["channel_ratio"] or r["lowrank_ratio"]]
    return {"spaces": SEARCHABLE, "seeds": seeds, "models": len(rows), "mismatches": len(mismatches),
            "structurally_compressed": len(structural),
            "median_madds_kept": statistics.median(r["madds"] / r["dense_madds"] for r in structural),
            "mismatch_rows": mismatches[:10]}


def scoring_section(n: int, cold: int, baseline: int, seed0: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nas.experiment import load_experiment
    from nas.search.scoring import cheap_costs
    from nas.search.setup import prepare
    from _runs import write

    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="nas-scoring-"))
    experiment = load_experiment(write(folder, {
        "name": "scoring", "space": "mobilenetv2-tiny", "dataset": "digits",
        "objectives": ["accuracy", "latency_ms", "size_kb"], "profiles": ["reference-cpu"]}))
    setup = prepare(experiment, data=False)
    # Seeds far from the coverage check's (0..) so that no candidate was scored before.
    cands = [setup.space.random(seed) for seed in range(seed0, seed0 + n)]
    start = time.perf_counter()
    for cand in cands[:cold]:
        cheap_costs(setup, cand)
    cold_s = time.perf_counter() - start
    blocks = []  # the rate a search sees as its per-layer memos fill: per 1,000 fresh candidates, wall and CPU time
    for first in range(cold, n, 1000):
        block = cands[first:first + 1000]
        wall, cpu = time.perf_counter(), time.process_time()
        for cand in block:
            cheap_costs(setup, cand)
        blocks.append({"candidates": [first, first + len(block) - 1],
                       "per_s": round(len(block) / (time.perf_counter() - wall)),
                       "per_s_cpu": round(len(block) / (time.process_time() - cpu))})
    steady_s = sum((b["candidates"][1] - b["candidates"][0] + 1) / b["per_s"] for b in blocks)
    start = time.perf_counter()
    for cand in cands[cold:]:  # the same candidates again: the floor once every layer has been seen
        cheap_costs(setup, cand)
    again_s = time.perf_counter() - start
    build = fv = 0.0
    for cand in tqdm(cands[:baseline], desc="baseline: build + fvcore", unit="cand"):
        start = time.perf_counter()
        model = nas.build_model(nas.compressed(cand.arch, cand.compression)).eval()
        mid = time.perf_counter()
        fvcore_count(model, cand.arch.input_shape)
        build, fv = build + mid - start, fv + time.perf_counter() - mid
    steady = (n - cold) / steady_s
    baseline_rate = baseline / (build + fv)
    return {"space": "mobilenetv2-tiny on digits (8x8)", "profile": "reference-cpu",
            "seeds": [seed0, seed0 + n - 1], "candidates": n, "cold_candidates": cold,
            "cold_per_s": cold / cold_s, "steady_per_s": steady, "steady_ms": 1e3 / steady, "blocks": blocks,
            "second_pass_per_s": (n - cold) / again_s,
            "load_average": os.getloadavg(),  # other work on the machine slows the wall-clock rates (CPU rates less)
            "baseline_candidates": baseline, "baseline_per_s": baseline_rate,
            "speedup_vs_build_plus_fvcore": steady / baseline_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fvcore", type=int, default=200, help="compressed models checked against fvcore (0: skip)")
    parser.add_argument("--score", type=int, default=10000, help="fresh candidates scored (0: skip)")
    parser.add_argument("--cold", type=int, default=100, help="first candidates reported as the cold start")
    parser.add_argument("--baseline", type=int, default=50, help="candidates built and run through fvcore")
    args = parser.parse_args()
    if args.score and args.baseline < 1:
        parser.error("--baseline must be at least 1: the scoring rate is reported as a ratio to it")
    torch.set_num_threads(1)
    fvcore_count(torch.nn.Identity(), (1,))  # import fvcore before anything is timed
    if args.score:
        result = scoring_section(args.score, args.cold, args.baseline, seed0=1_000_000)
        merge_section("scoring", result)
        print(f"scoring: cold {result['cold_per_s']:.0f}/s, steady {result['steady_per_s']:.0f}/s "
              f"({result['steady_ms']:.2f} ms), last 1,000 {result['blocks'][-1]['per_s']}/s, second pass "
              f"{result['second_pass_per_s']:.0f}/s, build+fvcore {result['baseline_per_s']:.1f}/s: "
              f"{result['speedup_vs_build_plus_fvcore']:.0f}x")
    if args.fvcore:
        result = fvcore_section(args.fvcore, seed0=500)
        merge_section("fvcore", result)
        print(f"fvcore: {result['models']} compressed models, {result['mismatches']} mismatches "
              f"({result['structurally_compressed']} pruned or factorized, median MAdds kept "
              f"{result['median_madds_kept']:.2f})")


if __name__ == "__main__":
    main()
