"""Issue 15 item 5: winners of a supernet run start from its weights and distil from its largest child; the
compressed phase has its own learning rate (cosine) and batch norm is recalibrated after each stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

import nas
from nas.checkpoint import load_checkpoint
from nas.compress import compress_with_recovery
from nas.data import load_dataset
from nas.supernet import extreme, load_supernet
from nas.train import TrainConfig, calibration_images, recalibrate, train
from tests._runs import nas_cmd, write
from tests.test_supernet import MINI

BN_STATS = ("running_mean", "running_var")


def _run(cmd: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(nas_cmd(*cmd), capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode in (0, 1), done.stderr  # 1: a winner failed (left at chance), still a finished run
    return done


def _steps(folder: Path) -> list[dict]:
    _, _, meta = load_checkpoint(next((folder / "winners").glob("1-trial*")) / "model.safetensors")
    return meta["extra"]["steps"]


@pytest.mark.slow
def test_supernet_winners_start_from_its_weights_with_the_largest_child_as_teacher(tmp_path: Path) -> None:
    write(tmp_path, {**MINI, "compression": {"sparsity": [0.5], "quantization": ["none"],
                                             "codebook_bits": [4]}}, "mini.yaml")
    exp = write(tmp_path, {
        "name": "sn", "space": "mini.yaml", "dataset": "digits", "objectives": ["accuracy", "size_kb"],
        "profiles": [], "evaluator": "supernet", "budget": {"trials": 3}, "seed": 3,
        "supernet": {"epochs": 2, "batch_size": 32, "recalibration_batches": 2},
        "winners": {"top": 1, "epochs": 1, "teacher_epochs": 1, "recovery_epochs": 1, "scratch": "off",
                    "recalibration_batches": 2},
    })
    _run(("supernet", "train", str(exp), "--no-progress"), tmp_path)
    run = tmp_path / "run"
    _run(("search", str(exp), "--out", str(run), "--no-progress"), tmp_path)

    done = _run(("finetune", str(run), "--no-progress"), tmp_path)
    assert "start from the supernet's weights" in done.stdout
    summary = pd.read_csv(run / "winners" / "summary.csv")
    assert summary["init"].tolist() == ["supernet"] and summary["teacher_init"].tolist() == ["supernet"]
    assert summary["recovery_lr"].tolist() == [pytest.approx(0.05)]  # the proxy's lr (RECOVERY_LR_SHARE 1)
    teacher, t_cand, meta = load_checkpoint(run / "winners" / "teacher.safetensors")
    space = nas.load_space(tmp_path / "mini.yaml")
    net, _ = load_supernet(tmp_path / "sn.supernet.safetensors", space)
    assert t_cand.arch == extreme(net.space, largest=True) and meta["extra"]["init"] == "supernet"
    largest = net.extract(t_cand.arch).state_dict()
    for name, value in teacher.state_dict().items():  # the supernet's weights, untrained (no --teacher-epochs)
        if not name.endswith(BN_STATS + ("num_batches_tracked",)):
            torch.testing.assert_close(value, largest[name], msg=name)
    first = _steps(run)
    assert first and any(s["val_after"] != s["val_before"] for s in first)  # recovery at 0.05 trains

    # the recovery's own lr is read: at 1e-12 it changes no weight, so recalibrated accuracies stay put
    _run(("finetune", str(run), "--recovery-lr", "1e-12", "--no-progress"), tmp_path)
    still = _steps(run)
    assert [s["step"] for s in still] == [s["step"] for s in first]
    assert all(s["val_after"] == s["val_before"] for s in still)
    _, _, winner = load_checkpoint(next((run / "winners").glob("1-trial*")) / "model.safetensors")
    assert winner["extra"]["init"] == "supernet" and winner["extra"]["recovery"]["lr"] == 1e-12
    assert winner["extra"]["recovery"]["schedule"] == "cosine"

    (tmp_path / "sn.supernet.safetensors").unlink()  # gone: one warning line, winners and teacher from scratch
    gone = _run(("finetune", str(run), "--no-progress"), tmp_path)
    warned = [line for line in gone.stderr.splitlines() if "sn.supernet.safetensors" in line]
    assert len(warned) == 1 and warned[0].startswith("nas: warning: ") and "from scratch" in warned[0]
    summary = pd.read_csv(run / "winners" / "summary.csv")
    assert summary["init"].tolist() == ["scratch"] and summary["teacher_init"].tolist() == ["scratch"]


def _bn(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if n.endswith(BN_STATS)}


def test_batch_norm_is_recalibrated_after_compression() -> None:
    splits = load_dataset("digits")
    space = nas.load_space("mobilenetv2-tiny").with_input(splits.input_shape, splits.num_classes)
    torch.manual_seed(0)
    model = nas.build_model(space.random(1).arch)
    config = TrainConfig(epochs=1, max_samples=256, batch_size=32, threads=1)
    train(model, splits, config)
    spec = nas.CompressionSpec(quantization="binary")
    images = calibration_images(splits, 2, 32, seed=0)

    kept, _ = compress_with_recovery(model, spec, splits, None)
    settled, _ = compress_with_recovery(model, spec, splits, None, calibration=images)
    kept_bn, settled_bn = _bn(kept), _bn(settled)
    assert kept_bn.keys() == settled_bn.keys() and kept_bn
    assert all(torch.equal(kept_bn[n], b) for n, b in _bn(model).items())  # without: the dense network's
    assert all(not torch.equal(kept_bn[n], settled_bn[n]) for n in kept_bn)
    again = _bn(recalibrate(settled, images, 1, 64))  # the compressed network's own (batches of 64 untrained)
    for n, b in settled_bn.items():
        torch.testing.assert_close(again[n], b)

    recovered, steps = compress_with_recovery(model, spec, splits, TrainConfig(epochs=1, max_samples=64, batch_size=32),
                                              calibration=images)  # and after the recovery too
    assert len(steps) == 1
    after = _bn(recovered)
    for n, b in _bn(recalibrate(recovered, images, 2, 32)).items():
        torch.testing.assert_close(after[n], b)
    assert json.dumps(steps)  # the records stay plain numbers and strings
