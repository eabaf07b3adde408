"""The machine a latency table was measured on, and whether this one is it.

A measured table's numbers hold for one CPU (its model and vector extensions: AVX2, AVX-512 and
VNNI change how fast a convolution runs) and one torch build. A table records the machine it was
measured on (:class:`Machine`); loading it elsewhere logs one warning per table and process
(logger ``nas.hardware``, which the ``nas`` command prints) naming the command that refits it here,
and the profile's provenance keeps the mismatch, so a run's report says it too.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

log = logging.getLogger("nas.hardware")
log.addHandler(logging.NullHandler())  # shown where an application asks (the nas command does), not by default

#: The CPU flags recorded (those of /proc/cpuinfo that change the speed of convolutions and GEMMs).
FLAGS = ("sse4_2", "fma", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "amx_tile", "asimd", "sve")
_warned: set[str] = set()


class Machine(BaseModel):
    """CPU model, its recorded flags (:data:`FLAGS` it has), logical cores and torch version."""

    model_config = ConfigDict(extra="forbid")

    cpu: str
    flags: list[str]
    cores: int
    torch: str

    def describe(self) -> str:
        flags = "/".join(f for f in self.flags if f.startswith(("avx", "amx", "sve", "asimd"))) or "no AVX"
        return f"{self.cpu} ({flags}, {self.cores} cores, torch {self.torch})"


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


@functools.lru_cache(maxsize=1)
def this_machine() -> Machine:
    model, flags = _cpuinfo()
    return Machine(cpu=model, flags=[f for f in FLAGS if f in flags], cores=os.cpu_count() or 1,
                   torch=torch.__version__)


def differences(recorded: Machine | None, device: str, torch_version: str | None, here: Machine) -> list[str]:
    """What differs between the machine a table was measured on and ``here``. A table made before tables
    recorded their machine has only its ``device`` (CPU model) and, for torch tables, the torch version."""
    if recorded is None:
        recorded = Machine(cpu=device, flags=here.flags, cores=here.cores, torch=torch_version or here.torch)
    out = []
    if recorded.cpu != here.cpu:
        out.append(f"CPU {recorded.cpu!r}, here {here.cpu!r}")
    if set(recorded.flags) != set(here.flags):
        gone, new = sorted(set(recorded.flags) - set(here.flags)), sorted(set(here.flags) - set(recorded.flags))
        out.append("CPU flags " + ", ".join([*(f"{f} missing here" for f in gone), *(f"{f} only here" for f in new)]))
    if recorded.torch != here.torch:
        out.append(f"torch {recorded.torch}, here {here.torch}")
    return out


def mismatch_message(ref: str, path: str, diffs: list[str], here_name: str) -> str:
    """One line: whose numbers these are, and the command that refits the table (``ref``: its name or path)
    to this machine as ``here_name``."""
    return (f"latency table {Path(path).stem!r} ({path}) was measured on another machine ({'; '.join(diffs)}): its "
            f"latencies describe that machine. Refit it to this one with `nas hardware calibrate {ref} --here --space "
            f"SPACE` (SPACE: the space you search), then name `{here_name}` in the experiment's profiles.")


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)
