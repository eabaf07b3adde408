"""How fast candidates are scored: analytic op-list costing vs fvcore on built models.

Scores the same random candidates twice in one run:

- analytic: ``nas.count(arch)`` (MAdds, params) + ``nas.size_bits(arch, compression)``,
  starting each timed pass with empty per-layer memo caches (the process's one-time
  Huffman entropy tables are filled by an untimed-for-the-ratio first pass, reported
  as ``analytic_setup_seconds``);
- baseline: ``nas.build_model(arch)`` then fvcore's ``FlopCountAnalysis(...).total()``
  (timed with and without the model build).

and checks that both give identical MAdds for every candidate. Writes
``results/bench/scoring.json`` and a row of ``results/bench/README.md``.

    .venv/bin/python benchmarks/scoring.py --n 1000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

import nas
from _common import write_result
from nas.cost import fvcore_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="candidates to score")
    parser.add_argument("--space", default="mobilenetv2")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the (fast) analytic pass")
    args = parser.parse_args()

    torch.set_num_threads(1)
    fvcore_count(torch.nn.Identity(), (1,))  # import fvcore before timing

    space = nas.load_space(args.space)
    cands = [space.random(seed) for seed in range(args.n)]

    # One-time set-up of a process: the Huffman entropy tables (k-means on the Gaussian model,
    # one per sparsity / codebook size / layer-size bucket). Timed and reported on its own.
    start = time.perf_counter()
    for c in cands:
        nas.size_bits(c.arch, c.compression)
    setup = time.perf_counter() - start

    analytic_times = []
    for _ in range(args.repeats):
        # Every pass starts cold: the per-layer memo only helps within one pass, as in one search.
        nas.cost._layer_facts.cache_clear()
        start = time.perf_counter()
        scores = [(nas.count(c.arch), nas.size_bits(c.arch, c.compression)) for c in cands]
        analytic_times.append(time.perf_counter() - start)
    analytic = statistics.median(analytic_times)

    build_time = fvcore_time = 0.0
    mismatches = []
    for cand, (cost, _) in zip(cands, tqdm(scores, desc="fvcore", unit="cand")):
        start = time.perf_counter()
        model = nas.build_model(cand.arch).eval()
        mid = time.perf_counter()
        fv = fvcore_count(model, cand.arch.input_shape)
        end = time.perf_counter()
        build_time += mid - start
        fvcore_time += end - mid
        if fv.total != cost.fvcore_default or fv.madds != cost.madds:
            mismatches.append(cand.to_dict())

    rate = {
        "analytic": args.n / analytic,
        "fvcore": args.n / fvcore_time,
        "build_plus_fvcore": args.n / (build_time + fvcore_time),
    }
    ratio = rate["analytic"] / rate["fvcore"]
    data = {
        "space": args.space,
        "candidates": args.n,
        "candidates_per_second": rate,
        "analytic_seconds_per_pass": analytic_times,
        "analytic_setup_seconds": setup,
        "analytic_setup_note": "first pass of the process: fills the Huffman entropy tables (lru_cache), paid once",
        "fvcore_seconds": fvcore_time,
        "build_seconds": build_time,
        "speedup_vs_fvcore": ratio,
        "speedup_vs_build_plus_fvcore": rate["analytic"] / rate["build_plus_fvcore"],
        "madds_identical": not mismatches,
        "mismatches": mismatches[:5],
        "goal": ">= 1000x more candidates/s than fvcore, identical MAdds",
    }
    path = write_result(
        "scoring", data,
        f"{args.space}, {args.n} candidates: analytic {rate['analytic']:,.0f}/s vs fvcore {rate['fvcore']:,.1f}/s "
        f"= **{ratio:,.0f}x** ({data['speedup_vs_build_plus_fvcore']:,.0f}x incl. model build; one-time "
        f"set-up {setup:.1f} s); "
        f"MAdds identical: {'yes' if not mismatches else f'NO ({len(mismatches)} differ)'}")
    print(f"analytic {rate['analytic']:,.0f} cand/s, fvcore {rate['fvcore']:,.1f} cand/s "
          f"({rate['build_plus_fvcore']:,.1f} with build): {ratio:,.0f}x; mismatches {len(mismatches)} -> {path}")


if __name__ == "__main__":
    main()
