"""Latency prediction quality: naive sum of layer medians vs the calibrated table.

On the same held-out random networks of a space (seeds 20000..), in one run:
measure each network end to end twice (interleaved rounds), then compare with
the profile's plain sum of layer medians (the baseline) and with its calibrated
prediction: share of networks within +-10%, mean absolute percentage error,
Spearman rank correlation, and the noise floor (how much the two measurements
of the same network differ). Writes ``results/bench/latency.json`` and a row of
``results/bench/README.md``.

    .venv/bin/python benchmarks/latency_lut.py --profile reference-cpu --space mobilenetv2 -n 50
"""

from __future__ import annotations

import argparse

from _common import write_result

from nas.hardware import LutProfile, get_profile
from nas.hardware.measure import validate
from nas.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="reference-cpu")
    parser.add_argument("--space", default="mobilenetv2")
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()

    profile = get_profile(args.profile)
    space = load_space(args.space)
    if not isinstance(profile, LutProfile) or profile.calibration_for(space.random(0).arch) is None:
        raise SystemExit(f"{args.profile}: needs a measured table calibrated on {args.space} (nas hardware "
                         f"build / calibrate)")
    result = validate(profile, space, args.n, rounds=args.rounds)
    cal, naive = result["calibrated"], result["naive_sum"]
    result["goal"] = ">= 90% of held-out nets within +-10% and Spearman >= 0.95"
    result["calibration"] = profile.calibration_for(space.random(0).arch).model_dump()  # type: ignore[union-attr]
    summary = (f"{args.space}, {args.n} held-out nets on {profile.data.device}, {profile.data.threads} thread: "
               f"within +-10% **{100 * cal['within_10pct']:.0f}%** calibrated vs {100 * naive['within_10pct']:.0f}% "
               f"naive sum; MAPE {100 * cal['mape']:.1f}% vs {100 * naive['mape']:.1f}%; Spearman "
               f"{cal['spearman']:.3f} vs {naive['spearman']:.3f}; noise floor "
               f"{result['noise_floor_median_pct']:.1f}%")
    write_result("latency", result, summary)
    print(summary)


if __name__ == "__main__":
    main()
