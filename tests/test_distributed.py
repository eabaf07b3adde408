"""Distributed fine-tuning: TernGrad is unbiased and packs to 2 bits, bytes are counted per hook, and
`nas finetune --nproc 2 --comm-hook terngrad` trains two real gloo processes to a good accuracy."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import nas
from nas.checkpoint import load_checkpoint
from nas.cli import main
from nas.data import load_dataset
from nas.cli._distributed import wants_distributed
from nas.distributed import CommStats, DistConfig, launch, train_ddp
from nas.errors import DataError, TrainError
from nas.terngrad import TernGradState, decode, pack, payload_bytes, scalers, terngrad_hook, ternarize, unpack
from nas.train import Plan, TrainConfig

@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


NAS = str(Path(sys.executable).parent / "nas")
MLP = nas.ArchSpec((64,), (nas.Linear(64, act="relu"), nas.Linear(10)), "mlp")


def _gradient() -> tuple[torch.Tensor, list[int]]:
    """A flat 'bucket' of three layers at very different scales, with exact zeros and a lone maximum."""
    g = torch.Generator().manual_seed(7)
    parts = [torch.randn(600, generator=g) * 1e-3, torch.randn(300, generator=g) * 2.0, torch.randn(100, generator=g)]
    parts[0][:50] = 0.0
    parts[1][0] = 25.0  # far beyond 2.5 standard deviations: clipping cuts it
    return torch.cat(parts), [600, 300, 100]


@pytest.mark.parametrize("clip", [None, 2.5])
def test_ternarization_is_unbiased(clip: float | None) -> None:
    """The mean of K ternarizations approaches clip(g); its error is judged against the exact variance
    v_i = s |clip(g)_i| - clip(g)_i**2 of one draw, not against an arbitrary tolerance."""
    g, sizes = _gradient()
    s = scalers(g, sizes, clip)
    bound = decode(torch.ones_like(g, dtype=torch.int8), s, sizes)
    target = torch.maximum(torch.minimum(g, bound), -bound)  # clip(g); g itself when clip is None
    if clip is not None:
        assert target[600] < 25.0 and float((target == g).float().mean()) > 0.95  # the outlier and the far tails
    k = 3000
    # k independent ternarizations at once: the bucket repeated k times, every copy with its own segments
    t, s_k = ternarize(g.repeat(k), sizes * k, clip, torch.Generator().manual_seed(0))
    assert torch.equal(s_k, s.repeat(k)) and set(t.unique().tolist()) == {-1, 0, 1}
    mean, target = decode(t, s_k, sizes * k).view(k, -1).double().mean(0), target.double()
    var = (bound.double() * target.abs() - target**2).clamp_min(0)  # of one draw; 0 where the draw is exact
    exact = var == 0
    assert torch.equal(mean[exact], target[exact])  # zeros stay zero, |g| = s is always sent as +-s
    err2, expected = (mean - target)[~exact] ** 2, var[~exact] / k
    # the error has the size the variance predicts: E[sum err^2] = sum var/k, with a relative sd of about
    # sqrt(2 sum v^2) / sum v (n independent, near-normal errors)
    ratio = float(err2.sum() / expected.sum())
    tolerance = 6 * float((2 * (expected**2).sum()).sqrt() / expected.sum())
    assert abs(ratio - 1) < tolerance, (ratio, tolerance)
    # a bias (e.g. a scale error) shows in the projection of the error on the layer's target, whose sd is
    # sqrt(sum target^2 var / k); 5 sd, yet a 1% scale bias gives 5 to 12 sd here
    start = 0
    for size in sizes:
        d, w, v = (mean - target)[start:start + size], target[start:start + size], var[start:start + size]
        assert abs(float((d * w).sum() / (w**2 * v / k).sum().sqrt())) < 5
        start += size


def test_packing_is_two_bits_per_element_and_exact() -> None:
    assert pack(torch.tensor([-1, 0, 1, 1], dtype=torch.int8)).tolist() == [0 | 1 << 2 | 2 << 4 | 2 << 6]
    gen = torch.Generator().manual_seed(1)
    for n in [0, 1, 2, 3, 4, 5, 7, 8, 1001]:
        t = torch.randint(-1, 2, (n,), generator=gen, dtype=torch.int8)
        packed = pack(t)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 4)  # 2 bits each, padding < 1 byte
        assert torch.equal(unpack(packed, n), t)
    rows = torch.randint(-1, 2, (3, 9), generator=gen, dtype=torch.int8)  # the hook unpacks all workers at once
    assert torch.equal(unpack(torch.stack([pack(r) for r in rows]), 9), rows)
    with pytest.raises(TrainError, match="packed bytes"):
        unpack(pack(rows[0]), 13)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(TrainError, match="add up to"):
        scalers(torch.ones(5), [2, 2], None)
    with pytest.raises(TrainError, match="clip must be > 0"):
        TernGradState(clip=-1.0)
    with pytest.raises(TrainError, match="comm_hook must be one of"):
        DistConfig(comm_hook="int8")  # type: ignore[arg-type]


@pytest.fixture
def one_process_group() -> Iterator[None]:
    """A gloo group of one process in this test process: DDP calls the hooks as in a real run, without spawning."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        dist.destroy_process_group()


