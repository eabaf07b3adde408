"""``nas datasets``: the datasets and whether their files are installed."""

from __future__ import annotations

import argparse

from nas.data import IMAGEFOLDER, available_datasets, load_dataset
from nas.errors import DataError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("datasets", help="list the datasets and whether their files are installed")
    p.add_argument("--root", default=None, help="folder to look in instead of $NAS_DATA and the system folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in available_datasets():
        try:
            s = load_dataset(name, root=args.root)
            print(f"{name:<15} {'x'.join(map(str, s.input_shape)):<8} {s.num_classes:>3} classes  "
                  f"train {len(s.train):>6} val {len(s.val):>6} test {len(s.test):>6}  {s.source}")
        except DataError as exc:
            print(f"{name:<15} missing: {exc}")
    print(f"{IMAGEFOLDER:<15} your own images, one sub-folder per class: --dataset {IMAGEFOLDER} --data-root DIR, or "
          f"dataset: {{name: {IMAGEFOLDER}, root: DIR}} in an experiment file")
    return 0
