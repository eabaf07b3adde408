"""``device: auto | cpu | cuda[:N]`` (issue 18, item 2): every training path through the ``nas`` command.

CPU is the default and what runs everywhere; ``auto`` is the CPU on a machine without CUDA. The tests
marked ``needs_cuda`` run the same small runs on a GPU with mixed precision, and are skipped (with the
reason) where torch sees none.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from nas.checkpoint import load_checkpoint, read_checkpoint
from nas.device import DeviceError, Precision, on_cpu, resolve_device, to_device
from nas.distributed import backend_for
from nas.models import build_model
from nas.search.ray.trial import trial_device
from nas.space import load_space
from nas.spec import Candidate

from _runs import nas_cmd, without_warnings, write

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
no_cuda = pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA; this one has a GPU")
#: What ``auto`` resolves to on this machine, as outputs name it.
AUTO = "cuda:0" if CUDA else "cpu"

TINY = {"name": "dev", "space": "mobilenetv2-tiny", "dataset": "digits", "objectives": ["accuracy", "madds"],
        "profiles": [], "budget": {"trials": 2}, "seed": 0,
        "proxy": {"epochs": 2, "pruner": "none", "batch_size": 64, "max_samples": 256}}


def run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def summary(proc: subprocess.CompletedProcess[str]) -> dict:
    """The JSON line ``nas train`` / ``nas finetune`` print (the last one starting with '{')."""
    assert proc.returncode == 0, proc.stderr
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = without_warnings(proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), proc.stderr
    return lines[0]


def compressing_candidate(tmp: Path) -> Path:
    """A digits candidate whose compression has a calibration pass (activation channel importance) and codebooks."""
    cand = load_space("mobilenetv2-tiny").random(4)
    cand = Candidate(cand.arch, replace(cand.compression, channel_ratio=0.25, channel_importance="activation",
                                        sparsity_conv=0.5, codebook_bits=4, quantization="none", lowrank_ratio=None))
    path = tmp / "candidate.json"
    path.write_text(cand.to_json())
    return path


# ------------------------------------------------------------------------------------------- the helpers


def test_settings_resolve_and_bad_ones_name_the_option() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")  # the default
    assert str(resolve_device("auto")) == AUTO
    with pytest.raises(DeviceError, match=r"--device must be auto, cpu, cuda or cuda:N, but got 'gpu'"):
        resolve_device("gpu", "--device")
    if CUDA:
        with pytest.raises(DeviceError, match=r"cuda:99: this machine has \d+ CUDA GPU"):
            resolve_device("cuda:99")
    else:
        with pytest.raises(DeviceError, match=r"^exp.yaml: device cuda:1: this machine has no CUDA GPU"):
            resolve_device("cuda:1", "exp.yaml: device")


def test_on_the_cpu_amp_is_float32_and_batches_stay() -> None:
    precision = Precision(torch.device("cpu"), amp=True)
    assert not precision.enabled and precision.scaler is None and precision.name == "float32"
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    batch = (torch.zeros(3), torch.ones(3, dtype=torch.long))
    moved = to_device(batch, torch.device("cpu"))
    assert all(a is b for a, b in zip(batch, moved))  # nothing copied
    model = build_model(load_space("mobilenetv2-tiny").random(0).arch)
    assert on_cpu(model) is model


def test_a_step_with_gradients_that_blew_up_is_skipped_and_large_ones_are_clipped() -> None:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    precision = Precision(torch.device("cpu"))
    before = layer.weight.detach().clone()
    layer(torch.full((1, 3), 1e30)).sum().mul(1e30).backward()  # inf gradients, as a ternary child's can be
    assert not precision.step(optimizer, max_norm=5.0)
    assert torch.equal(layer.weight, before) and layer.weight.grad is None
    layer(torch.full((1, 3), 100.0)).sum().backward()  # finite but large: clipped to norm 5, then one step
    assert precision.step(optimizer, max_norm=5.0)
    assert torch.linalg.vector_norm(layer.weight - before).item() <= 5.0 + 1e-4
    assert not torch.equal(layer.weight, before)


def test_ray_trials_take_the_gpu_ray_reserved() -> None:
    assert trial_device("cuda:3") == "cuda"  # CUDA_VISIBLE_DEVICES holds only the reserved GPU: index 0
    assert trial_device("cuda") == "cuda" and trial_device("auto") == "auto" and trial_device("cpu") == "cpu"


def test_distributed_backend_follows_the_device() -> None:
    assert backend_for("cpu", 2) == "gloo"
    assert backend_for("auto", 2) == ("nccl" if CUDA and torch.cuda.device_count() >= 2 else "gloo")
    with pytest.raises(DeviceError, match=r"--device cuda:1 names one GPU, but 2 processes train here"):
        backend_for("cuda:1", 2)
    if torch.cuda.device_count() < 4:
        with pytest.raises(DeviceError, match=r"--device cuda: 4 processes need a CUDA GPU each"):
            backend_for("cuda", 4)


# ------------------------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_train_with_auto_records_the_device_and_the_checkpoint_loads_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "a.safetensors"
    first = summary(run("train", "--space", "mobilenetv2-tiny", "--seed", "1", "--epochs", "1", "--max-samples",
                        "128", "--device", "auto", "--no-progress", "-o", str(out), cwd=tmp_path))
    assert first["device"].split(" ")[0] == AUTO and first["amp"] is CUDA
    tensors, meta = read_checkpoint(out)
    assert meta["extra"]["device"] == first["device"]
    assert {t.device.type for t in tensors.values()} == {"cpu"}  # saved from CPU copies, wherever it trained
    model, _, _ = load_checkpoint(out)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    again = summary(run("finetune", "--init", str(out), "--epochs", "1", "--max-samples", "128", "--no-progress",
                        "-o", str(tmp_path / "b.safetensors"), cwd=tmp_path))
    assert again["device"] == "cpu" and again["amp"] is False  # the default: the CPU


@no_cuda
def test_train_on_cuda_without_a_gpu_is_one_line_naming_the_option(tmp_path: Path) -> None:
    line = one_error_line(run("train", "--space", "mobilenetv2-tiny", "--device", "cuda", "-o",
                              str(tmp_path / "a.safetensors"), cwd=tmp_path))
    assert "--device cuda: this machine has no CUDA GPU" in line and "use cpu instead, or auto" in line
    assert not (tmp_path / "a.safetensors").exists()


@no_cuda
@pytest.mark.slow
def test_every_command_refuses_cuda_without_a_gpu_before_it_starts(tmp_path: Path) -> None:
    exp = write(tmp_path, {**TINY, "device": "cuda"})
    line = one_error_line(run("search", str(exp), "--no-progress", cwd=tmp_path))
    assert f"{exp}: device cuda: this machine has no CUDA GPU" in line
    assert not (tmp_path / "results").exists()  # refused before the run folder or any trial
    line = one_error_line(run("search", str(write(tmp_path, TINY, "cpu.yaml")), "--device", "cuda:0",
                              "--no-progress", cwd=tmp_path))
    assert "--device cuda:0: this machine has no CUDA GPU" in line
    line = one_error_line(run("supernet", "train", str(exp), "--no-progress", cwd=tmp_path))
    assert f"{exp}: device cuda: this machine has no CUDA GPU" in line
    line = one_error_line(run("finetune", "--space", "mobilenetv2-tiny", "--nproc", "2", "--device", "cuda", "-o",
                              str(tmp_path / "d.safetensors"), cwd=tmp_path))
    assert "--device cuda: this machine has no CUDA GPU" in line  # before any process starts


@pytest.mark.slow
def test_compress_runs_its_activation_pass_where_asked(tmp_path: Path) -> None:
    cand = compressing_candidate(tmp_path)
    proc = run("compress", str(cand), "--dataset", "digits", "--device", "auto", "--out", str(tmp_path / "c.nasz"),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.nasz").stat().st_size > 0
    if not CUDA:
        line = one_error_line(run("compress", str(cand), "--dataset", "digits", "--device", "cuda", cwd=tmp_path))
        assert "--device cuda: this machine has no CUDA GPU" in line


def test_a_bad_device_in_the_experiment_file_names_the_field(tmp_path: Path) -> None:
    exp = write(tmp_path, {**TINY, "device": "gpu"})
    line = one_error_line(run("search", str(exp), "--no-progress", cwd=tmp_path))
    assert f"{exp}: device: must be auto, cpu, cuda or cuda:N, but got 'gpu'" in line


@pytest.mark.parametrize("patch, message", [
    ({"resources": {"gpus": 1}}, "resources.gpus 1 reserves a GPU for every trial, but device is cpu"),
    ({"device": "cuda"}, "device cuda, but resources.gpus is 0: Ray hides the GPUs"),
])
def test_ray_refuses_a_reserved_gpu_left_idle_or_a_gpu_not_reserved(tmp_path: Path, patch: dict,
                                                                      message: str) -> None:
    exp = write(tmp_path, {**TINY, **patch})
    line = one_error_line(run("search", str(exp), "--backend", "ray", "--no-progress", cwd=tmp_path))
    assert message in line


@pytest.mark.slow
def test_search_records_where_it_trained_and_resumes_on_another_device(tmp_path: Path) -> None:
    exp = write(tmp_path, {**TINY, "device": "auto"})
    out = tmp_path / "run"
    proc = run("search", str(exp), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["device"].split(" ")[0] == AUTO
    assert f" on {info['device']}; results in" in proc.stdout
    study = optuna.load_study(study_name="dev", storage=f"sqlite:///{out / 'study.db'}")
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert trained and {t.user_attrs["device"] for t in trained} == {AUTO}
    # The device is not part of what the trials are: the same run goes on with --device cpu.
    proc = run("search", str(exp), "--out", str(out), "--device", "cpu", "--trials", "3", "--no-progress",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["device"] == "cpu"
    study = optuna.load_study(study_name="dev", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[-1].user_attrs.get("device") in ("cpu", None)  # None: rejected before training
    # The winners: the file's device (auto) unless --device says otherwise; the summary keeps it.
    proc = run("finetune", str(out), "--top", "1", "--epochs", "1", "--teacher-epochs", "1", "--recovery-epochs",
               "0", "--max-samples", "128", "--no-progress", cwd=tmp_path, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a winner left at chance by so short a training
    assert f"thread (the experiment's proxy.threads; --threads N to change) on {info['device']}" in proc.stdout
    assert pd.read_csv(out / "winners" / "summary.csv")["device"].tolist() == [AUTO]


@pytest.mark.slow
def test_finetune_compress_runs_its_calibration_and_recovery_on_the_device(tmp_path: Path) -> None:
    proc = run("finetune", "--candidate", str(compressing_candidate(tmp_path)), "--epochs", "1", "--max-samples",
               "128", "--compress", "--recovery-epochs", "1", "--device", "auto", "--no-progress", "-o",
               str(tmp_path / "c.safetensors"), cwd=tmp_path, timeout=900)
    # So short a training may leave a stage at chance (exit 1, said in "failed"); every stage still ran.
    assert proc.returncode in (0, 1), proc.stderr
    trained, compressed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert trained["device"].split(" ")[0] == AUTO and compressed["command"] == "compress"
    assert [s["step"] for s in compressed["steps"]][0] == "compress:channels"  # the activation pass's stage
    assert {s["step"] for s in compressed["steps"]} >= {"compress:prune", "compress:quantize"}
    assert (tmp_path / "c.nasz").stat().st_size == compressed["file_bytes"] > 0


@pytest.mark.slow
def test_supernet_trains_extracts_and_scores_on_the_chosen_device(tmp_path: Path) -> None:
    from test_supernet import MINI

    write(tmp_path, MINI, "mini.yaml")
    exp = write(tmp_path, {**TINY, "name": "sn", "space": "mini.yaml", "objectives": ["accuracy", "size_kb"],
                           "evaluator": "supernet", "device": "auto",
                           "supernet": {"epochs": 1, "max_samples": 64, "batch_size": 32, "recalibration_batches": 2}})
    proc = run("supernet", "train", str(exp), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"on {AUTO}" in proc.stdout and "; checkpoint " in proc.stdout
    cand = tmp_path / "child.json"
    cand.write_text(load_space(str(tmp_path / "mini.yaml")).random(0).to_json())
    proc = run("supernet", "extract", str(exp), "--candidate", str(cand), "--out", str(tmp_path / "child.safetensors"),
               "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0 and "(on cpu)" in proc.stdout, proc.stderr
    model, _, _ = load_checkpoint(tmp_path / "child.safetensors")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


# ------------------------------------------------------------------------------------------- on a GPU


@needs_cuda
@pytest.mark.slow
def test_on_cuda_train_finetune_and_compress_with_mixed_precision(tmp_path: Path) -> None:
    trained = summary(run("train", "--candidate", str(compressing_candidate(tmp_path)), "--epochs", "2",
                          "--device", "cuda", "--no-progress", "-o", str(tmp_path / "g.safetensors"), cwd=tmp_path))
    assert trained["device"].startswith("cuda:0 (") and trained["amp"] is True and not trained["failed"]
    assert trained["val_accuracy"] > 0.3  # it learned: mixed precision did not break training
    model, _, _ = load_checkpoint(tmp_path / "g.safetensors")  # a GPU run's checkpoint, read on the CPU
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    proc = run("finetune", "--init", str(tmp_path / "g.safetensors"), "--epochs", "1", "--compress", "--device",
               "cuda", "--no-progress", "-o", str(tmp_path / "h.safetensors"), cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a stage left at chance (said in "failed"), not a crash
    compressed = json.loads(proc.stdout.splitlines()[-1])
    assert compressed["command"] == "compress" and (tmp_path / "h.nasz").stat().st_size == compressed["file_bytes"]
    plain = summary(run("train", "--space", "mobilenetv2-tiny", "--epochs", "1", "--device", "cuda:0", "--no-amp",
                        "--no-progress", "-o", str(tmp_path / "f.safetensors"), cwd=tmp_path))
    assert plain["amp"] is False


@needs_cuda
@pytest.mark.slow
def test_on_cuda_search_supernet_and_winners(tmp_path: Path) -> None:
    exp = write(tmp_path, {**TINY, "device": "cuda", "winners": {"top": 1, "epochs": 1, "teacher_epochs": 1}})
    out = tmp_path / "run"
    proc = run("search", str(exp), "--out", str(out), "--no-progress", "--finetune", cwd=tmp_path, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a winner left at chance by one epoch
    assert json.loads((out / "run.json").read_text())["device"].startswith("cuda:0 (")
    assert "on cuda:0 (" in proc.stdout  # the search's last line and the winners' settings line
    assert pd.read_csv(out / "winners" / "summary.csv")["device"].tolist() == ["cuda:0"]
    sn = write(tmp_path, {**TINY, "name": "sn", "device": "cuda", "evaluator": "supernet",
                          "supernet": {"epochs": 1, "max_samples": 128, "recalibration_batches": 2}}, "sn.yaml")
    proc = run("supernet", "train", str(sn), "--no-progress", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0 and "on cuda:0 (" in proc.stdout, proc.stderr
    proc = run("search", str(sn), "--out", str(tmp_path / "snrun"), "--no-progress", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs for two NCCL processes")
@pytest.mark.slow
def test_on_two_gpus_finetune_runs_nccl(tmp_path: Path) -> None:
    out = summary(run("finetune", "--space", "mobilenetv2-tiny", "--epochs", "1", "--nproc", "2", "--device", "cuda",
                      "--no-progress", "-o", str(tmp_path / "d.safetensors"), cwd=tmp_path, timeout=600))
    assert out["distributed"]["backend"] == "nccl" and out["device"].startswith("cuda:0")
