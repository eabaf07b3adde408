"""Data-parallel fine-tuning with ``torch.distributed``: launcher, gradient-exchange hooks, byte counts.

``nas finetune ... --nproc N`` starts N processes on this machine (or runs as one
of the processes ``torchrun`` starts, reading ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). Each process builds the same
model, wraps it in :class:`~torch.nn.parallel.DistributedDataParallel` and trains
on its shard of the training set; rank 0 evaluates and writes the checkpoint.
Where the ranks train is the ``device`` setting (:func:`backend_for`): ``cpu``
(the command's default) is gloo on the CPU; ``auto`` is NCCL with one GPU per
process (``cuda:LOCAL_RANK``) when every local process has one, else gloo;
``cuda`` insists on NCCL and refuses a machine with fewer GPUs than processes.
On CUDA the steps run in mixed precision unless ``TrainConfig.amp`` is off.

How the shards and budget work (like ``DistributedSampler``): every epoch a
seeded permutation shared by all ranks is dealt round-robin, ``len(train) //
world`` images to each rank (the remainder sits that epoch out). The global
batch is ``TrainConfig.batch_size`` split evenly over the ranks, so a run takes
about as many optimizer steps, and follows the same learning-rate schedule, as
the same command with one process; ``max_samples`` counts images over all ranks.

Gradient exchange (``--comm-hook``):

- ``allreduce``: DDP's own fp32 all-reduce, no hook.
- ``fp16``: PyTorch's ``fp16_compress_hook`` (half-precision all-reduce).
- ``powersgd``: PyTorch's ``powerSGD_hook`` (rank-``powersgd_rank`` factors, error
  feedback, plain all-reduce for the first ``powersgd_start`` of the steps, as
  its authors advise).
- ``terngrad``: :func:`nas.terngrad.terngrad_hook` (2 bits per element plus a
  float32 scaler per layer).

Bytes communicated (:class:`CommStats`) are the payload each rank hands to the
gradient collectives per step: the bucket sizes times 4 (allreduce) or 2 (fp16);
for PowerSGD the elements it reports reducing (P and Q factors plus the tensors
it leaves uncompressed; the full buckets during its warm-up); for TernGrad the
packed bytes and scalers it all-gathers. On the wire a ring all-reduce moves
``2 (N - 1) / N`` times its payload per rank and an all-gather ``N - 1`` times,
so the two are equal for ``N = 2``; for larger N an all-gather of ternaries
costs ``N / 32`` of the fp32 all-reduce instead of 1/16 (see
:meth:`CommStats.summary`). Not counted: a 4-byte all-reduce per step in which
the ranks agree to stop on a non-finite or diverging loss (read a step later,
so it adds no barrier), and the one-time broadcast of rank 0's weights.
Batch-norm statistics are synced from rank 0 once, at the start, not before
every step: each rank then keeps its own, and the checkpoint holds rank 0's.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.multiprocessing.spawn import ProcessException, spawn
from torch.nn.parallel import DistributedDataParallel

from nas.data import Splits, fit_input
from nas.device import DeviceError, Precision, check_device_name, resolve_device
from nas.errors import NasError, TrainError
from nas.terngrad import DEFAULT_CLIP, Granularity, TernGradState, ddp_hook, terngrad_hook
from nas.train import (
    Plan,
    TrainConfig,
    TrainResult,
    _Threads,
    as_tensors,
    batches,
    cross_entropy,
    evaluate,
    input_shape_of,
    loss_problem,
    make_optimizer,
)

if TYPE_CHECKING:
    from torch._C._distributed_c10d import GradBucket

CommHook = Literal["allreduce", "fp16", "powersgd", "terngrad"]
COMM_HOOKS: tuple[str, ...] = ("allreduce", "fp16", "powersgd", "terngrad")
T = TypeVar("T")


@dataclass(frozen=True)
class DistConfig:
    """How the ranks exchange gradients (see the module docstring)."""

    comm_hook: CommHook = "allreduce"
    #: TernGrad: clip at this many standard deviations (None: no clipping) ...
    terngrad_clip: float | None = DEFAULT_CLIP
    #: ... with one scaler per layer (the paper) or per DDP bucket.
    terngrad_granularity: Granularity = "layer"
    #: PowerSGD: rank of the low-rank factors, and the fraction of steps with plain all-reduce first.
    powersgd_rank: int = 1
    powersgd_start: float = 0.1
    #: DDP bucket size in MiB (None: DDP's default, 25).
    bucket_cap_mb: float | None = None

    def __post_init__(self) -> None:
        if self.comm_hook not in COMM_HOOKS:
            raise TrainError(f"comm_hook must be one of {list(COMM_HOOKS)}, but got {self.comm_hook!r}.")
        if self.terngrad_clip is not None and not self.terngrad_clip > 0:
            raise TrainError(f"terngrad_clip must be > 0 (or None for no clipping), but got {self.terngrad_clip}.")
        if not (isinstance(self.powersgd_rank, int) and self.powersgd_rank >= 1):
            raise TrainError(f"powersgd_rank must be an int >= 1, but got {self.powersgd_rank!r}.")
        if not 0 <= self.powersgd_start < 1:
            raise TrainError(f"powersgd_start must be in [0, 1), but got {self.powersgd_start}.")


@dataclass
class CommStats:
    """Gradient bytes this rank handed to collectives, one entry per optimizer step."""

    hook: str
    world_size: int
    collective: Literal["all_reduce", "all_gather"]
    #: What a plain fp32 all-reduce of the same buckets hands over per step.
    fp32_bytes_per_step: int
    per_step: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean payload per step, its ratio to fp32 all-reduce, and the ring-algorithm wire estimate."""
        mean = sum(self.per_step) / len(self.per_step) if self.per_step else 0.0
        n = self.world_size
        wire = (n - 1) if self.collective == "all_gather" else 2 * (n - 1) / n
        return {"comm_hook": self.hook, "world_size": n, "collective": self.collective, "steps": len(self.per_step),
                "bytes_per_step": mean, "last_step_bytes": self.per_step[-1] if self.per_step else 0,
                "fp32_allreduce_bytes_per_step": self.fp32_bytes_per_step,
                "ratio_to_fp32_allreduce": mean / self.fp32_bytes_per_step if self.fp32_bytes_per_step else None,
                "ring_wire_bytes_per_step": mean * wire,
                "ring_wire_ratio_to_fp32_allreduce": (mean * wire / (self.fp32_bytes_per_step * 2 * (n - 1) / n)
                                                      if self.fp32_bytes_per_step and n > 1 else None)}


