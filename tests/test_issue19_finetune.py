"""Issue 19, through the ``nas`` command as a user runs it: ``nas finetune RUN`` honours or refuses every
option, says which threads it uses and how many winners it makes, writes a line per epoch when output is not
a terminal, keeps finished winners on Ctrl+C; ``--epochs 0`` is refused; an empty front at the end of a search
is no error; a compression stage that leaves a model at chance fails; the weight picture shows each layer's
own sparsity; ``nas inspect`` reads containers and checkpoints."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import nas
from tests._runs import nas_cmd, without_warnings, write

#: A search whose front has two members (accuracy, size and MAdds on 6 trials), in about 20 s.
EXP = {"name": "f19", "space": "mobilenetv2-tiny", "dataset": "synthetic",
       "objectives": ["accuracy", "size_kb", "madds"], "budget": {"trials": 6}, "population": 4,
       # the proxy's recipe before batch-norm recalibration (issue 15): these 6 trials keep their 2-member front
       "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128, "threads": 1, "recalibration_batches": 0},
       "winners": {"top": 2, "epochs": 1, "teacher_epochs": 1, "recovery_epochs": 1}, "seed": 1}
#: Small, fast fine-tuning for the run-mode tests.
QUICK = ["--max-samples", "256", "--epochs", "1"]


def nas_run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``nas ARGS`` in a subprocess with stdout and stderr captured (neither is a terminal)."""
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert without_warnings(done.stderr).count("\n") == 1 and without_warnings(done.stderr).startswith("nas: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("issue19")
    done = nas_run("search", str(write(tmp, EXP)), "--out", str(tmp / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp / "run" / "front.csv")) == 2  # what the tests below rely on
    return tmp / "run"


@pytest.fixture(scope="module")
def conv_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained conv network (mobilenetv2-tiny on synthetic), as `nas train` writes it."""
    out = tmp_path_factory.mktemp("ckpt") / "conv.safetensors"
    done = nas_run("train", "--space", "mobilenetv2-tiny", "--dataset", "synthetic", "--epochs", "1",
                   "--max-samples", "128", "--threads", "1", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def inspect_json(path: Path) -> dict:
    done = nas_run("inspect", str(path), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- item 1: options in run mode


@pytest.mark.parametrize("option", [["-o", "x.safetensors"], ["--compress"], ["--nproc", "2"], ["--init", "x"],
                                    ["--dataset", "digits"], ["--candidate", "c.json"], ["--comm-hook", "terngrad"],
                                    ["--compressed-out", "x.nasz"]])
def test_run_mode_refuses_options_for_one_model(tmp_path: Path, option: list[str]) -> None:
    done = nas_run("finetune", str(tmp_path), *option)
    one_line_error(done, f"{option[0]}", "does not apply to a run folder")


def test_run_mode_refuses_a_teacher_and_teacher_epochs(tmp_path: Path) -> None:
    done = nas_run("finetune", str(tmp_path), "--teacher", "t.safetensors", "--teacher-epochs", "2")
    one_line_error(done, "--teacher-epochs", "--teacher")


@pytest.mark.slow
def test_run_mode_applies_options_threads_and_lines(run: Path) -> None:
    """Items 1, 2, 9: the training options reach every checkpoint, the experiment's proxy.threads is used
    and said, --top above the front's size is said, and a line per epoch shows on a pipe."""
    done = nas_run("finetune", str(run), "--top", "3", *QUICK, "--batch-size", "32", "--lr", "0.02",
                   "--recovery-epochs", "0", "--seed", "5")
    assert done.returncode in (0, 1), done.stderr  # 1: a winner failed, which the summary says (item 13)
    assert "Traceback" not in done.stderr
    assert "the front has only 2" in done.stdout and "--top 3" in done.stdout
    assert "training with 1 thread (the experiment's proxy.threads" in done.stdout
    assert "teacher (trial" in done.stderr and "epoch 1/1, val" in done.stderr
    assert "winner #2 (trial" in done.stderr and "done: 2 of 2" in done.stderr
    summary = pd.read_csv(run / "winners" / "summary.csv")
    assert len(summary) == 2
    teacher = inspect_json(run / "winners" / "teacher.safetensors")["extra"]["training"]
    assert teacher == {"epochs": 1, "max_samples": 256, "batch_size": 32, "lr": 0.02, "schedule": "cosine",
                       "seed": 5, "threads": 1, "device": "cpu", "amp": False}  # amp: only on CUDA
    for folder in summary["folder"]:
        extra = inspect_json(run / folder / "model.safetensors")["extra"]
        assert extra["training"]["batch_size"] == 32 and extra["training"]["max_samples"] == 256
        assert extra["recovery_epochs"] == 0 and extra["steps"] == []  # --recovery-epochs 0: no recovery
    # --threads and --teacher: the given teacher is used (no teacher training), the threads said
    done = nas_run("finetune", str(run), "--top", "1", *QUICK, "--threads", "2",
                   "--teacher", str(run / "winners" / "teacher.safetensors"))
    assert done.returncode in (0, 1), done.stderr
    assert "training with 2 threads (--threads)" in done.stdout
    assert "teacher (trial" not in done.stderr and "winner #1" in done.stderr
    extra = inspect_json(run / pd.read_csv(run / "winners" / "summary.csv")["folder"][0] / "model.safetensors")
    assert extra["extra"]["teacher"] == str(run / "winners" / "teacher.safetensors")
    assert extra["extra"]["training"]["threads"] == 2


@pytest.mark.slow
def test_ctrl_c_keeps_finished_winners(run: Path) -> None:
    proc = subprocess.Popen(nas_cmd("finetune", str(run), "--top", "2", *QUICK), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "done: 1 of 2" in line:
            proc.send_signal(signal.SIGINT)  # while the second winner trains
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err
    assert "interrupted; 1 of 2 winners finished and are kept in" in err and "summary.md" in err
    assert "the teacher is in" in err
    summary = pd.read_csv(run / "winners" / "summary.csv")
    assert len(summary) == 1 and (run / summary["folder"][0] / "model.nasz").is_file()
    assert "| 1 |" in (run / "winners" / "summary.md").read_text()


# --------------------------------------------------------------------------- item 4: --epochs 0


@pytest.mark.parametrize("command", [
    ["finetune", "--space", "mobilenetv2-tiny", "--dataset", "synthetic", "-o", "x.safetensors", "--epochs", "0"],
    ["train", "--space", "mobilenetv2-tiny", "--dataset", "synthetic", "-o", "x.safetensors", "--epochs", "0"],
    ["finetune", "RUN", "--epochs", "0"],
    ["finetune", "RUN", "--teacher-epochs", "0"],
    ["finetune", "RUN", "--top", "0"],
])
def test_zero_epochs_are_refused_not_read_as_the_default(tmp_path: Path, command: list[str]) -> None:
    flag = command[command.index("0") - 1]
    done = nas_run(*[str(tmp_path) if c == "RUN" else c for c in command], cwd=tmp_path)
    one_line_error(done, f"{flag} must be >= 1, but got 0")
    assert not (tmp_path / "x.safetensors").exists()


def test_help_says_what_epochs_0_does() -> None:
    done = nas_run("finetune", "--help")
    assert done.returncode == 0 and "0 is refused" in " ".join(done.stdout.split())


# --------------------------------------------------------------------------- item 9: empty front at the end


def test_search_with_an_empty_front_and_winners_at_end_exits_0(tmp_path: Path) -> None:
    exp = {**EXP, "name": "empty", "budget": {"trials": 3}, "constraints": {"size_kb": {"max": 0.001}},
           "winners": {**EXP["winners"], "at_end": True}}
    done = nas_run("search", str(write(tmp_path, exp)), "--out", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "Pareto front 0" in done.stdout and "nothing to fine-tune" in done.stdout
    assert "error" not in done.stderr
    # asked for explicitly, fine-tuning an empty front stays an error
    one_line_error(nas_run("finetune", str(tmp_path / "run")), "nothing to fine-tune")


# --------------------------------------------------------------------------- item 13: left at chance


def test_compression_that_leaves_chance_accuracy_fails(tmp_path: Path) -> None:
    """An untrained linear model pruned to 1% of its weights guesses; the stage must say failed, exit 1."""
    cand = tmp_path / "c.json"
    cand.write_text(nas.Candidate(nas.ArchSpec((64,), (nas.Linear(10),)),
                                  nas.CompressionSpec(sparsity_linear=0.99)).to_json())
    done = nas_run("finetune", "--candidate", str(cand), "--dataset", "synthetic", "--epochs", "1", "--lr", "1e-6",
                   "--threads", "1", "--compress", "-o", str(tmp_path / "m.safetensors"))
    assert done.returncode == 1, done.stderr
    finetuned, compressed = (json.loads(line) for line in done.stdout.splitlines())
    assert finetuned["threads"] == 1
    step = compressed["steps"][0]
    assert step["val_after"] <= 0.1 + 0.06 and "left at chance" in step["failed"]
    assert compressed["failed"].startswith("compress:prune: left at chance")
    assert "compression failed: compress:prune: left at chance" in done.stderr
    assert "finetune: epoch 1/1, val" in done.stderr  # a line per epoch: stderr is not a terminal


# --------------------------------------------------------------------------- item 14: weight picture


@pytest.mark.slow
def test_weight_picture_shows_each_layers_own_sparsity(tmp_path: Path, conv_checkpoint: Path) -> None:
    """sparsity_conv 0.5 and sparsity_linear 0.9: a conv layer is drawn pruned 50%, the classifier 90%, and a
    layer kind the spec does not prune is drawn unpruned (the title was max() of both for every layer)."""
    from PIL import Image

    weights = [t["name"].removesuffix(".weight") for t in inspect_json(conv_checkpoint)["tensors"]
               if len(t["shape"]) > 1]
    conv, linear = weights[0], weights[-1]
    cases = [(conv, {"sparsity_conv": 0.5, "sparsity_linear": 0.9}, "after pruning 50%"),
             (linear, {"sparsity_conv": 0.5, "sparsity_linear": 0.9}, "after pruning 90%"),
             (linear, {"sparsity_conv": 0.5}, "not pruned (sparsity_linear is 0)")]
    for layer, spec, words in cases:
        done = nas_run("plot", "--compression", str(conv_checkpoint), "--no-tradeoff", "--layer", layer,
                       "--spec", json.dumps({**spec, "codebook_bits": 3}), "--out", str(tmp_path))
        assert done.returncode == 0, done.stderr
        title = Image.open(tmp_path / "compression-weights.png").text["Description"]
        assert title.startswith(f"{layer}:") and words in title and "3-bit codebook" in title, (spec, title)


# --------------------------------------------------------------------------- item 16: nas inspect


@pytest.mark.slow
def test_inspect_reads_containers_and_checkpoints(tmp_path: Path, conv_checkpoint: Path) -> None:
    container = tmp_path / "c.nasz"
    spec = json.dumps({"sparsity_conv": 0.5, "sparsity_linear": 0.5, "codebook_bits": 4})
    done = nas_run("compress", str(conv_checkpoint), "--spec", spec, "--out", str(container))
    assert done.returncode == 0, done.stderr
    info = inspect_json(container)
    assert info["kind"] == "container" and info["checksum_ok"] and info["file_bytes"] == container.stat().st_size
    weights = [r for r in info["records"] if r["coding"] != "raw"]
    assert weights and all(r["coding"] == "codebook" and r["value_bits"] == 4 for r in weights)
    assert sum(r["bytes"] for r in info["records"]) + info["header_bytes"] == info["file_bytes"]
    assert abs(sum(r["kept"] for r in weights) / sum(math.prod(r["shape"]) for r in weights) - 0.5) < 0.05
    table = nas_run("inspect", str(container))
    assert table.returncode == 0 and "crc32" in table.stdout and "verified" in table.stdout
    assert weights[-1]["key"] in table.stdout and f"{container.stat().st_size:,} bytes" in table.stdout

    ckpt = inspect_json(conv_checkpoint)
    assert ckpt["kind"] == "checkpoint" and ckpt["checksum_ok"] and ckpt["arch"]["input_shape"] == [1, 8, 8]
    assert ckpt["extra"]["dataset"] == "synthetic"
    assert [t["name"] for t in ckpt["tensors"] if len(t["shape"]) > 1] == [r["key"] for r in weights]
    assert "sha256" in nas_run("inspect", str(conv_checkpoint)).stdout


@pytest.mark.slow
def test_inspect_and_compress_refuse_damaged_or_foreign_files(tmp_path: Path, conv_checkpoint: Path) -> None:
    container = tmp_path / "good.nasz"
    assert nas_run("compress", str(conv_checkpoint), "--out", str(container)).returncode == 0
    one_line_error(nas_run("compress", str(container)), "compressed container", f"nas inspect {container}")
    data = bytearray(container.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.nasz").write_bytes(bytes(data))
    one_line_error(nas_run("inspect", str(tmp_path / "bad.nasz")), "checksum mismatch")
    data = bytearray(conv_checkpoint.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    one_line_error(nas_run("inspect", str(tmp_path / "bad.safetensors")), "SHA-256")
    (tmp_path / "notes.txt").write_text("hello\n")
    one_line_error(nas_run("inspect", str(tmp_path / "notes.txt")), "neither a nas compressed container")
    one_line_error(nas_run("inspect", str(tmp_path / "missing.nasz")), "cannot read")
