"""Helpers shared by the tests that run searches: experiment files, studies, the nas command."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import yaml


def write(tmp: Path, data: dict, name: str = "exp.yaml") -> Path:
    """An experiment (or any YAML mapping) written to ``tmp / name``."""
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def study_of(folder: Path, name: str) -> optuna.Study:
    """The study of a run folder's default SQLite storage."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def nas_cmd(*args: str) -> list[str]:
    """The ``nas`` command line, run by this interpreter."""
    return [sys.executable, "-m", "nas", *args]


def without_warnings(err: str) -> str:
    """stderr less ``nas: warning:`` lines: a latency table measured on another CPU warns on every run there, so a
    test that counts stderr lines must not depend on the machine it runs on."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("nas: warning: "))
