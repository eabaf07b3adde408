"""The ``nas`` command: a table of small subcommands, one module each.

Every module in :data:`COMMANDS` registers its sub-parser with ``add_parser(subparsers)``
(which sets ``run``) and does its work in ``run(args) -> int``: it parses and calls the
library, nothing more. Errors a user can fix (:class:`~nas.errors.NasError`) print one
line and exit with status 2; ``--debug`` shows the traceback as well. Output piped into a
command that stops reading (``nas spaces | head -2``) ends quietly, as other tools do.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from nas import __version__
from nas.cli import (compress, cost, datasets, finetune, hardware, inspect, plot, report, sample, search, spaces,
                     supernet, train)
from nas.errors import NasError

#: Every command and the module that parses (``add_parser``) and runs (``run``) it, in help order.
COMMANDS: dict[str, ModuleType] = {
    "spaces": spaces,
    "sample": sample,
    "cost": cost,
    "search": search,
    "supernet": supernet,
    "datasets": datasets,
    "train": train,
    "finetune": finetune,
    "compress": compress,
    "inspect": inspect,
    "hardware": hardware,
    "plot": plot,
    "report": report,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas", description="Compact CNN architectures and their compression settings: draw them from search "
                                "spaces, cost them, train and distil them, compress them, profile their latency.")
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


class _Warnings(logging.Handler):
    """nas's own warnings (logger ``nas``, e.g. a latency table measured on another machine) as
    ``nas: warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"nas: warning: {record.getMessage()}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = logging.getLogger("nas")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except NasError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130


#: The exit status of a process that wrote into a closed pipe (128 + SIGPIPE), as a shell reports it.
CLOSED_PIPE = 141


def _closed_pipe() -> int:
    """The reader of stdout went away (``| head``): point stdout at devnull so that Python's final
    flush cannot fail again, and stop (the recipe of the Python docs, ``signal`` module, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return CLOSED_PIPE
