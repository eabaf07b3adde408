"""Checkpoints round-trip; truncated, altered and foreign files are refused; the CLI trains and saves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save, save_file

import nas
from nas.checkpoint import load_checkpoint, load_weights, read_checkpoint, save_checkpoint
from nas.errors import TrainError

from _runs import without_warnings

NAS = str(Path(sys.executable).with_name("nas"))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, nas.Candidate]:
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    torch.manual_seed(0)
    model = nas.build_model(cand.arch)
    with torch.no_grad():  # non-default batch-norm statistics must survive too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    path = save_checkpoint(tmp_path / "m.safetensors", model, cand, {"val_accuracy": 0.5, "dataset": "digits"})
    return path, model, cand


def test_round_trip(saved: tuple[Path, torch.nn.Module, nas.Candidate]) -> None:
    path, model, cand = saved
    loaded, cand2, meta = load_checkpoint(path, expected=cand)
    assert cand2 == cand and meta["extra"] == {"val_accuracy": 0.5, "dataset": "digits"}
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["nas"] == nas.__version__
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    # Plain safetensors readers see ordinary tensors (no pickles anywhere).
    assert set(load_file(path)) == set(model.state_dict())


def test_truncated_file_is_refused(saved: tuple[Path, torch.nn.Module, nas.Candidate]) -> None:
    path = saved[0]
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(TrainError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_altered_weights_are_refused(saved: tuple[Path, torch.nn.Module, nas.Candidate]) -> None:
    path = saved[0]
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(TrainError, match="SHA-256"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(TrainError, match="not a nas checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(TrainError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "text.safetensors")


def test_another_architecture_is_refused(saved: tuple[Path, torch.nn.Module, nas.Candidate]) -> None:
    path, _, cand = saved
    other = nas.load_space("mobilenetv2-tiny").random(5)
    assert other.arch != cand.arch
    with pytest.raises(TrainError, match="another architecture than expected"):
        load_checkpoint(path, expected=other)
    tensors, _ = read_checkpoint(path)
    with pytest.raises(TrainError, match="weights of another architecture"):
        load_weights(nas.build_model(other.arch), tensors)
    # A description edited to another candidate (digest still valid) no longer fits the weights.
    tensors, meta = read_checkpoint(path)
    meta["candidate"] = other.to_dict()
    path.write_bytes(save(tensors, metadata={"nas": json.dumps(meta)}))
    with pytest.raises(TrainError, match="another architecture"):
        load_checkpoint(path)


def test_extra_must_be_json(tmp_path: Path) -> None:
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    with pytest.raises(TrainError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "x.safetensors", nas.build_model(cand.arch), cand, {"bad": object()})
    assert not list(tmp_path.iterdir())


def _nas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NAS, *args], capture_output=True, text=True, timeout=120)


def test_cli_train_then_distil_then_load(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.safetensors"
    common = ["--dataset", "synthetic", "--threads", "1", "--no-progress"]
    big = tmp_path / "big.json"
    big.write_text(nas.Candidate(nas.ArchSpec((64,), (nas.Linear(128, act="relu"), nas.Linear(10)))).to_json())
    done = _nas("train", "--candidate", str(big), "--epochs", "3", *common, "-o", str(teacher))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["val_accuracy"] > 0.5 and summary["failed"] is None and 0 <= summary["test_accuracy"] <= 1
    student = tmp_path / "student.safetensors"
    cand = tmp_path / "cand.json"
    cand.write_text(nas.Candidate(nas.ArchSpec((64,), (nas.Linear(16, act="relu"), nas.Linear(10))),
                                  nas.CompressionSpec(sparsity_linear=0.5)).to_json())
    done = _nas("finetune", "--candidate", str(cand), "--teacher", str(teacher), "--epochs", "2", *common,
                "--compress", "-o", str(student))
    assert done.returncode == 0, done.stderr
    summary, compressed = (json.loads(line) for line in done.stdout.splitlines())
    assert summary["teacher_val_accuracy"] > 0.5 and summary["val_accuracy"] > summary["val_before"]
    assert [s["step"] for s in compressed["steps"]] == ["compress:prune"]
    assert (tmp_path / "student.nasz").stat().st_size == compressed["file_bytes"] > 0
    model, loaded, meta = load_checkpoint(student)
    assert loaded.arch.input_shape == (64,) and meta["extra"]["teacher"] == str(teacher)


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    done = _nas("train", "--space", "mobilenetv2-tiny", "--dataset", "fashion-mnist", "--data-root", str(tmp_path),
                "-o", str(tmp_path / "x.safetensors"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("nas: error: dataset 'fashion-mnist' not found")
    assert "apt-get install dataset-fashion-mnist" in done.stderr and without_warnings(done.stderr).count("\n") == 1
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    done = _nas("finetune", "--init", str(tmp_path / "broken.safetensors"), "--dataset", "synthetic",
                "-o", str(tmp_path / "y.safetensors"))
    assert done.returncode == 2 and "not a readable safetensors file" in done.stderr
