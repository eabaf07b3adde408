"""An example board: 2 GMAC/s and 10 us per conv/linear op (a made-up device)."""

from __future__ import annotations

from typing import Any

import nas
from nas.hardware import HardwareProfile


class ExampleBoard(HardwareProfile):
    name = "example-board"
    kind = "model-based"

    def latency_ms(self, arch: nas.ArchSpec) -> float:
        op_list = nas.ops(arch)
        weighted = sum(1 for op in op_list if op.kind in ("conv", "linear"))
        return float(sum(op.madds for op in op_list) / 2e9 * 1e3 + weighted * 0.01)

    def provenance(self) -> dict[str, Any]:
        return {"kind": "model-based", "device": "example board", "peak": "2 GMAC/s (made up)"}


def not_a_profile() -> int:
    return 42  # neither a profile nor a profile file: nas must say so, naming this plugin
