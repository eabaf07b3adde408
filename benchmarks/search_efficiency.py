"""Search efficiency: NSGA-II (the default) vs multi-objective TPE vs random sampling.

Same space (mobilenetv2-tiny), dataset (digits), objectives (accuracy, latency on
reference-cpu, compressed size), constraints and trial budget for every sampler,
3 seeds each, all in one run. The hypervolume after every trial uses one fixed
reference point (the experiment's: accuracy 0 and the constraint limits), so the
curves are comparable. Goal: the default sampler reaches random search's final
hypervolume (mean over seeds) in at most half the trials.

``--evaluator supernet`` scores candidates with the shipped digits supernet
(results/supernet/, seconds a trial) instead of 1-epoch proxy training, so that the
samplers are compared at the budgets that evaluator affords (hundreds of trials), with
the population sized to the budget (no ``population`` in the file); it writes
results/bench/search_supernet.json and search_supernet.png.

    .venv/bin/python benchmarks/search_efficiency.py [--trials 40] [--seeds 3]
    .venv/bin/python benchmarks/search_efficiency.py --evaluator supernet --trials 200 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result  # noqa: E402

from nas.search import search  # noqa: E402
from nas.search.study import budget_population  # noqa: E402

SAMPLERS = ("nsga2", "tpe", "random")
LABELS = {"nsga2": "NSGA-II (default)", "tpe": "multi-objective TPE", "random": "random"}


SUPERNET = Path(__file__).resolve().parents[1] / "results" / "supernet" / "mobilenetv2-tiny-digits.safetensors"


def experiment(sampler: str, seed: int, trials: int, evaluator: str = "train") -> dict:
    data = {"name": f"{sampler}-{seed}", "space": "mobilenetv2-tiny", "dataset": "digits",
            "objectives": ["accuracy", "latency_ms", "size_kb"], "profiles": ["reference-cpu"],
            "constraints": {"latency_ms": {"max": 2.0}, "size_kb": {"max": 60}},
            "budget": {"trials": trials}, "sampler": sampler, "seed": seed}
    if evaluator == "supernet":
        return data | {"evaluator": "supernet", "supernet": {"checkpoint": str(SUPERNET)}}
    return data | {"population": 10, "proxy": {"epochs": 1, "pruner": "none"}}


def first_reaching(curve: np.ndarray, target: float) -> int | None:
    hit = np.nonzero(curve >= target - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluator", choices=("train", "supernet"), default="train")
    args = ap.parse_args()
    name = "search" if args.evaluator == "train" else "search_supernet"
    start = time.perf_counter()
    curves: dict[str, list[np.ndarray]] = {s: [] for s in SAMPLERS}
    seconds: dict[str, float] = {s: 0.0 for s in SAMPLERS}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):  # interleaved: machine drift hits every sampler alike
            for sampler in SAMPLERS:
                path = Path(tmp) / f"{sampler}-{seed}.yaml"
                path.write_text(yaml.safe_dump(experiment(sampler, seed, args.trials, args.evaluator)))
                t = time.perf_counter()
                result = search(path, folder=Path(tmp) / path.stem, progress=False)
                seconds[sampler] += time.perf_counter() - t
                hv = pd.read_csv(result.run.folder.file("hypervolume.csv"))["hypervolume"].to_numpy()
                curves[sampler].append(hv[: args.trials])
                reference = reference or {o.name: o.reference for o in result.run.folder.info.objectives}
                print(f"{sampler:>6} seed {seed}: final HV {hv[-1]:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    mean = {s: np.mean(np.stack(c), axis=0) for s, c in curves.items()}
    target = float(mean["random"][-1])
    reach = {s: first_reaching(mean[s], target) for s in SAMPLERS}
    goal_met = reach["nsga2"] is not None and reach["nsga2"] <= args.trials / 2
    _plot(mean, curves, target, reference, RESULTS / f"{name}.png")
    data = {
        "space": "mobilenetv2-tiny", "dataset": "digits", "evaluator": args.evaluator,
        "population": "10" if args.evaluator == "train" else f"budget-sized: {budget_population(args.trials)}", "objectives": ["accuracy", "latency_ms", "size_kb"],
        "reference_point": reference, "trials": args.trials, "seeds": args.seeds,
        "final_hypervolume_mean": {s: float(m[-1]) for s, m in mean.items()},
        "final_hypervolume_per_seed": {s: [float(c[-1]) for c in cs] for s, cs in curves.items()},
        "trials_to_reach_random_final": reach, "goal": "nsga2 reaches random's final HV in <= half the trials",
        "goal_met": goal_met, "seconds_per_sampler": {s: round(v, 1) for s, v in seconds.items()},
        "curves_mean": {s: [round(float(v), 5) for v in m] for s, m in mean.items()},
        "plot": f"{name}.png", "minutes": round((time.perf_counter() - start) / 60, 1),
    }
    summary = (f"mobilenetv2-tiny on digits ({args.evaluator} evaluator), accuracy/latency/size, {args.trials} trials x {args.seeds} seeds: final HV "
               + ", ".join(f"{s} {data['final_hypervolume_mean'][s]:.4f}" for s in SAMPLERS)
               + f"; NSGA-II reaches random's final HV at trial {reach['nsga2'] or 'never'} "
               + f"(goal <= {args.trials // 2}: {'met' if goal_met else 'not met'}); TPE at {reach['tpe'] or 'never'}"
               + f"; [plot]({name}.png); {data['minutes']} min")
    write_result(name, data, summary)
    print(json.dumps({k: data[k] for k in ("final_hypervolume_mean", "trials_to_reach_random_final", "goal_met")}))


def _plot(mean: dict, curves: dict, target: float, reference: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = {"nsga2": "tab:blue", "tpe": "tab:orange", "random": "tab:gray"}
    for s, m in mean.items():
        x = np.arange(1, len(m) + 1)
        stack = np.stack(curves[s])
        ax.fill_between(x, stack.min(axis=0), stack.max(axis=0), color=colors[s], alpha=0.15, linewidth=0)
        ax.plot(x, m, color=colors[s], label=f"{LABELS[s]} (mean of {len(curves[s])})", linewidth=2)
    ax.axhline(target, color="black", linestyle=":", linewidth=1, label="random's final (mean)")
    ref = ", ".join(f"{k} {v:g}" for k, v in (reference or {}).items())
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume (normalised, 0-1)")
    ax.set_title(f"Search efficiency; reference point: {ref}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
