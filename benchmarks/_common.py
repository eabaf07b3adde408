"""Shared plumbing for benchmarks: machine description and result files under results/bench/."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench"


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def command() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


def write_result(name: str, data: dict[str, Any], summary: str) -> Path:
    """Write ``results/bench/<name>.json`` and set this benchmark's row in ``results/bench/README.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "command": command(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)

    set_readme_row(name, summary, record["command"])
    return path


def set_readme_row(name: str, summary: str, how: str) -> None:
    """Set benchmark ``name``'s row in ``results/bench/README.md`` (its summary and the command ``how``)."""
    readme = RESULTS / "README.md"
    lines = readme.read_text().splitlines() if readme.exists() else []
    row = f"| [{name}]({name}.json) | {summary} | `{how}` |"
    lines = [line for line in lines if not line.startswith(f"| [{name}](")] + [row]
    readme.write_text("\n".join(lines) + "\n")


def merge_section(key: str, data: dict[str, Any], name: str = "compression_costs") -> Path:
    """Set ``data[key]`` of ``results/bench/<name>.json`` (read, merge, atomic write): several benchmarks each
    own one top-level key of the same file. Adds the command and date to the section."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    try:
        merged = json.loads(path.read_text())
    except (OSError, ValueError):
        merged = {}
    merged[key] = {"command": command(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "machine": machine(), **data}
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(tmp, path)
    return path
