"""Issue 17 item 3: every compression method is reachable from the `nas` command, and per-layer sparsity and
bits (Deep Compression's tables) go in a CompressionSpec, through `nas compress` and `nas finetune`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import nas
from nas.compress.container import describe, read_header

from _runs import nas_cmd, without_warnings

LENET300 = nas.ArchSpec((64,), (nas.Linear(300, act="relu"), nas.Linear(100, act="relu"), nas.Linear(10)))
CONV = nas.ArchSpec((1, 8, 8), (nas.Conv(8, 3), nas.Conv(16, 3), nas.GlobalAvgPool(), nas.Linear(10)))


def _nas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=300)


def _candidate(tmp_path: Path, arch: nas.ArchSpec, **compression: object) -> str:
    path = tmp_path / "cand.json"
    path.write_text(nas.Candidate(arch, nas.CompressionSpec(**compression)).to_json())  # type: ignore[arg-type]
    return str(path)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    err = without_warnings(proc.stderr)
    assert proc.returncode == 2 and err.count("\n") == 1, (proc.returncode, proc.stderr)
    return err


def _compress(tmp_path: Path, cand: str, *args: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    out = tmp_path / "m.nasz"
    proc = _nas("compress", cand, "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return proc, out.read_bytes()


@pytest.mark.slow  # each `nas` subprocess imports torch, scikit-learn and optuna
def test_per_layer_sparsity_and_bits_reach_the_file(tmp_path: Path) -> None:
    """Table 2's form: each layer its own pruning rate and bits; the records of the file hold them, and the
    estimate printed beside the file is within 3% of it."""
    spec = {"sparsity_linear": 0.5, "codebook_bits": 4,
            "layers": {"layers.0.0": {"sparsity": 0.92, "bits": 6}, "1": {"sparsity": 0.91}, "2": {"bits": 2}}}
    proc, data = _compress(tmp_path, _candidate(tmp_path, LENET300), "--spec", json.dumps(spec))
    weights = [r for r in describe(data).records if r.key.endswith("weight")]
    assert [(r.value_bits, r.kept) for r in weights] == [(6, 1536), (4, 2700), (2, 500)]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("dense"))
    estimate = float(line.split("estimate ")[1].split()[0].replace(",", ""))
    assert abs(estimate - len(data)) <= 0.03 * len(data) + 64  # untrained weights: Gaussian enough, small file
    assert '"layers": {"layers.0"' in proc.stdout  # the spec it applied, overrides included


@pytest.mark.slow
def test_per_layer_errors_name_the_layer_and_list_the_others(tmp_path: Path) -> None:
    cand = _candidate(tmp_path, CONV)
    err = _one_line_error(_nas("compress", cand, "--spec", '{"layers": {"layers.2": {"bits": 3}}}'))
    assert "layers.2" in err and "layers.0 (conv), layers.1 (conv), layers.3 (linear)" in err
    err = _one_line_error(_nas("compress", cand, "--spec", '{"layers": {"fc1": {"bits": 3}}}'))
    assert "'fc1'" in err
    err = _one_line_error(_nas("compress", cand, "--prune-scope", "global",
                               "--spec", '{"layers": {"0": {"sparsity": 0.5}}}'))
    assert "scope 'global'" in err


@pytest.mark.slow
def test_scope_centroid_init_and_cp_from_the_command_line(tmp_path: Path) -> None:
    cand = _candidate(tmp_path, LENET300)
    spec = '{"sparsity_linear": 0.8, "codebook_bits": 3}'
    by_layer = [r.kept for r in describe(_compress(tmp_path, cand, "--spec", spec)[1]).records if r.value_bits == 3]
    _, global_file = _compress(tmp_path, cand, "--spec", spec, "--prune-scope", "global")
    by_global = [r.kept for r in describe(global_file).records if r.value_bits == 3]
    assert sum(by_global) == sum(by_layer) and by_global != by_layer  # same count, ranked across layers
    _, density = _compress(tmp_path, cand, "--spec", spec, "--centroid-init", "density")
    assert density != _compress(tmp_path, cand, "--spec", spec, "--centroid-init", "linear")[1]
    conv = _candidate(tmp_path, CONV)
    _, data = _compress(tmp_path, conv, "--spec", '{"lowrank_ratio": 0.5}', "--lowrank-method", "cp")
    assert {v["kind"] for v in read_header(data)["factored"].values()} >= {"CPConv"}
    # structured pruning and its criterion through --spec: a narrower network in the file
    _, narrow = _compress(tmp_path, conv, "--spec", '{"channel_ratio": 0.5, "channel_importance": "l2"}')
    assert read_header(narrow)["arch"]["layers"][0]["out"] == 4


@pytest.mark.slow
def test_hints_codistillation_and_lottery_rewinding_from_finetune(tmp_path: Path) -> None:
    common = ["--dataset", "digits", "--epochs", "1", "--max-samples", "256", "--no-progress"]
    conv = _candidate(tmp_path, CONV, sparsity_conv=0.5, sparsity_linear=0.5, codebook_bits=4,
                      layers={3: {"sparsity": 0.3, "bits": 5}})
    teacher = tmp_path / "teacher.safetensors"
    assert _nas("train", "--candidate", conv, *common, "-o", str(teacher)).returncode == 0
    proc = _nas("finetune", "--candidate", conv, "--teacher", str(teacher), "--hint", "layers.1:layers.1",
                "--hint-weight", "0.5", *common, "-o", str(tmp_path / "hint.safetensors"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["distill"]["hints"] == [["layers.1", "layers.1"]] and summary["distill"]["hint_weight"] == 0.5
    proc = _nas("finetune", "--candidate", conv, "--codistill", "2", *common, "-o", str(tmp_path / "co.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])["codistill"]["val_accuracy"]) == 2
    mlp = _candidate(tmp_path, nas.ArchSpec((64,), (nas.Linear(64, act="relu"), nas.Linear(10))),
                     sparsity_linear=0.5, codebook_bits=4, layers={1: {"sparsity": 0.3, "bits": 5}})
    out = tmp_path / "ticket.safetensors"
    proc = _nas("finetune", "--candidate", mlp, "--compress", "--prune-steps", "2", "--rewind", "--recovery-epochs",
                "2", "--dataset", "digits", "--epochs", "2", "--no-progress", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    finetuned, report = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert [s["step"] for s in report["steps"]] == ["compress:prune1", "compress:prune2", "compress:quantize"]
    # rewound: right after the first round the kept weights are the untrained ones again
    assert report["steps"][0]["val_before"] < finetuned["val_accuracy"] - 0.1
    weights = [r for r in describe(out.with_suffix(".nasz").read_bytes()).records if r.key.endswith("weight")]
    assert [(r.value_bits, r.kept) for r in weights] == [(4, 64 * 64 // 2), (5, 640 - 192)]
    err = _one_line_error(_nas("finetune", "--candidate", conv, "--rewind", *common, "-o", str(out)))
    assert "--compress" in err
    err = _one_line_error(_nas("finetune", "--candidate", conv, "--hint", "layers.1", *common, "-o", str(out)))
    assert "STUDENT:TEACHER" in err


@pytest.mark.slow
@pytest.mark.parametrize("option", [["--hint", "a:b"], ["--codistill", "2"], ["--prune-steps", "3"], ["--rewind"],
                                    ["--centroid-init", "density"]])
def test_run_mode_refuses_the_one_model_methods(tmp_path: Path, option: list[str]) -> None:
    err = _one_line_error(_nas("finetune", str(tmp_path), *option))
    assert option[0] in err and "does not apply to a run folder" in err


@pytest.mark.slow
def test_candidates_without_overrides_are_written_as_before(tmp_path: Path) -> None:
    """`layers` is left out of a spec's dict when empty, so existing run folders and digests stay the same."""
    proc = _nas("sample", "lenet", "-n", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.strip().splitlines():
        compression = json.loads(line)["compression"]
        assert sorted(compression) == ["channel_importance", "channel_ratio", "codebook_bits", "huffman",
                                       "lowrank_ratio", "quantization", "sparsity_conv", "sparsity_linear"]