# --------------------------------------------------------------------------- hooks


def register_hook(ddp: DistributedDataParallel, config: DistConfig, total_steps: int, seed: int
                  ) -> Callable[[], int] | None:
    """Register ``config.comm_hook`` on ``ddp``; returns a function giving the bytes this rank has sent so far,
    or None for DDP's built-in all-reduce (no hook: it reduces every bucket, 4 bytes per element, every step)."""
    sent = [0]  # the fp16 and PowerSGD wrappers add to it
    if config.comm_hook == "allreduce":
        return None
    if config.comm_hook == "fp16":
        @ddp_hook
        def fp16(state: Any, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
            sent[0] += bucket.buffer().numel() * 2
            return default_hooks.fp16_compress_hook(state, bucket)

        ddp.register_comm_hook(None, fp16)
    elif config.comm_hook == "powersgd":
        ps = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=config.powersgd_rank,
                                         start_powerSGD_iter=max(2, round(config.powersgd_start * total_steps)),
                                         random_seed=seed)

        @ddp_hook
        def powersgd(state: powerSGD_hook.PowerSGDState, bucket: GradBucket
                     ) -> torch.futures.Future[torch.Tensor]:
            buf = bucket.buffer()
            warm_up = state.iter < state.start_powerSGD_iter  # the hook all-reduces the whole bucket then
            before = state.total_numel_after_compression
            fut = powerSGD_hook.powerSGD_hook(state, bucket)
            elements = buf.numel() if warm_up else state.total_numel_after_compression - before
            sent[0] += elements * buf.element_size()
            return fut

        ddp.register_comm_hook(ps, powersgd)
    else:
        tg = TernGradState(clip=config.terngrad_clip, granularity=config.terngrad_granularity,
                           seed=seed + 1_000_003 * dist.get_rank())
        ddp.register_comm_hook(tg, terngrad_hook)
        return lambda: tg.bytes_sent
    return lambda: sent[0]


# --------------------------------------------------------------------------- process group and launcher