class _Bucket:
    """Enough of dist.GradBucket for calling the hook directly: a flat buffer and per-layer views of it."""

    def __init__(self, flat: torch.Tensor, sizes: list[int]) -> None:
        self.flat, self.sizes = flat, sizes

    def buffer(self) -> torch.Tensor:
        return self.flat

    def gradients(self) -> list[torch.Tensor]:
        return list(self.flat.split(self.sizes))


def test_hook_returns_the_decoded_ternaries(one_process_group: None) -> None:
    g, sizes = _gradient()
    state = TernGradState(seed=3)
    out = terngrad_hook(state, _Bucket(g.clone(), sizes)).wait()  # type: ignore[arg-type]
    t, s = ternarize(g, sizes, 2.5, torch.Generator().manual_seed(3))
    assert torch.equal(out, decode(t, s, sizes))  # one worker: the average is its own decoded ternaries
    assert state.bytes_sent == payload_bytes(1000, 3) == 250 + 12
    bucket_wide = TernGradState(seed=3, granularity="bucket")
    terngrad_hook(bucket_wide, _Bucket(g.clone(), sizes)).wait()  # type: ignore[arg-type]
    assert bucket_wide.bytes_sent == 250 + 4


@pytest.mark.parametrize("hook", ["allreduce", "fp16", "powersgd", "terngrad"])
def test_bytes_per_step_of_each_hook(hook: str, one_process_group: None) -> None:
    torch.manual_seed(0)
    model = nas.build_model(MLP)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, threads=1)
    splits = load_dataset("synthetic")
    out = train_ddp(model, splits, config, DistConfig(comm_hook=hook))  # type: ignore[arg-type]
    steps = Plan(len(splits.train), config).total_steps  # one process: the same plan as nas.train.train
    n = 64 * 64 + 64 + 10 * 64 + 10  # one DDP bucket: two weight matrices and two biases
    assert out.run.failed is None and len(out.comm.per_step) == steps and out.comm.fp32_bytes_per_step == 4 * n
    if hook == "powersgd":
        # plain all-reduce for the first 10% of the steps, then rank-1 factors (64+64 and 10+64) and the raw biases
        warm_up = round(0.1 * steps)
        assert out.comm.per_step[:warm_up] == [4 * n] * warm_up
        assert set(out.comm.per_step[warm_up:]) == {4 * (128 + 74 + 64 + 10)}
    else:
        each = {"allreduce": 4 * n, "fp16": 2 * n, "terngrad": payload_bytes(n, 4)}[hook]
        assert set(out.comm.per_step) == {each}
    assert out.run.val_accuracy > 0.8  # one process learns through every hook (chance: 0.1)


