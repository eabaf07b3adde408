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

    readme = RESULTS / "README.md"
    lines = readme.read_text().splitlines() if readme.exists() else []
    row = f"| [{name}]({name}.json) | {summary} | `{record['command']}` |"
    lines = [line for line in lines if not line.startswith(f"| [{name}](")] + [row]
    readme.write_text("\n".join(lines) + "\n")
    return path
