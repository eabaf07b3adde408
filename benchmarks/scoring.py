"""How fast a search scores candidates it has never seen: the cheap costs of fresh candidates, A/B against a
baseline commit, and against building each network and running fvcore.

A search scores each candidate once, so the figure that matters is the rate on *fresh* candidates:
each a new random draw, in a fresh process, through the search's own path
(``nas.search.scoring.cheap_costs``: MAdds, params, ``size_kb``, latency on the ``reference-cpu`` table,
of the network as it runs after its compression). Each measurement is one new process
(``--worker``) that prepares the experiment, scores ``--cold`` candidates (reported apart as the cold start:
imports done, every memo empty) and then ``--n`` more, timed in CPU time (``time.process_time``: the
machine is shared, and CPU time is what other work inflates least). The candidates are drawn before
the clock starts, then collected (``gc.collect()``) so that the cyclic collections scoring pays for
are those its own objects cause; their share of the time is reported (``gc_share``).

The baseline is the same measurement on the code of ``--baseline-ref`` (exported with ``git archive``, put
first on ``PYTHONPATH``), interleaved with the current code round by round on the same seeds; the
result is the median of ``--rounds`` rounds and the ratio of the two. The last section builds
``--fvcore`` of the candidates' compressed networks and runs fvcore on them, the slow way a cost is known.

    nice -n 10 .venv/bin/python benchmarks/scoring.py --n 2000 --rounds 3 --baseline-ref d367f99
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE, PROFILE = "mobilenetv2-tiny", "reference-cpu"


def _setup(folder: Path):  # type: ignore[no-untyped-def]
    """The scoring benchmark's experiment: mobilenetv2-tiny on digits, latency and size objectives."""
    import yaml

    from nas.experiment import load_experiment
    from nas.search.setup import prepare

    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "scoring", "space": SPACE, "dataset": "digits",
                                    "objectives": ["accuracy", "latency_ms", "size_kb"], "profiles": [PROFILE]}))
    return prepare(load_experiment(path), data=False)


def worker(n: int, cold: int, seed0: int) -> dict:
    """One measurement in this (fresh) process: the cold start, then ``n`` fresh candidates."""
    from nas.search.scoring import cheap_costs

    with tempfile.TemporaryDirectory(prefix="nas-scoring-") as folder:
        setup = _setup(Path(folder))
        cands = [setup.space.random(seed) for seed in range(seed0, seed0 + cold + n)]
        # The candidates drawn above would otherwise count towards the next full collection, which
        # scoring would then pay for; collections that scoring's own objects cause are timed.
        gc.collect()
        gc_s = [0.0, 0.0]  # time in collections: [total, at the start of the current one]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                gc_s[1] = time.process_time()
            else:
                gc_s[0] += time.process_time() - gc_s[1]

        gc.callbacks.append(on_gc)
        start = time.process_time()
        for cand in cands[:cold]:
            cheap_costs(setup, cand)
        cold_s = time.process_time() - start
        gc_s[0] = 0.0
        cpu, wall = time.process_time(), time.perf_counter()
        costs = [cheap_costs(setup, cand) for cand in cands[cold:]]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        gc.callbacks.remove(on_gc)
    return {"cold_per_s": cold / cold_s, "fresh_per_s": n / cpu, "fresh_per_s_wall": n / wall,
            "gc_share": gc_s[0] / cpu,
            "checksum": hashlib.sha256(repr([sorted(c.items()) for c in costs]).encode()).hexdigest()}