def test_a_diverging_loss_stops_training_one_step_later(one_process_group: None) -> None:
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, batch_size=32, threads=1, diverge_above=1e-3)  # the first loss (~2.3) is "too big"
    out = train_ddp(nas.build_model(MLP), load_dataset("synthetic"), config)
    assert out.run.failed is not None and out.run.failed.startswith("training loss diverged")
    assert len(out.comm.per_step) == 1 and out.run.epochs == 1  # the voted-on step was taken, then all stopped


def test_comm_summary_ratios() -> None:
    stats = CommStats("terngrad", 4, "all_gather", fp32_bytes_per_step=1600, per_step=[104, 104])
    s = stats.summary()
    assert s["bytes_per_step"] == 104 and s["ratio_to_fp32_allreduce"] == 104 / 1600
    # a ring all-gather moves (N-1) x its input per rank, a ring all-reduce 2 (N-1)/N x
    assert s["ring_wire_ratio_to_fp32_allreduce"] == pytest.approx(3 * 104 / (1600 * 1.5))


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"nproc": None, "comm_hook": "allreduce", **kw})


def test_when_to_run_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert not wants_distributed(_args()) and not wants_distributed(_args(nproc=1))
    assert wants_distributed(_args(nproc=2, comm_hook="terngrad"))
    with pytest.raises(TrainError, match="one process exchanges nothing"):
        wants_distributed(_args(comm_hook="terngrad"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert wants_distributed(_args())  # started by torchrun
    with pytest.raises(TrainError, match="disagrees with torchrun"):
        wants_distributed(_args(nproc=3))


def test_a_user_error_in_a_rank_is_raised_in_the_launcher() -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        launch(load_dataset, 2, "no-such-dataset")


def _nas(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NAS, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_refuses_settings_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    cand = tmp_path / "mlp.json"
    cand.write_text(nas.Candidate(MLP).to_json())
    common = ["finetune", "--candidate", str(cand), "--dataset", "synthetic", "-o", str(tmp_path / "x.safetensors")]
    for extra, message in [(["--comm-hook", "terngrad"], "add --nproc 2"),
                           (["--nproc", "2", "--batch-size", "3"], "--batch-size >= 4"),
                           (["--nproc", "2", "--compress"], "nas compress")]:
        assert main([*common, *extra]) == 2  # refused before any process starts
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.safetensors").exists()


def test_two_gloo_processes_converge_with_terngrad(tmp_path: Path) -> None:
    cand, out = tmp_path / "mlp.json", tmp_path / "mlp.safetensors"
    cand.write_text(nas.Candidate(MLP).to_json())
    done = _nas("finetune", "--candidate", str(cand), "--dataset", "synthetic", "--epochs", "5", "--batch-size", "32",
                "--nproc", "2", "--comm-hook", "terngrad", "--threads", "2", "--no-progress", "-o", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["failed"] is None and summary["val_before"] < 0.3
    assert summary["val_accuracy"] > 0.8 and summary["test_accuracy"] > 0.8  # chance is 0.1
    comm = summary["distributed"]
    assert comm["world_size"] == 2 and comm["backend"] == "gloo" and comm["comm_hook"] == "terngrad"
    assert comm["bytes_per_step"] == payload_bytes(4810, 4) and comm["ratio_to_fp32_allreduce"] < 1 / 12
    model, candidate, meta = load_checkpoint(out)
    assert candidate.arch == MLP and meta["extra"]["distributed"]["steps"] == comm["steps"]


@pytest.mark.slow
def test_torchrun_starts_the_ranks(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    cand, out = tmp_path / "mlp.json", tmp_path / "mlp.safetensors"
    cand.write_text(nas.Candidate(MLP).to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "nas", "finetune",
                           "--candidate", str(cand), "--dataset", "synthetic", "--epochs", "3", "--comm-hook",
                           "fp16", "--no-progress", "-o", str(out)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["distributed"]["world_size"] == 2 and summary["val_accuracy"] > 0.8 and out.exists()
