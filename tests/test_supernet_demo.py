"""The shipped digits supernet, `nas supernet train --ship`, and the specialise-for-two-devices demo
(examples/supernet-cpu.yaml, examples/supernet-mcu.yaml, `nas plot CPU MCU --what devices`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

import nas
from nas.data import load_dataset
from nas.experiment import load_experiment, parse_experiment
from nas.supernet import SupernetTraining, calibration_images, child_accuracy, extreme, load_supernet
from tests._runs import nas_cmd, without_warnings, write
from tests.test_supernet import MINI

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "supernet" / "mobilenetv2-tiny-digits.safetensors"


def test_the_shipped_supernet_is_float16_weights_that_score_the_demo_space() -> None:
    assert SHIPPED.stat().st_size < 12e6
    with safe_open(str(SHIPPED), framework="pt") as f:
        keys = list(f.keys())
        assert not any(k.startswith("momentum.") for k in keys)
        assert f.get_tensor("net.stem.conv.weight").dtype == torch.float16
    space = nas.load_space("mobilenetv2-tiny")
    net, state = load_supernet(SHIPPED, space)
    assert state.epoch == 12 and net.stem.conv.weight.dtype == torch.float32
    splits = load_dataset("digits")
    config = SupernetTraining(recalibration_batches=4)
    calibration = calibration_images(splits, 4, 64)
    assert child_accuracy(net, extreme(space, True), splits, calibration, config) > 0.9
    for name in ("cpu", "mcu"):  # both demo experiments read this file
        exp = load_experiment(ROOT / "examples" / f"supernet-{name}.yaml")
        assert Path(exp.supernet_checkpoint).resolve() == SHIPPED.resolve()


@pytest.mark.slow
def test_ship_rewrites_the_checkpoint_smaller_with_the_same_children(tmp_path: Path) -> None:
    write(tmp_path, MINI, "mini.yaml")
    exp = write(tmp_path, {"name": "sn", "space": "mini.yaml", "dataset": "digits", "objectives": ["accuracy"],
                           "profiles": [], "evaluator": "supernet", "seed": 0,
                           "supernet": {"epochs": 2, "max_samples": 96, "batch_size": 32}})
    checkpoint = tmp_path / "sn.supernet.safetensors"
    trained = subprocess.run(nas_cmd("supernet", "train", str(exp), "--no-progress"), capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr
    full = tmp_path / "full.safetensors"
    shutil.copy(checkpoint, full)
    shipped = subprocess.run(nas_cmd("supernet", "train", str(exp), "--no-progress", "--ship"), capture_output=True,
                             text=True, timeout=300)
    assert shipped.returncode == 0, shipped.stderr
    assert "supernet: epoch" not in shipped.stderr  # nothing left to train: only rewritten
    assert checkpoint.stat().st_size < 0.3 * full.stat().st_size  # no momentum, half the bytes a weight
    space = nas.load_space(tmp_path / "mini.yaml")
    a, _ = load_supernet(full, space)
    b, state = load_supernet(checkpoint, space)
    assert state.epoch == 2
    x = torch.randn(8, *space.input_shape)
    for seed in range(4):
        arch = space.random(seed).arch
        torch.testing.assert_close(b.extract(arch).eval()(x), a.extract(arch).eval()(x), atol=2e-2, rtol=2e-2)


@pytest.mark.slow
def test_the_demo_specialises_the_shipped_supernet_for_two_devices(tmp_path: Path) -> None:
    runs = []
    for name in ("cpu", "mcu"):
        data = yaml.safe_load((ROOT / "examples" / f"supernet-{name}.yaml").read_text())
        data["budget"] = {"trials": 8}
        del data["constraints"]["accuracy"]  # a front from 8 trials, whatever they score
        data["supernet"]["checkpoint"] = str(SHIPPED)
        exp = write(tmp_path, data, f"{name}.yaml")
        runs.append(tmp_path / name)
        done = subprocess.run(nas_cmd("search", str(exp), "--out", str(runs[-1]), "--no-progress"),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    drawn = subprocess.run(nas_cmd("plot", *map(str, runs), "--what", "devices", "--out", str(tmp_path)),
                           capture_output=True, text=True, timeout=300)
    assert drawn.returncode == 0, drawn.stderr
    with Image.open(tmp_path / "devices.png") as png:
        assert png.width > png.height * 1.5  # a panel per device, side by side
        assert "stm32h743-int8" in png.info["Description"] and "reference-cpu" in png.info["Description"]
    alone = subprocess.run(nas_cmd("plot", str(runs[0]), "--what", "devices"), capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 2
    assert without_warnings(alone.stderr).strip().count("\n") == 0
    assert "two or more runs" in alone.stderr


def test_eval_samples_scores_each_trial_on_the_first_validation_images(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "examples" / "supernet-cpu.yaml").read_text())
    data |= {"budget": {"trials": 4}, "constraints": {}}
    data["supernet"] = {"checkpoint": str(SHIPPED), "eval_samples": 7}
    run = tmp_path / "run"
    done = subprocess.run(nas_cmd("search", str(write(tmp_path, data)), "--out", str(run), "--no-progress"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    accuracy = pd.read_csv(run / "trials.csv")["accuracy"].dropna()
    assert len(accuracy) == 4 and ((accuracy * 7).round(6) % 1 == 0).all()  # sevenths: 7 images scored
    default = parse_experiment(yaml.safe_dump(data | {"supernet": {"checkpoint": str(SHIPPED)}}))
    spelled = parse_experiment(yaml.safe_dump(data | {"supernet": {"checkpoint": str(SHIPPED), "eval_samples": None}}))
    assert default.digest == spelled.digest != parse_experiment(yaml.safe_dump(data)).digest
