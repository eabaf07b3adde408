"""``nas finetune --nproc N`` (and under torchrun): the command's side of data-parallel fine-tuning.

The library side (process groups, DDP with TernGrad and other communication hooks, spawning ranks) is
:mod:`nas.distributed`; here are the options, their checks and the rerun of the command in every rank.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch.distributed as dist
from torch import nn

from nas.data import Splits
from nas.device import describe
from nas.distributed import COMM_HOOKS, DistConfig, backend_for, env_int, launch, launched, process_group, train_ddp
from nas.errors import TrainError
from nas.terngrad import DEFAULT_CLIP
from nas.train import TrainConfig, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``nas finetune`` options for data-parallel training."""
    g = parser.add_argument_group("distributed (torch.distributed data parallel)")
    g.add_argument("--nproc", type=int, default=None,
                   help="data-parallel processes on this machine (gloo on the CPU; NCCL with --device cuda, or "
                        "auto where every process has a GPU); --batch-size is the global batch and --threads the "
                        "total; under torchrun leave it out")
    g.add_argument("--comm-hook", choices=COMM_HOOKS, default="allreduce",
                   help="how processes exchange gradients: DDP's fp32 all-reduce, PyTorch's fp16 or PowerSGD hooks, "
                        "or TernGrad (2 bits per element) (default: %(default)s)")
    g.add_argument("--terngrad-clip", type=float, default=DEFAULT_CLIP,
                   help="TernGrad clips gradients at this many standard deviations; 0 turns clipping off "
                        "(default: %(default)s)")


def wants_distributed(args: argparse.Namespace) -> bool:
    """Whether ``nas finetune`` runs data-parallel: ``--nproc`` > 1, or started by torchrun.

    ``--comm-hook`` other than ``allreduce`` with one process is refused: there
    is nothing to communicate, so the setting would silently do nothing.
    """
    if launched():
        world = env_int("WORLD_SIZE")
        if args.nproc is not None and args.nproc != world:
            raise TrainError(f"--nproc {args.nproc} disagrees with torchrun's WORLD_SIZE={world}; leave --nproc "
                             f"out when torchrun starts the processes.")
        return True
    if args.nproc is not None and args.nproc < 1:
        raise TrainError(f"--nproc must be >= 1, but got {args.nproc}.")
    if (args.nproc or 1) == 1:
        if args.comm_hook != "allreduce":
            raise TrainError(f"--comm-hook {args.comm_hook} compresses what processes exchange, and one process "
                             f"exchanges nothing: add --nproc 2 (or more), or start with torchrun.")
        return False
    return True


def _rerun(args: argparse.Namespace) -> int:
    code: int = args.run(args)  # the same command again, now inside a rank (launched() is true)
    return code


def finetune_distributed(args: argparse.Namespace, model: nn.Module, candidate: Any, splits: Splits,
                         config: TrainConfig, finish: Callable[..., int]) -> int:
    """``nas finetune`` when :func:`wants_distributed`: spawn ``--nproc`` ranks that rerun the command, or,
    inside a rank, train with DDP; rank 0 reports and saves through ``finish(args, model, candidate, splits,
    summary)``."""
    if args.teacher is not None:
        raise TrainError("--teacher is not supported with --nproc or torchrun yet: distil in one process.")
    if getattr(args, "codistill", None) is not None:
        raise TrainError("--codistill trains its models together in one process: leave out --nproc/torchrun.")
    if args.compress:
        raise TrainError("--compress is not supported with --nproc or torchrun: compress the written checkpoint "
                         "afterwards with `nas compress OUT`.")
    dc = DistConfig(comm_hook=args.comm_hook, terngrad_clip=args.terngrad_clip or None)
    if not launched():
        if config.batch_size // args.nproc < 2:
            raise TrainError(f"--batch-size {config.batch_size} is the global batch; split over {args.nproc} "
                             f"processes it leaves under 2 per process: use --batch-size >= {2 * args.nproc}.")
        backend_for(args.device, args.nproc)  # a GPU per process when --device asks for them: said here, once
        child = copy.copy(args)
        child.threads = max(1, args.threads // args.nproc)  # --threads is the total over the local processes
        return launch(_rerun, args.nproc, child)
    with process_group(args.device) as device:
        rank = dist.get_rank()
        before = evaluate(model, splits.val) if rank == 0 else None
        out = train_ddp(model, splits, config, dc, device)
        if rank != 0:
            return 0
        model.cpu()
        summary = {"command": "finetune", "init": str(args.init) if args.init else None, "val_before": before,
                   "device": describe(device), "amp": config.amp and device.type == "cuda",
                   "val_accuracy": out.run.val_accuracy, "history": out.run.history, "failed": out.run.failed,
                   "distributed": {"backend": out.backend, **out.comm.summary(),
                                   **({"terngrad": {k: v for k, v in asdict(dc).items() if k.startswith("terngrad")}}
                                      if dc.comm_hook == "terngrad" else {})}}
        return finish(args, model, candidate, splits, summary)
