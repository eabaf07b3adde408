"""The `nas` command through a real subprocess: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nas

from _runs import without_warnings

NAS = [str(Path(sys.executable).parent / "nas")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NAS, *args], capture_output=True, text=True, timeout=120)


def test_sample_prints_exact_costs() -> None:
    result = run("sample", "mobilenetv2-tiny", "-n", "3", "--seed", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = lines[lines.index(next(line for line in lines if line.startswith("---"))) + 1:]
    assert len(rows) == 3
    space = nas.load_space("mobilenetv2-tiny")
    profile = nas.get_profile("reference-cpu")
    for row, seed in zip(rows, range(5, 8)):
        arch = nas.compressed(space.random(seed).arch, space.random(seed).compression)  # as it runs
        cost = nas.count(arch)
        assert f"{cost.params:,}" in row and f"{cost.madds:,}" in row
        assert f" {profile.latency_ms(arch):.2f} " in row  # the measured profile's prediction


def test_sample_json_round_trips() -> None:
    result = run("sample", "lenet", "-n", "2", "--json")
    assert result.returncode == 0, result.stderr
    cands = [nas.Candidate.from_json(line) for line in result.stdout.splitlines()]
    assert cands == [nas.load_space("lenet").random(s) for s in (0, 1)]
    assert json.loads(result.stdout.splitlines()[0])["arch"]["family"] in ("lenet-300-100", "lenet-5")


def test_spaces_lists_builtins() -> None:
    result = run("spaces")
    assert result.returncode == 0
    for name in nas.builtin_spaces():
        assert name in result.stdout


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run("sample", "no-such-space")
    assert result.returncode == 2
    assert without_warnings(result.stderr).count("\n") == 1 and "Traceback" not in result.stderr
    assert "unknown search space 'no-such-space'" in result.stderr and "mobilenetv2" in result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("family: mobilenetv2\nname: x\ninput_shape: [3, 32]\n")
    result = run("sample", str(bad))
    assert result.returncode == 2 and "input_shape" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "sample", "no-such-space")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_cost_prints_stage_table_and_matches_fvcore() -> None:
    result = run("cost", "ssdlite-mobilenetv2", "--vs", "fvcore")
    assert result.returncode == 0, result.stderr
    cost = nas.count(nas.load_space("ssdlite-mobilenetv2").random(0).arch)
    assert f"{cost.params:,}" in result.stdout and f"{cost.madds:,}" in result.stdout
    assert "box + class heads, map 5" in result.stdout and "-> identical" in result.stdout


def test_cost_of_a_candidate_json_file(tmp_path: Path) -> None:
    cand = nas.load_space("mobilenetv2-tiny").random(4)
    path = tmp_path / "cand.json"
    path.write_text(cand.to_json())
    result = run("cost", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{nas.count(cand.arch).madds:,}" in result.stdout
    path.write_text('{"arch": {"input_shape": [1, 8, 8], "layers": [{"type": "conv", "out": 0}]}}')
    result = run("cost", str(path))
    assert result.returncode == 2 and "conv.out must be a positive integer, but got 0" in result.stderr
