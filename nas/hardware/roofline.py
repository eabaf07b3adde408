"""Analytical profiles for devices no one can measure here: a roofline per operator.

Each op costs ``max(MAdds / peak, bytes moved / bandwidth)``; every conv and
linear op adds a fixed launch overhead. Batch norm and activations are taken as
fused into the preceding conv (as inference runtimes do) and cost nothing;
residual adds and pooling are memory-bound. The numbers come from the device's
published specifications, cited in the file, so predictions are labelled
model-based: good for ranking candidates, not for absolute guarantees.

An int8 network (``arch.precision == "int8"``) moves one byte per weight and
activation, and runs at ``int8_peak_gmacs`` where the profile states it (else at
``peak_gmacs``: the device's int8 rate is not claimed). A profile whose ``dtype``
is already ``int8`` prices every network as int8, as it says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nas.errors import HardwareError, describe_validation_error
from nas.graph import Op, ops
from nas.hardware._base import HardwareProfile
from nas.spec import ArchSpec


class RooflineFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["nas-roofline/1"]
    name: str
    device: str
    peak_gmacs: Annotated[float, Field(gt=0)]  # multiply-adds per second, in 1e9, for the dtype below
    bandwidth_gbps: Annotated[float, Field(gt=0)]  # sustained memory bandwidth, GB/s
    overhead_us: Annotated[float, Field(ge=0)] = 0.0  # per conv/linear op
    dtype: Literal["float32", "float16", "int8"] = "float32"
    #: int8 multiply-adds per second (1e9) for networks that run in int8, where the device's figure is known
    int8_peak_gmacs: Annotated[float, Field(gt=0)] | None = None
    threads: Annotated[int, Field(ge=1)] = 1
    sources: Annotated[list[str], Field(min_length=1)]  # where each figure comes from
    notes: str = ""


BYTES = {"float32": 4, "float16": 2, "int8": 1}


class RooflineProfile(HardwareProfile):
    kind = "model-based"

    def __init__(self, spec: RooflineFile, path: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path

    @classmethod
    def load(cls, path: Path) -> RooflineProfile:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls(RooflineFile.model_validate(data), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise HardwareError(f"{path}: cannot read roofline profile: {exc}") from None
        except yaml.YAMLError as exc:  # one line: where, and what the parser found
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise HardwareError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}.") from None
        except ValidationError as exc:
            raise HardwareError(f"{path}: {describe_validation_error(exc)}") from None

    def op_ms(self, op: Op, precision: str = "float32") -> float:
        """Roofline time of one op in milliseconds (0 for ops fused into a conv), in a network of ``precision``."""
        if op.kind in ("bn", "relu", "relu6", "flatten"):
            return 0.0
        int8 = precision == "int8"
        size = BYTES["int8"] if int8 else BYTES[self.spec.dtype]
        peak = self.spec.int8_peak_gmacs if int8 and self.spec.int8_peak_gmacs else self.spec.peak_gmacs
        out = 1
        for d in op.out_shape:
            out *= d
        moved = (op.cin * op.h * op.w + out + op.weight_count) * size
        compute = op.madds / (peak * 1e9)
        memory = moved / (self.spec.bandwidth_gbps * 1e9)
        overhead = self.spec.overhead_us * 1e-6 if op.kind in ("conv", "linear") else 0.0
        return 1e3 * (max(compute, memory) + overhead)

    def latency_ms(self, arch: ArchSpec) -> float:
        return sum(self.op_ms(op, arch.precision) for op in ops(arch))

    def provenance(self) -> dict[str, Any]:
        return {"kind": "model-based (roofline)", "file": self.path, **self.spec.model_dump(exclude={"format", "name"})}
