"""Reliability (issue #9): bad input is one clear error, faults lose no trial, artifacts are safe to load.

What other files already cover is not repeated here: NaN trials, SIGKILL/Ctrl+C of the driver and
resume, same seed same trials (tests/test_search.py); space-file errors (tests/test_space_errors.py);
truncated, altered and foreign checkpoints and containers (tests/test_checkpoint.py,
tests/test_compress_container.py); plugins listed with their distribution and switched off
(tests/test_hardware.py). This file adds: every kind of bad input through the command line
(exit 2, one line, no traceback), property-based tests over generated spaces and experiments,
a trial that raises and one that overruns its time budget, a disk that fills up while results are
written, a scan of the sources for unsafe loading, and a load test of 8 workers on one study.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import gzip
import io
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from nas.checkpoint import save_checkpoint
from nas.cli import main
from nas.errors import NasError
from nas.experiment import parse_experiment

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "budget": {"trials": 3}, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128}, "seed": 0}
CHEAP = {"name": "cheap", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
         "budget": {"trials": 6}, "sampler": "random", "seed": 1}
GOOD_SPACE = yaml.safe_load((nas.space.BUILTIN_DIR / "mobilenetv2-tiny.yaml").read_text())


def write(folder: Path, name: str, data: Any) -> str:
    path = folder / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``nas ARGV`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- 1. bad input: exit 2, one line


def _idx(path: Path, array: np.ndarray, kind: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _fashion_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> str:
    folder.mkdir()
    for prefix in ("train", "t10k"):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(folder)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], str]]:
    """name -> (nas arguments, a fragment the one-line error must hold)."""
    d = tmp_path_factory.mktemp("bad")
    exp = {**CHEAP, "budget": {"trials": 1}}
    lut = json.loads((ROOT / "hardware" / "reference-cpu.json").read_text())
    lut["entries"] = dict(list(sorted(lut["entries"].items()))[::2])  # half the operators are missing
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    ckpt = d / "seed0.safetensors"
    save_checkpoint(ckpt, nas.build_model(cand.arch), cand)
    other = write(d, "other.json", nas.load_space("mobilenetv2-tiny").random(5).to_json())
    truncated = write(d, "truncated.safetensors", ckpt.read_bytes()[:-500])
    paths = {
        "lut": write(d, "half.json", json.dumps(lut)),
        "roof-yaml": write(d, "roof.yaml", "format: nas-roofline/1\nname: [x\n"),
        "roof-schema": write(d, "roof2.yaml", "format: nas-roofline/1\nname: x\ndevice: y\npeak_gmacs: fast\n"),
        "roof-tag": write(d, "roof3.yaml", "!!python/object/apply:os.system ['echo unsafe']\n"),
        "space-bad": write(d, "space.yaml", "family: mobilenetv2\nname: x\nstages: [\n"),
        "space-tag": write(d, "space2.yaml", "!!python/object/new:os.system ['echo unsafe']\n"),
        "binary": write(d, "binary.yaml", b"\xff\xfe\x00\x01 not text"),
        "binary-json": write(d, "binary.json", b"\xff\xfe\x00\x01 not text"),
        "fm-counts": _fashion_folder(d / "fm-counts", np.zeros((12, 28, 28), np.uint8), np.zeros(10, np.uint8)),
        "fm-flat": _fashion_folder(d / "fm-flat", np.zeros((12, 784), np.uint8), np.zeros(12, np.uint8)),
        "fm-ok": _fashion_folder(d / "fm-ok", np.zeros((12, 28, 28), np.uint8), np.zeros(12, np.uint8)),
    }

    def search(name: str, **changes: Any) -> list[str]:
        return ["search", write(d, f"{name}.yaml", {**exp, **changes}), "--out", str(d / f"run-{name}"), "--no-progress"]

    trained = {"objectives": ["accuracy", "madds"], "proxy": {"epochs": 1}}
    return {
        # experiment files
        "experiment: malformed YAML": (["search", write(d, "e1.yaml", "name: x\nspace: [\n")], "not valid YAML (line 3"),
        "experiment: not a mapping": (["search", write(d, "e2.yaml", "- a\n- b\n")], "must be a mapping"),
        "experiment: empty": (["search", write(d, "e3.yaml", "")], "must be a mapping"),
        "experiment: wrong type": (search("e4", budget={"trials": "many"}), "budget.trials"),
        "experiment: unknown field": (search("e5", speed=3), "speed: Extra inputs are not permitted"),
        "experiment: python tag": (["search", write(d, "e6.yaml", "!!python/object/apply:os.system ['echo x']\n")],
                                   "could not determine a constructor"),
        "experiment: not UTF-8": (["search", paths["binary"]], "not UTF-8"),
        "experiment: missing file": (["search", str(d / "nope.yaml")], "does not exist"),
        # unknown names, with the available ones listed
        "unknown space": (search("n1", space="mobilenetv9"), "built-in spaces: ['lenet'"),
        "unknown dataset": (search("n2", dataset="mnist-9", **trained), "available: ['cifar10', 'digits'"),
        "unknown profile": (search("n3", profiles=["pixel-99"]), "available: ['raspberry-pi-4'"),
        "unknown sampler": (search("n4", sampler="cmaes"), "'nsga2', 'nsga3', 'tpe' or 'random'"),
        "unknown objective": (search("n5", objectives=["speed"]), "choose from ['accuracy'"),
        # space and profile files named by an experiment
        "space file: malformed YAML": (search("s1", space=paths["space-bad"]), "not valid YAML at line 4"),
        "space file: python tag": (search("s2", space=paths["space-tag"]), "not valid YAML"),
        "profile: malformed YAML": (search("p1", profiles=[paths["roof-yaml"]]), "not valid YAML at line 3"),
        "profile: schema": (search("p2", profiles=[paths["roof-schema"]]), "peak_gmacs"),
        "profile: python tag": (search("p3", profiles=[paths["roof-tag"]]), "could not determine a constructor"),
        "profile: not UTF-8": (["sample", "mobilenetv2-tiny", "--profile", paths["binary-json"]], "cannot read latency table"),
        "profile: missing operators": (search("p4", profiles=[paths["lut"]]), "cannot price candidates of space"),
        # datasets
        "dataset: folder missing": (search("d1", dataset={"name": "fashion-mnist", "root": str(d / "none")}, **trained),
                                    "apt-get install dataset-fashion-mnist"),
        "dataset: image and label counts differ": (search("d2", dataset={"name": "fashion-mnist", "root": paths["fm-counts"]},
                                                          **trained), "differ in number"),
        "dataset: flat images": (search("d3", dataset={"name": "fashion-mnist", "root": paths["fm-flat"]}, **trained),
                                 "not an IDX file of the expected kind"),
        "dataset: wrong input shape for the checkpoint": (
            ["finetune", "--init", str(ckpt), "--dataset", "fashion-mnist", "--data-root", paths["fm-ok"],
             "-o", str(d / "x.safetensors")], "takes input (1, 8, 8) but dataset 'fashion-mnist' has images (1, 28, 28)"),
        # checkpoints and candidates
        "checkpoint: another architecture": (["compress", other, "--weights", str(ckpt)], "weights of another architecture"),
        "checkpoint: truncated": (["finetune", "--init", truncated, "--dataset", "synthetic", "-o", str(d / "y.safetensors")],
                                  "not a readable safetensors file"),
        "candidate: not UTF-8": (["cost", paths["binary-json"]], "not UTF-8"),
        "candidate: malformed": (["cost", write(d, "c.json", '{"arch": {"input_shape": [1, 8')], "Candidate JSON is malformed"),
    }


BAD_INPUT_NAMES = [
    "experiment: malformed YAML", "experiment: not a mapping", "experiment: empty", "experiment: wrong type",
    "experiment: unknown field", "experiment: python tag", "experiment: not UTF-8", "experiment: missing file",
    "unknown space", "unknown dataset", "unknown profile", "unknown sampler", "unknown objective",
    "space file: malformed YAML", "space file: python tag", "profile: malformed YAML", "profile: schema",
    "profile: python tag", "profile: not UTF-8", "profile: missing operators", "dataset: folder missing",
    "dataset: image and label counts differ", "dataset: flat images", "dataset: wrong input shape for the checkpoint",
    "checkpoint: another architecture", "checkpoint: truncated", "candidate: not UTF-8", "candidate: malformed",
]


@pytest.mark.parametrize("name", BAD_INPUT_NAMES)
def test_bad_input_is_one_line_exit_2(name: str, bad_inputs: dict[str, tuple[list[str], str]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv, fragment = bad_inputs[name]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def test_bad_input_list_is_complete(bad_inputs: dict[str, tuple[list[str], str]]) -> None:
    assert sorted(bad_inputs) == sorted(BAD_INPUT_NAMES)


def test_unsafe_yaml_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML tag that would run a command under an unsafe loader is refused by every reader."""
    marker = tmp_path / "ran"
    payload = f"!!python/object/apply:os.system ['touch {marker}']\n"
    for argv in (["search", write(tmp_path, "e.yaml", payload)], ["sample", write(tmp_path, "s.yaml", payload)],
                 ["sample", "mobilenetv2-tiny", "--profile", write(tmp_path, "p.yaml", payload)]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1, err
    assert not marker.exists()


def test_a_real_subprocess_exits_2_with_one_line(bad_inputs: dict[str, tuple[list[str], str]]) -> None:
    argv, fragment = bad_inputs["profile: missing operators"]
    done = subprocess.run([sys.executable, "-m", "nas", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1 and fragment in done.stderr