def launched() -> bool:
    """True inside a process started by ``torchrun`` (or by :func:`launch`): ``RANK`` and ``WORLD_SIZE`` are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise TrainError(f"${name} is not set: start the processes with torchrun or `nas finetune --nproc N`.")
        return default
    try:
        return int(value)
    except ValueError:
        raise TrainError(f"${name} must be an integer, but got {value!r}.") from None


def backend_for(setting: str, local_world: int, option: str = "--device") -> str:
    """``"nccl"`` when the ``local_world`` processes on this machine train on GPUs, one each, else ``"gloo"``.

    ``cpu``: gloo. ``auto``: NCCL when there is a GPU for every local process, else gloo. ``cuda``: NCCL,
    or a one-line DeviceError naming ``option`` when there are fewer GPUs than processes; ``cuda:N`` names
    one GPU, so it takes one process."""
    name = check_device_name(setting, option)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "cpu" or (name == "auto" and gpus < local_world):
        return "gloo"
    if name.startswith("cuda:") and local_world > 1:
        raise DeviceError(f"{option} {name} names one GPU, but {local_world} processes train here, each on a GPU "
                          f"of its own (cuda:LOCAL_RANK): use {option} cuda.")
    if name.startswith("cuda") and local_world == 1:
        resolve_device(name, option)  # no GPU, or no GPU N: its own message
    elif gpus < local_world:
        raise DeviceError(f"{option} {name}: {local_world} processes need a CUDA GPU each, but this machine has "
                          f"{gpus}; use {option} auto (NCCL where every process has a GPU, else gloo on the CPU) "
                          f"or cpu.")
    return "nccl"


@contextmanager
def process_group(device: str = "auto", option: str = "--device") -> Iterator[torch.device]:
    """Join the process group described by the environment (``env://``) and yield this rank's device.

    The backend is :func:`backend_for` the ``device`` setting: NCCL on ``cuda:LOCAL_RANK`` (``cuda:N`` for
    one process given ``cuda:N``), else gloo on the CPU. The group is destroyed on exit, unless it was
    already initialized by the caller.
    """
    if dist.is_initialized():
        yield _device()
        return
    world = env_int("WORLD_SIZE")
    local_world = env_int("LOCAL_WORLD_SIZE", world)
    backend = backend_for(device, local_world, option)
    if backend == "nccl":
        index = int(device.partition(":")[2]) if device.startswith("cuda:") else env_int("LOCAL_RANK", 0)
        torch.cuda.set_device(index)
    dist.init_process_group(backend)
    try:
        yield _device()
    finally:
        dist.destroy_process_group()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _child(local_rank: int, nproc: int, port: int, queue: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        out = fn(*args)
    except NasError as exc:
        queue.put((local_rank, exc))
        raise SystemExit(2) from None
    if local_rank == 0:
        queue.put((0, out))


def launch(fn: Callable[..., T], nproc: int, *args: Any) -> T:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this machine, as ``torchrun`` would, and return rank 0's result.

    Each process sees ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``
    and a loopback ``MASTER_ADDR``/``MASTER_PORT``; ``fn`` joins the group with
    :func:`process_group`. ``fn`` and ``args`` must be picklable (a module-level
    function) and the result small. A :class:`~nas.errors.NasError` raised in
    any process is raised here; other failures stop all processes and raise
    ``torch.multiprocessing.spawn.ProcessException``.
    """
    if not (isinstance(nproc, int) and nproc >= 1):
        raise TrainError(f"nproc must be an int >= 1, but got {nproc!r}.")
    queue = multiprocessing.get_context("spawn").SimpleQueue()
    try:
        spawn(_child, args=(nproc, free_port(), queue, fn, args), nprocs=nproc, join=True)
    except ProcessException:
        while not queue.empty():
            _, item = queue.get()
            if isinstance(item, NasError):
                raise item from None
        raise
    while not queue.empty():
        rank, item = queue.get()
        if rank == 0:
            return item  # type: ignore[no-any-return]
    raise TrainError("rank 0 finished without a result.")


# --------------------------------------------------------------------------- training


@dataclass
class DistResult:
    """A data-parallel run: rank 0's training record (accuracies only on rank 0) and its byte counts."""

    run: TrainResult
    comm: CommStats
    rank: int
    world_size: int
    backend: str


class _StopVote:
    """Ranks stop together when any rank's loss is bad (a rank that stopped alone would leave the others waiting
    in the next reduce), without a barrier every step: step k's vote is an asynchronous 4-byte all-reduce read
    at step k + 1, so every rank takes the bad step (its NaN gradients reach every replica) and all stop at
    the same step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pending: tuple[dist.Work, torch.Tensor, str | None, str] | None = None

    def cast(self, problem: str | None, where: str) -> None:
        flag = torch.tensor([dist.get_rank() + 1 if problem else 0], device=self.device)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True), flag, problem, where)

    def outcome(self) -> str | None:
        """Why all ranks stop after the last vote, or None to go on."""
        if self.pending is None:
            return None
        work, flag, problem, where = self.pending
        self.pending = None
        work.wait()
        failed_rank = int(flag.item()) - 1
        if failed_rank < 0:
            return None
        return problem or f"rank {failed_rank} hit a non-finite or diverging training loss at {where}"


def train_ddp(model: nn.Module, splits: Splits, config: TrainConfig, dist_config: DistConfig | None = None,
              device: torch.device | None = None) -> DistResult:
    """Train ``model`` in place with DDP on this rank's shard; call it in every rank of an initialized group.

    The pieces are :mod:`nas.train`'s (step plan, seeded batches, optimizer and
    schedule, loss checks); validation accuracy is measured on rank 0 after
    every epoch. A non-finite or diverging loss on any rank stops every rank one
    step later (:class:`_StopVote`) with :attr:`TrainResult.failed` set.
    """
    dc = dist_config or DistConfig()
    device = device or torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    columns = as_tensors(splits.train)
    per_rank_batch, n_shard = config.batch_size // world, len(columns[0]) // world
    if per_rank_batch < 2:
        raise TrainError(f"a global batch of {config.batch_size} split over {world} processes leaves "
                         f"{per_rank_batch} per process; batch norm needs 2: use --batch-size >= {2 * world}.")
    local = replace(config, batch_size=per_rank_batch,
                    max_samples=None if config.max_samples is None else math.ceil(config.max_samples / world))
    plan = Plan(n_shard, local)
    shape = input_shape_of(model)
    model.to(device)
    val = splits.val if device.type == "cpu" else torch.utils.data.TensorDataset(*(t.to(device) for t in
                                                                                    as_tensors(splits.val)))
    # Buffers (batch-norm statistics) are synced once at the start, not before every forward pass; torch 2.13
    # renames broadcast_buffers (now deprecated) to forward_sync_buffers.
    no_sync: dict[str, Any] = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel).parameters else {"broadcast_buffers": False})
    ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                  bucket_cap_mb=dc.bucket_cap_mb, **no_sync)
    sent = register_hook(ddp, dc, plan.total_steps, config.seed)
    comm = CommStats(dc.comm_hook, world, "all_gather" if dc.comm_hook == "terngrad" else "all_reduce",
                     sum(p.numel() for p in model.parameters() if p.requires_grad) * 4)
    result = TrainResult(device=str(device))
    precision = Precision(device, config.amp)
    start = time.perf_counter()
    with _Threads(config.threads):
        torch.manual_seed(config.seed + rank)
        shared = torch.Generator().manual_seed(config.seed)  # the same on every rank: shards stay disjoint
        opt, sched = make_optimizer([p for p in model.parameters() if p.requires_grad], local, plan.total_steps)
        step, last = 0, 0 if sent is None else sent()
        vote = _StopVote(device)
        ddp.train()
        for epoch in range(plan.epochs):
            shard = torch.randperm(len(columns[0]), generator=shared)[rank::world][:n_shard]
            mine = tuple(c[shard].to(device) for c in columns)
            total, count = 0.0, 0
            for batch in batches(mine, plan, shared, min(plan.steps_per_epoch, plan.total_steps - step)):
                with precision.autocast():
                    loss = cross_entropy(ddp(fit_input(batch[0], shape) if shape else batch[0]), batch)
                result.failed = vote.outcome()
                if result.failed:
                    break
                vote.cast(loss_problem(loss, config, epoch, step), f"epoch {epoch}, step {step}")
                opt.zero_grad(set_to_none=True)
                precision.backward(loss)
                precision.step(opt)
                sched.step()
                step += 1
                if sent is None:
                    comm.per_step.append(comm.fp32_bytes_per_step)
                else:
                    comm.per_step.append(sent() - last)
                    last = sent()
                total += float(loss.detach()) * len(batch[0])
                count += len(batch[0])
            result.failed = result.failed or vote.outcome()
            result.samples += count * world
            result.epochs = epoch + 1
            if count:
                result.losses.append(total / count)  # this rank's shard
            if result.failed:
                break
            if rank == 0:
                result.history.append(evaluate(model, val))
        if rank == 0:
            result.val_accuracy = result.history[-1] if result.history and not result.failed else evaluate(model, val)
    result.seconds = time.perf_counter() - start
    return DistResult(result, comm, rank, world, dist.get_backend())
