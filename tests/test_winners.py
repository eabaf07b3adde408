"""nas finetune RUN: winners of a real (tiny) search distilled, compressed and exported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import nas

from nas.compress import load as load_container
from nas.objectives import Objective
from nas.search import search
from nas.winners import finetune_run, pick_winners

from _runs import without_warnings

EXP = {"name": "w", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "size_kb"],
       "budget": {"trials": 6}, "population": 4, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128},
       "winners": {"top": 2, "epochs": 1, "teacher_epochs": 1, "recovery_epochs": 1}, "seed": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("winners")
    exp = tmp / "exp.yaml"
    exp.write_text(yaml.safe_dump(EXP))
    search(exp, folder=tmp / "run", progress=False)
    return tmp / "run"


def test_winners_are_distilled_compressed_and_exported(run: Path) -> None:
    import onnxruntime as ort
    import torch

    summary = finetune_run(run, progress=False)
    front = pd.read_csv(run / "front.csv")
    assert len(summary) == min(2, len(front)) and set(summary["trial"]) <= set(front["number"])
    assert pd.read_csv(run / "winners" / "summary.csv")["trial"].tolist() == summary["trial"].tolist()
    for _, row in summary.iterrows():
        d = run / row["folder"]
        assert row["file_bytes"] == (d / "model.nasz").stat().st_size  # the real file, not an estimate
        assert 0 <= row["compressed_test_accuracy"] <= 1 and 0 <= row["distilled_test_accuracy"] <= 1
        assert row["onnx_max_abs_error"] < 1e-3
        model = load_container(d / "model.nasz").eval()
        cand = json.loads((d / "candidate.json").read_text())
        x = torch.randn(3, *cand["arch"]["input_shape"])
        session = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            assert out == pytest.approx(model(x).numpy(), abs=1e-3)  # container and ONNX agree
        assert "latency_ms:reference-cpu" in summary.columns
    assert (run / "winners" / "teacher.safetensors").exists()
    assert "| rank |" in (run / "winners" / "summary.md").read_text()


def test_winners_spread_along_the_front() -> None:
    objectives = [Objective.of("accuracy"), Objective.of("size_kb")]
    front = pd.DataFrame({"number": range(7), "accuracy": [0.1 * i for i in range(7)], "size_kb": [7, 1, 3, 2, 5, 4, 6]})
    assert pick_winners(front, objectives, 3)["size_kb"].tolist() == [1, 4, 7]
    assert len(pick_winners(front, objectives, 10)) == 7


def test_finetune_cli_errors_are_one_line(tmp_path: Path, run: Path) -> None:
    rc = subprocess.run([sys.executable, "-m", "nas", "finetune", str(tmp_path)], capture_output=True, text=True)
    assert rc.returncode == 2 and "not a run folder" in rc.stderr and without_warnings(rc.stderr).count("\n") == 1
    rc = subprocess.run([sys.executable, "-m", "nas", "finetune"], capture_output=True, text=True)
    assert rc.returncode == 2 and "run folder" in rc.stderr


@pytest.mark.slow
def test_int8_winners_are_onnx_files_scored_in_onnxruntime(run: Path) -> None:
    """--int8: every winner also as int8 ONNX, its onnxruntime accuracy and latency beside fp32 ONNX's."""
    import onnx

    summary = finetune_run(run, top=1, int8=True, progress=False)
    row = summary.iloc[0]
    path = run / row["folder"] / f"winner-{row['rank']}.int8.onnx"
    assert path.exists() and row["int8_file"] == path.name
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert 0 <= row["int8_test_accuracy"] <= 1 and 0 <= row["onnx_test_accuracy"] <= 1
    assert row["int8_ms"] > 0 and row["onnx_ms"] > 0
    assert "int8_test_accuracy" in (run / "winners" / "summary.md").read_text()
    assert "int8_ms" in pd.read_csv(run / "winners" / "summary.csv").columns


@pytest.mark.slow
def test_an_int8_search_gives_int8_winners(tmp_path: Path) -> None:
    """A space that samples only int8: proxy and recovery train fake-quantized weights, the container stores
    int8 codes, and each winner has its int8 ONNX file without asking (priced by a roofline: the shipped
    table has no int8 entries, which the search's coverage check would refuse up front)."""
    space = yaml.safe_load((Path(nas.__file__).parent / "search_spaces" / "mobilenetv2-tiny.yaml").read_text())
    space["name"] = "tiny-int8"
    space["compression"] = {"quantization": ["int8"], "sparsity": {"conv": [0.0, 0.5], "linear": [0.0]}}
    (tmp_path / "tiny-int8.yaml").write_text(yaml.safe_dump(space))
    exp = {**EXP, "space": str(tmp_path / "tiny-int8.yaml"), "profiles": ["raspberry-pi-4"], "budget": {"trials": 3},
           "population": 3, "winners": {**EXP["winners"], "top": 1}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    search(tmp_path / "exp.yaml", folder=tmp_path / "run", progress=False)
    row = finetune_run(tmp_path / "run", progress=False).iloc[0]
    d = tmp_path / "run" / row["folder"]
    assert (d / f"winner-{row['rank']}.int8.onnx").exists() and 0 <= row["int8_test_accuracy"] <= 1
    model = load_container(d / "model.nasz")
    assert any(type(m.parametrizations.weight[0]).__name__ == "Int8Weight"
               for m in model.modules() if hasattr(m, "parametrizations"))
    assert row["latency_ms:raspberry-pi-4"] > 0
