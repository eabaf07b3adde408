"""``nas report RUN``: one-page Markdown + HTML report of a run folder (:func:`nas.report.write_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.report import ReportOptions, write_report


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="one-page Markdown + HTML report of a run folder (also while it runs)",
                       description="Write RUN/report.md and RUN/report.html (pictures in RUN/plots/): experiment, "
                                   "hardware profile, budget, Pareto table, pictures, winners, how to reproduce.")
    p.add_argument("run_folder", metavar="RUN", help="run folder written by `nas search`")
    p.add_argument("--validation", type=Path, default=None,
                   help="include a profile validation (`nas hardware validate ... --json FILE`)")
    p.add_argument("--tradeoff", action="store_true",
                   help="also measure accuracy vs size of the top winner (pruning / quantization / both; "
                        "needs the dataset, takes a minute)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files (with --tradeoff)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # this process only draws files
    md, page = write_report(args.run_folder, ReportOptions(args.validation, args.tradeoff, args.data_root))
    print(f"wrote {md} and {page}")
    return 0