def _run_worker(tree: Path, n: int, cold: int, seed0: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(n), "--cold", str(cold),
                          "--seed0", str(seed0)], env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _export(ref: str, into: Path) -> str:
    """The package of commit ``ref`` (and the spaces and tables it links to) under ``into``; returns the
    full commit id."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    blob = subprocess.run(["git", "archive", commit, "nas", "hardware", "search_spaces"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return commit


def fvcore_rate(count: int, seed0: int) -> float:
    """Candidates per second (CPU time) of building each compressed network and running fvcore on it."""
    import torch

    import nas
    from nas.cost import fvcore_count

    torch.set_num_threads(1)
    fvcore_count(torch.nn.Identity(), (1,))  # import fvcore before timing
    space = nas.load_space(SPACE)
    cands = [space.random(seed) for seed in range(seed0, seed0 + count)]
    start = time.process_time()
    for cand in cands:
        fvcore_count(nas.build_model(nas.compressed(cand.arch, cand.compression)).eval(), cand.arch.input_shape)
    return count / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="fresh candidates scored per measurement")
    parser.add_argument("--cold", type=int, default=100, help="first candidates of a process, reported apart")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved baseline/current measurements")
    parser.add_argument("--baseline-ref", default="d367f99", help="git commit whose code is the baseline")
    parser.add_argument("--fvcore", type=int, default=30, help="candidates built and run through fvcore")
    parser.add_argument("--seed0", type=int, default=1_000_000, help="first seed (far from the coverage check's)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.n, args.cold, args.seed0)))
        return
    if args.n < 1 or args.cold < 1 or args.rounds < 1 or args.fvcore < 1:
        parser.error("--n, --cold, --rounds and --fvcore must be at least 1")

    from _common import write_result

    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    seeds = []
    with tempfile.TemporaryDirectory(prefix="nas-baseline-") as tmp:
        commit = _export(args.baseline_ref, Path(tmp))
        trees = {"baseline": Path(tmp), "current": ROOT}
        for r in range(args.rounds):  # interleaved, the same seeds for both, so that load on the machine hits both
            seed0 = args.seed0 + r * (args.cold + args.n)
            seeds.append([seed0, seed0 + args.cold + args.n - 1])
            for name in ("baseline", "current") if r % 2 == 0 else ("current", "baseline"):
                runs[name].append(_run_worker(trees[name], args.n, args.cold, seed0))
                print(f"round {r} {name}: {runs[name][-1]['fresh_per_s']:.0f}/s fresh (CPU)", flush=True)
    same = all(a["checksum"] == b["checksum"] for a, b in zip(runs["baseline"], runs["current"]))
    med = {name: {k: statistics.median(run[k] for run in rs)
                  for k in ("cold_per_s", "fresh_per_s", "fresh_per_s_wall", "gc_share")}
           for name, rs in runs.items()}
    fv = fvcore_rate(args.fvcore, args.seed0)
    fresh = med["current"]["fresh_per_s"]
    data = {
        "space": f"{SPACE} on digits (8x8)", "profile": PROFILE,
        "costs": "nas.search.scoring.cheap_costs: madds, params, size_kb, latency_ms (all cheap costs)",
        "clock": "CPU time (time.process_time) of one process, one thread; each measurement a fresh process",
        "candidates": args.n, "cold_candidates": args.cold, "rounds": args.rounds, "seeds": seeds,
        "baseline_commit": commit,
        "fresh_per_s": fresh, "fresh_ms": 1e3 / fresh, "cold_per_s": med["current"]["cold_per_s"],
        "gc_share": med["current"]["gc_share"], "baseline_gc_share": med["baseline"]["gc_share"],
        "baseline_fresh_per_s": med["baseline"]["fresh_per_s"], "baseline_cold_per_s": med["baseline"]["cold_per_s"],
        "speedup_vs_baseline": fresh / med["baseline"]["fresh_per_s"],
        "same_costs_as_baseline": same,
        "runs": runs,
        "fvcore_candidates": args.fvcore, "build_plus_fvcore_per_s": fv, "speedup_vs_build_plus_fvcore": fresh / fv,
        "goal": ">= 2,000 fresh candidates/s on one core, >= 1,000x building + fvcore",
    }
    summary = (f"{SPACE}, {args.n} fresh candidates per process (median of {args.rounds}, CPU time): "
               f"**{fresh:,.0f}/s** ({1e3 / fresh:.2f} ms) vs {med['baseline']['fresh_per_s']:,.0f}/s at "
               f"{commit[:7]} = {data['speedup_vs_baseline']:.2f}x; cold start (first {args.cold}) "
               f"{med['current']['cold_per_s']:,.0f}/s; {data['speedup_vs_build_plus_fvcore']:,.0f}x build + fvcore "
               f"({fv:.1f}/s); same costs as the baseline: {'yes' if same else 'NO'}")
    path = write_result("scoring", data, summary)
    print(summary, "->", path)


if __name__ == "__main__":
    main()
