"""``nas spaces``: the built-in search spaces."""

from __future__ import annotations

import argparse

from nas.space import builtin_spaces, load_space


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("spaces", help="list the built-in search spaces")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in builtin_spaces():
        space = load_space(name)
        print(f"{name:<20} {space.config.family:<12} input {'x'.join(map(str, space.input_shape)):<8} "
              f"{space.config.description}")
    return 0
