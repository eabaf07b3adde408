"""Structured pruning: nas (coupled channel groups, nas.compress.prune_channels) vs Torch-Pruning's MetaPruner.

The same networks, the same ratio, the same importance (L1 magnitude, local pruning,
the classifier's outputs left alone): MAdds left (``nas.count`` of the pruned spec,
checked against fvcore on the pruned model; fvcore on Torch-Pruning's model) and
measured CPU latency (torch, batch 1, eval, one thread; dense, nas-pruned and
TP-pruned timed interleaved in one loop, ``nas.hardware.measure``'s protocol; median
and minimum over rounds), both as ratios to the dense network. Networks:
``mobilenetv2-1.0-224`` (the published MobileNetV2 at 224x224) and random
``mobilenetv2`` candidates (32x32). Goal: at every ratio nas removes at least as
many MAdds as Torch-Pruning. Torch-Pruning is a benchmark-only dependency
(``pip install torch-pruning==1.6.*``); nothing under ``nas/`` imports it.

Writes section ``structured`` of ``results/bench/compression_costs.json``:

    .venv/bin/python benchmarks/structured_pruning.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch
from _common import merge_section

import nas
from nas.compress.structured import prune_channels, pruned_arch
from nas.cost import fvcore_count
from nas.hardware.measure import measure

RATIOS = (0.3, 0.5, 0.7)


def tp_prune(model: torch.nn.Module, shape: tuple[int, ...], ratio: float) -> torch.nn.Module:
    import torch_pruning as tp  # the baseline only

    model = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *shape), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, global_pruning=False, ignored_layers=[model.layers[-1]])
    pruner.step()
    return model


def one_net(label: str, arch: nas.ArchSpec, rounds: int, target_ms: float) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = nas.build_model(arch).eval()
    shape = arch.input_shape
    dense = fvcore_count(model, shape).madds
    assert dense == nas.count(arch).madds
    rows = []
    for ratio in RATIOS:
        small = prune_channels(model, ratio, criterion="l1").eval()
        madds = nas.count(pruned_arch(arch, ratio)).madds
        if madds != fvcore_count(small, shape).madds:
            raise SystemExit(f"{label} at {ratio}: nas.count disagrees with fvcore on the pruned model")
        baseline = tp_prune(model, shape, ratio).eval()
        tp_madds = fvcore_count(baseline, shape).madds
        x = torch.randn(1, *shape)
        times = measure([(model, x), (small, x), (baseline, x)], rounds=rounds, target_ms=target_ms)
        med = [statistics.median(t) for t in times]
        low = [min(t) for t in times]
        row = {"net": label, "ratio": ratio, "dense_madds": dense, "nas_madds": madds, "tp_madds": tp_madds,
               "nas_madds_left": round(madds / dense, 4), "tp_madds_left": round(tp_madds / dense, 4),
               "nas_cuts_at_least_tp": madds <= tp_madds,
               "nas_params": sum(p.numel() for p in small.parameters()),
               "tp_params": sum(p.numel() for p in baseline.parameters()),
               "dense_ms_median": round(med[0], 4), "nas_ms_median": round(med[1], 4), "tp_ms_median": round(med[2], 4),
               "nas_latency_left_median": round(med[1] / med[0], 4), "tp_latency_left_median": round(med[2] / med[0], 4),
               "nas_latency_left_min": round(low[1] / low[0], 4), "tp_latency_left_min": round(low[2] / low[0], 4)}
        print(f"{label:>22} r={ratio}: MAdds left nas {row['nas_madds_left']:.3f} TP {row['tp_madds_left']:.3f}; "
              f"latency left (median) nas {row['nas_latency_left_median']:.3f} TP {row['tp_latency_left_median']:.3f}",
              flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                        help="seeds of the random mobilenetv2 candidates (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = one_net("mobilenetv2-1.0-224", nas.load_space("mobilenetv2-1.0-224").random(0).arch,
                   max(3, args.rounds // 3), target_ms=50)
    space = nas.load_space("mobilenetv2")
    for seed in args.seeds:
        rows += one_net(f"mobilenetv2 seed {seed}", space.random(seed).arch, args.rounds, target_ms=20)
    by_ratio = {str(r): {k: round(statistics.median(row[k] for row in rows if row["ratio"] == r), 4)
                         for k in ("nas_madds_left", "tp_madds_left", "nas_latency_left_median",
                                   "tp_latency_left_median")} for r in RATIOS}
    goal = all(row["nas_cuts_at_least_tp"] for row in rows)
    merge_section("structured", {
        "seeds": args.seeds, "ratios": list(RATIOS), "rounds": args.rounds,
        "baseline": "Torch-Pruning 1.6 MetaPruner, MagnitudeImportance(p=1), global_pruning=False, "
                    "classifier ignored",
        "nas": "nas.compress.prune_channels(criterion='l1'); MAdds from nas.count(pruned_arch(...)) == fvcore",
        "latency": "torch CPU, 1 thread, batch 1, eval, inference_mode; dense / nas / TP interleaved in shuffled "
                   "order each round (nas.hardware.measure); ratios to dense of the median (and minimum)",
        "goal": "at every ratio nas removes at least as many MAdds as Torch-Pruning",
        "goal_met": goal, "median_by_ratio": by_ratio, "rows": rows})
    print(f"goal (nas MAdds <= TP MAdds on every net and ratio): {'met' if goal else 'NOT met'}; medians {by_ratio}")


if __name__ == "__main__":
    main()
