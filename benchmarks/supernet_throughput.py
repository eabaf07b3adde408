"""Benchmark: candidates evaluated per minute, `evaluator: supernet` against the trained proxy, in one run.

Fashion-MNIST, the mobilenetv2-tiny-like space at 28x28 of ``supernet_fidelity.py``, objectives accuracy
and MAdds (no latency table covers 28x28 here), no constraints (every trial is scored), one core (``threads: 1``), each
search through :func:`nas.search.search` as ``nas search`` runs it, with candidates drawn fresh (the
searches' seeds are drawn from the OS and listed in the JSON). Searches, interleaved:

- ``supernet``: a supernet trained here for throughput only (a warm-up epoch and one sandwich epoch on
  ``--supernet-samples`` images: its accuracy is not the point), each trial scored on the whole
  validation split (6,000 images);
- ``supernet-1000``: the same, ``supernet.eval_samples: 1000``;
- ``proxy``: ``evaluator: train`` with the issue's best-ranking cheap recipe (1 epoch on 6,000 images,
  compressed), ``pruner: none``.

The rate is the steady one: finished trials after the first, over the time from the first trial's end to
the last's. The cold start (from the call to the first trial's end: data, supernet, first trial) is
reported apart. The default proxy (3 epochs on all 54,000 training images) is 27x the proxy's images per
trial; its rate is that estimate, not measured, and says so.

    .venv/bin/python benchmarks/supernet_throughput.py [--supernet-trials 40] [--proxy-trials 4]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from supernet_fidelity import fidelity_space  # noqa: E402

from nas.data import load_dataset  # noqa: E402
from nas.search import search  # noqa: E402
from nas.supernet import SupernetTraining, train_supernet  # noqa: E402

PROXY = {"epochs": 1, "max_samples": 6000, "pruner": "none", "compressed": True, "threads": 1}
DEFAULT_PROXY_IMAGES = 3 * 54_000  # ProxyConfig's default: 3 epochs over the whole training split


def experiment(name: str, seed: int, trials: int, space: Path, checkpoint: Path) -> dict:
    data = {"name": name, "space": str(space), "dataset": "fashion-mnist", "objectives": ["accuracy", "madds"],
            "profiles": [], "budget": {"trials": trials}, "sampler": "random", "seed": seed}
    if name == "proxy":
        return data | {"proxy": PROXY}
    supernet = {"checkpoint": str(checkpoint), "threads": 1}
    return data | {"evaluator": "supernet",
                   "supernet": supernet | ({"eval_samples": 1000} if name == "supernet-1000" else {})}


def rates(folder: Path, started: float, first_end: float | None = None) -> dict:
    trials = pd.read_csv(folder / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"].copy()
    ends = pd.to_datetime(done["datetime_complete"]).sort_values()
    steady = (ends.iloc[-1] - ends.iloc[0]).total_seconds()
    return {"trials": len(done), "cold_start_s": round((ends.iloc[0].timestamp() - started), 1),
            "steady_s": round(steady, 1), "per_minute": round(60 * (len(done) - 1) / steady, 2) if steady > 0 else None,
            "median_trial_s": round(float(done["duration_s"].median()), 2),
            "accuracy_mean": round(float(done["accuracy"].mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet-trials", type=int, default=40)
    parser.add_argument("--proxy-trials", type=int, default=4)
    parser.add_argument("--supernet-samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = {name: random.SystemRandom().randrange(2**31) for name in ("supernet", "supernet-1000", "proxy")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        space = fidelity_space()
        space_file = tmp_path / "space.yaml"
        space_file.write_text(yaml.safe_dump(space.config.model_dump(mode="json")))
        checkpoint = tmp_path / "supernet.safetensors"
        t = time.perf_counter()
        config = SupernetTraining(epochs=2, warmup_epochs=1, max_samples=args.supernet_samples, random_children=1,
                                  threads=1)
        train_supernet(space, load_dataset("fashion-mnist"), config, checkpoint, progress=False)
        supernet_s = time.perf_counter() - t
        results = {}
        for name in ("supernet", "proxy", "supernet-1000"):
            trials = args.proxy_trials if name == "proxy" else args.supernet_trials
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(experiment(name, seeds[name], trials, space_file, checkpoint)))
            started = time.time()
            search(path, folder=tmp_path / name, progress=False)
            results[name] = rates(tmp_path / name, started)
            print(name, results[name], flush=True)
    proxy = results["proxy"]["per_minute"]
    default_proxy = proxy * PROXY["max_samples"] / DEFAULT_PROXY_IMAGES if proxy else None
    ratios = {k: round(v["per_minute"] / proxy, 1) for k, v in results.items() if k != "proxy" and proxy}
    vs_default = {k: round(v["per_minute"] / default_proxy, 1) for k, v in results.items()
                  if k != "proxy" and default_proxy}
    data = {"dataset": "fashion-mnist", "space": "mobilenetv2-tiny-28 (benchmarks/supernet_fidelity.py)",
            "seeds": seeds, "proxy_recipe": PROXY, "supernet_training": {"epochs": 2, "warmup_epochs": 1,
            "max_samples": args.supernet_samples, "seconds": round(supernet_s, 1), "note": "for throughput only"},
            "results": results, "ratio_to_proxy": ratios,
            "default_proxy_per_minute_estimate": round(default_proxy, 4) if default_proxy else None,
            "ratio_to_default_proxy_estimate": vs_default, "goal": ">= 100x the trained proxy's candidates per minute",
            "note": "one core per search on a 2-core machine shared with other jobs; rates from trials' end times"}
    summary = (f"Fashion-MNIST, one core: supernet {results['supernet']['per_minute']}/min (all 6,000 validation "
               f"images), {results['supernet-1000']['per_minute']}/min (1,000), proxy (1 epoch on 6,000) "
               f"{proxy}/min: {ratios.get('supernet')}x / {ratios.get('supernet-1000')}x (goal 100x); against the "
               f"default proxy's estimated rate {vs_default.get('supernet')}x / {vs_default.get('supernet-1000')}x")
    write_result("supernet_throughput", data, summary)


if __name__ == "__main__":
    main()
