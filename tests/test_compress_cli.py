"""``nas compress`` through a subprocess: the table, the written container, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.compress import load

from _runs import without_warnings


def _nas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a subprocess imports torch, scikit-learn and optuna: seconds each
def test_compress_prints_table_and_writes_container(tmp_path: Path) -> None:
    arch = nas.ArchSpec((64,), (nas.Linear(40, act="relu"), nas.Linear(10)))
    (tmp_path / "cand.json").write_text(nas.Candidate(arch).to_json())
    spec = json.dumps({"sparsity_linear": 0.9, "codebook_bits": 4})
    out = tmp_path / "m.nasz"
    proc = _nas("compress", str(tmp_path / "cand.json"), "--spec", spec, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("layers.0.0") and "10.0%" in line for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    assert f"{out.stat().st_size:,}" in total
    model = load(out)
    assert model(torch.randn(2, 64)).shape == (2, 10)


@pytest.mark.slow
def test_compress_errors_are_one_line(tmp_path: Path) -> None:
    proc = _nas("compress", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and without_warnings(proc.stderr).count("\n") == 1 and "does not exist" in proc.stderr
    (tmp_path / "cand.json").write_text(nas.Candidate(nas.ArchSpec((4,), (nas.Linear(2),))).to_json())
    proc = _nas("compress", str(tmp_path / "cand.json"), "--spec", '{"codebook_bits": 40}')
    assert proc.returncode == 2 and "codebook_bits" in proc.stderr
