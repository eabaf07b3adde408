"""Issue 18, item 3, through the `nas` command: latency tables know the machine they were measured on,
warn once (command line and report) when loaded on another, and `nas hardware calibrate --here` refits
one to this machine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _runs import nas_cmd, write

from nas.hardware import BUILTIN_DIR
from nas.hardware.machine import this_machine
from nas.hardware.refit import MAX_NETWORKS, MODELS, fit

ELSEWHERE = {"cpu": "Test CPU 9000 (not this one)", "flags": ["avx2", "avx512f", "avx512_vnni"], "cores": 96,
             "torch": "2.13.0+cpu"}
WARNING = "was measured on another machine"


def nas(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def table(tmp: Path, name: str, machine: dict | None) -> Path:
    """The built-in reference table under another name, as measured on ``machine``."""
    data = json.loads((BUILTIN_DIR / "reference-cpu.json").read_text())
    data.update(name=name, machine=machine, device=(machine or {}).get("cpu", data["device"]))
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def cheap_search(tmp: Path, profile: Path) -> Path:
    exp = write(tmp, {"name": "lat", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
                      "profiles": [str(profile)], "budget": {"trials": 6}, "seed": 0})
    return exp


@pytest.mark.slow
def test_a_table_from_another_machine_warns_once_in_the_cli_and_in_the_report(tmp_path: Path) -> None:
    profile = table(tmp_path, "xeon", ELSEWHERE)
    out = tmp_path / "run"
    done = nas("search", str(cheap_search(tmp_path, profile)), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1, done.stderr
    line = warnings[0]
    assert line.startswith("nas: warning: latency table 'xeon'") and "Test CPU 9000" in line
    assert ("CPU flags" in line) == (set(ELSEWHERE["flags"]) != set(this_machine().flags))
    assert f"`nas hardware calibrate {profile} --here --space SPACE`" in line and "name `xeon-here`" in line
    info = json.loads((out / "run.json").read_text())
    assert f"nas hardware calibrate {profile} --here" in info["profiles"][str(profile)]["measured_elsewhere"]
    report = nas("report", str(out))
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert f"Warning: the search ran on another machine than `{profile}` was measured on" in text
    assert f"nas hardware calibrate {profile} --here" in text


def test_a_table_of_this_machine_does_not_warn(tmp_path: Path) -> None:
    profile = table(tmp_path, "mine", this_machine().model_dump())
    out = tmp_path / "run"
    done = nas("search", str(cheap_search(tmp_path, profile)), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert WARNING not in done.stderr
    assert "measured_elsewhere" not in json.loads((out / "run.json").read_text())["profiles"][str(profile)]


def test_a_built_table_records_this_machine(tmp_path: Path) -> None:
    done = nas("hardware", "build", "--space", "lenet", "--name", "here", "--out", str(tmp_path), "--rounds", "2")
    assert done.returncode == 0, done.stderr
    machine = json.loads((tmp_path / "here.json").read_text())["machine"]
    assert machine == this_machine().model_dump()
    assert machine["cores"] >= 1 and machine["torch"] and set(machine["flags"]) <= {
        "sse4_2", "fma", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
        "asimd", "sve"}


@pytest.mark.slow
def test_calibrate_here_refits_a_table_from_another_machine(tmp_path: Path) -> None:
    profile = table(tmp_path, "xeon", ELSEWHERE)
    hw = tmp_path / "hw"
    done = nas("hardware", "calibrate", str(profile), "--here", "--space", "mobilenetv2-tiny", "-n", "6",
               env={"NAS_HARDWARE": str(hw)})
    assert done.returncode == 0, done.stderr
    assert sum(WARNING in line for line in done.stderr.splitlines()) == 1
    assert "Name it in an experiment as `profiles: [xeon-here]`" in done.stdout
    old = json.loads(profile.read_text())
    new = json.loads((hw / "xeon-here.json").read_text())
    assert new["machine"] == this_machine().model_dump() and new["device"] == this_machine().cpu
    adapted = new["adapted"]
    assert adapted["from_device"] == ELSEWHERE["cpu"] and adapted["networks"] == 6 and adapted["input"] == "1x8x8"
    assert 0 < adapted["seconds"] <= 120
    # every entry rescaled by the kept model's terms; the intercept is the calibration at the space's input
    terms = adapted["terms"]
    assert set(adapted["loo_error"]) <= set(MODELS) and adapted["model"] in adapted["loo_error"]
    for key, entry in new["entries"].items():
        was = old["entries"][key]
        scaled = terms["table_ms"] * was["min_ms"]
        want = scaled + terms.get("madds", 0) * was["madds"] / 1e6 + terms.get("layers", 0)
        assert entry["min_ms"] == pytest.approx(max(0.05 * scaled, want))
    assert new["calibrations"] == {"1x8x8": {**new["calibrations"]["1x8x8"], "slope": 1.0,
                                             "intercept_ms": pytest.approx(adapted["intercept_ms"])}}
    # the refitted table is this machine's: found by name, and no warning
    again = nas("hardware", "calibrate", "xeon-here", "--here", "--space", "mobilenetv2-tiny", "-n", "3",
                env={"NAS_HARDWARE": str(hw)})
    assert again.returncode == 0, again.stderr
    assert WARNING not in again.stderr and "measured on this machine" in again.stdout


def test_calibrate_here_refuses_more_than_its_few_networks(tmp_path: Path) -> None:
    profile = table(tmp_path, "xeon", ELSEWHERE)
    done = nas("hardware", "calibrate", str(profile), "--here", "--space", "mobilenetv2-tiny",
               "-n", str(MAX_NETWORKS + 1), env={"NAS_HARDWARE": str(tmp_path / "hw")})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"nas: error: --here fits on 4 to {MAX_NETWORKS} networks, "
                                                    f"but got -n {MAX_NETWORKS + 1}.")
    assert not (tmp_path / "hw").exists()


def test_the_fit_keeps_the_model_that_predicts_held_out_networks_better() -> None:
    rng = np.random.default_rng(0)
    rows = [{"table_ms": float(t), "madds": float(m), "layers": float(n)}
            for t, m, n in zip(rng.uniform(2, 10, 16), rng.uniform(5, 50, 16), rng.integers(10, 20, 16))]
    # this machine pays per MAdd and per layer unlike the table's: the model with those terms recovers them
    extra = [0.3 + 2.0 * r["table_ms"] + 0.1 * r["madds"] + 0.05 * r["layers"] for r in rows]
    got = fit(rows, extra)
    assert got.model == "scale + per MAdd + per layer" and got.loo_error[got.model] < 1e-6
    assert got.terms == pytest.approx({"table_ms": 2.0, "madds": 0.1, "layers": 0.05}) and got.intercept_ms == pytest.approx(0.3)
    # a plain factor: the scale alone is exact, and leave-one-out keeps it
    plain = [0.3 + 2.0 * r["table_ms"] for r in rows]
    got = fit(rows, plain)
    assert got.loo_error[got.model] == min(got.loo_error.values())
    assert got.terms["table_ms"] == pytest.approx(2.0) and got.intercept_ms == pytest.approx(0.3)
    assert got.terms.get("madds", 0.0) == pytest.approx(0.0, abs=1e-9)
    # too few networks for the extra terms: they are not tried
    assert set(fit(rows[:4], extra[:4]).loo_error) == {"scale"}
