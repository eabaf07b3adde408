"""How close ``nas.size_bits`` comes to the real container file (issue #16): section "size" of
results/bench/compression_costs.json.

Random candidates of the searchable spaces: built, conv/linear weights redrawn from a Gaussian of
their init's spread (what the estimate models; ``--uniform`` keeps torch's uniform init instead),
compressed by ``nas.compress.apply_compression`` and encoded; error = (estimate - file) / file.
Winners: the demo run's winners (results/demo/winners/*/candidate.json), trained on digits for a
few epochs, then compressed and encoded (real trained weight histograms and masks).

    .venv/bin/python benchmarks/size_estimate.py              # 200 candidates + the demo winners
    .venv/bin/python benchmarks/size_estimate.py --quick      # 30 candidates, no winners
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import merge_section  # noqa: E402

import nas  # noqa: E402
from nas.compress import apply_compression, encode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Spaces whose candidates a 2-core machine compresses in seconds (the 224x224 ImageNet spaces take minutes each).
SPACES = ("lenet", "mobilenetv2-tiny", "mobilenetv2")


def gaussian(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, float(m.weight.std()))
    return model


def measure(model: torch.nn.Module, cand: nas.Candidate) -> dict[str, Any]:
    compressed = apply_compression(model, cand.compression)
    data, _ = encode(compressed, huffman_coding=cand.compression.huffman)
    estimate = nas.size_bits(cand.arch, cand.compression) / 8
    return {"file_bytes": len(data), "estimate_bytes": round(estimate, 1),
            "error_pct": round(100 * (estimate - len(data)) / len(data), 3), "compression": cand.compression.to_dict()}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r["error_pct"] for r in rows]
    if not errors:
        return {"n": 0}
    return {"n": len(errors), "mean_abs_error_pct": round(statistics.fmean(map(abs, errors)), 3),
            "max_abs_error_pct": round(max(map(abs, errors)), 3), "signed_mean_error_pct": round(statistics.fmean(errors), 3),
            "within_3pct": sum(abs(e) <= 3 for e in errors)}


def random_candidates(n: int, uniform: bool) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        name = SPACES[i % len(SPACES)]
        seed = i // len(SPACES)
        cand = nas.load_space(name).random(seed)
        torch.manual_seed(seed)
        model = nas.build_model(cand.arch)
        rows.append({"space": name, "seed": seed, **measure(model if uniform else gaussian(model), cand)})
        print(f"{name:18s} {seed:3d} {rows[-1]['error_pct']:+7.2f}%  {rows[-1]['file_bytes']:>9,} B", flush=True)
    return rows


def winners(epochs: int) -> list[dict[str, Any]]:
    splits = nas.data.load_dataset("digits", seed=0)
    rows = []
    for path in sorted((ROOT / "results/demo/winners").glob("*/candidate.json")):
        cand = nas.Candidate.from_dict(json.loads(path.read_text()))
        torch.manual_seed(0)
        model = nas.build_model(cand.arch)
        nas.train.train(model, splits, nas.train.TrainConfig(epochs=epochs))
        rows.append({"winner": path.parent.name, **measure(model, cand)})
        print(f"winner {path.parent.name:12s} {rows[-1]['error_pct']:+7.2f}%  {rows[-1]['file_bytes']:>9,} B", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--uniform", action="store_true", help="keep torch's uniform init (no Gaussian redraw)")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 30 if args.quick else 200
    rows = random_candidates(n, args.uniform)
    won = [] if args.quick else winners(args.epochs)
    key = "size_uniform_init" if args.uniform else "size"
    path = merge_section(key, {
        "what": "(nas.size_bits / 8 - container bytes) / container bytes",
        "spaces": list(SPACES), "seeds": sorted({r["seed"] for r in rows}),
        "weights": "torch init (uniform)" if args.uniform else "Gaussian of the init's spread",
        "random": summary(rows), "winners": summary(won), "winner_epochs": args.epochs,
        "before": {"source": "issue #16 (old filler rule, entropy estimate, no tables/header/running stats)",
                   "demo_winner_1": {"estimate_kb": 73.9, "file_kb": 92.6, "error_pct": -20.2}},
        "rows": rows, "winner_rows": won})
    print(json.dumps({k: v for k, v in json.loads(path.read_text())[key].items() if k not in ("rows", "winner_rows")},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
