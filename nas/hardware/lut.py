"""Measured look-up-table profiles: one entry per layer signature, calibrated on whole networks.

A *layer signature* is derived from the op list: the ops of one layer of the
built network (``layers.i``: conv + BN + activation units, the residual add) with
their kinds, channels, input size, kernel, stride and groups. Layers are timed as
whole modules, in the context they run in (fused BN/activation, residual add,
real input shapes), rather than op by op: isolated tiny ops are dominated by
dispatch overhead that the network does not pay per op.

A plain sum of layer times still misses per-network effects (the Python call
of the network itself, cache warmth between consecutive layers). A linear
calibration ``latency = intercept + slope * sum`` fitted on measured whole
networks (``nas hardware calibrate``) corrects it, one per input shape since both
effects depend on the size of the feature maps; ``nas hardware validate``
measures held-out networks to show how well it does.

File format: ``hardware/README.md``.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nas.errors import HardwareError, describe_validation_error
from nas.graph import Op, factorize_ops, layer_ops, ops
from nas.hardware._base import HardwareProfile
from nas.hardware._dirs import in_user_dir, is_builtin
from nas.hardware.machine import Machine, differences, mismatch_message, this_machine, warn_once
from nas.spec import ArchSpec, Layer

FORMAT = "nas-lut/1"


def group_name(op: Op) -> str:
    """The layer an op belongs to: ``layers.3``, ``extras.0``, ``heads.1``."""
    return op.name.split(".", 2)[0] + "." + op.name.split(".", 2)[1]


def shape_key(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def layer_groups(op_list: list[Op]) -> dict[str, list[Op]]:
    groups: dict[str, list[Op]] = {}
    for op in op_list:
        groups.setdefault(group_name(op), []).append(op)
    return groups


def layer_key(group: list[Op]) -> str:
    """The signature of one layer: its ops without names, e.g. ``conv:16:96:8x8:k1:s1:g1|bn:...``."""
    return "|".join(f"{o.kind}:{o.cin}:{o.cout}:{o.h}x{o.w}:k{o.kernel_text}:s{_stride_text(o)}:g{o.groups}"
                    for o in group)


def _stride_text(op: Op) -> str:
    return str(op.stride) if op.stride_w is None else f"{op.stride}x{op.stride_w}"


def layer_structure(group: list[Op]) -> str:
    """The signature with channel counts blanked: layers that interpolation may compare."""
    return "|".join(f"{o.kind}:{o.h}x{o.w}:k{o.kernel_text}:s{_stride_text(o)}:{'dw' if o.groups == o.cin > 1 else o.groups}"
                    for o in group)


class _Measured:
    """The measured layers of one structure, sorted by work, for :meth:`LutProfile._interpolate`: the
    nearest in log-work is found by bisection, as a search prices thousands of fresh layers (the same
    layer a linear scan with ``min`` finds: the first in table order among equally near ones)."""

    def __init__(self, entries: list[tuple[int, float]]) -> None:
        first: dict[int, tuple[int, float]] = {}  # work -> (table order, ms) of its first entry
        for order, (work, ms) in enumerate(entries):
            first.setdefault(work, (order, ms))
        self.works = sorted(first)
        self.logs = [math.log(w + 1) for w in self.works]
        self.first = first

    def nearest(self, work: int) -> tuple[int, float]:
        i = bisect.bisect_left(self.logs, math.log(work + 1))
        near = self.works[max(0, i - 1):i + 1]
        best = min(near, key=lambda w: (abs(math.log((w + 1) / (work + 1))), self.first[w][0]))
        return best, self.first[best][1]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_ms: Annotated[float, Field(gt=0)]  # the statistic predictions use
    median_ms: Annotated[float, Field(gt=0)]
    mean_ms: Annotated[float, Field(gt=0)]
    std_ms: Annotated[float, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    madds: Annotated[int, Field(ge=0)]
    structure: str


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intercept_ms: float
    slope: float
    networks: Annotated[int, Field(ge=2)]
    space: str
    fit: str = "least squares of measured end-to-end latency on the sum of layer times"


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    warmup: int
    rounds: int
    target_ms: float
    statistic: str = ("minimum over interleaved rounds of the mean time per call: interference from other "
                      "processes and neighbours only adds time, so the minimum is the reproducible figure")
    context: str = "each layer as one torch module (conv + BN + activation units, residual add), eval mode, inference_mode"


class Adaptation(BaseModel):
    """How a table measured on another machine was refitted to this one (``nas hardware calibrate --here``,
    :mod:`nas.hardware.refit`): every entry is ``terms["table_ms"] * ms + terms["madds"] * MAdds / 1e6 +
    terms["layers"]`` (the terms the model kept), plus ``intercept_ms`` per network."""

    model_config = ConfigDict(extra="forbid")

    from_device: str
    from_file: str
    model: str
    terms: dict[str, float]
    intercept_ms: float
    networks: Annotated[int, Field(ge=2)]
    seeds: list[int]
    space: str
    input: str
    loo_error: dict[str, float]  # leave-one-out mean |relative error| of each model tried
    seconds: float
    fit: str = ("least squares of relative error of whole networks measured here on the table's summed time "
                "(and MAdds and layer count); the model with the smallest leave-one-out error is kept")
    clock: str = "CPU time of the one torch thread (not inflated by a shared machine's neighbours), minimum over rounds"


class Section(BaseModel):
    """The entries of one more precision, measured with their own runtime (int8: onnxruntime)."""

    model_config = ConfigDict(extra="forbid")

    framework: str
    framework_version: str
    date: str
    method: Method
    calibrations: dict[str, Calibration] = {}
    entries: dict[str, Entry] = {}


class LutFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["nas-lut/1"]
    name: str
    device: str
    framework: str
    framework_version: str
    threads: Annotated[int, Field(ge=1)]
    batch: Annotated[int, Field(ge=1)]
    dtype: Literal["float32"]
    date: str
    method: Method
    spaces: dict[str, list[int]] = {}  # space name -> input shape measured
    calibrations: dict[str, Calibration] = {}  # by input shape, e.g. "3x32x32"
    entries: dict[str, Entry] = {}
    #: Entries of other precisions than ``dtype`` (a table without them is float32 only), e.g. ``int8``.
    precisions: dict[Literal["int8"], Section] = {}
    #: The machine the entries hold for (None: a table made before tables recorded it; ``device`` then).
    machine: Machine | None = None
    adapted: Adaptation | None = None


class Prediction(NamedTuple):
    ms: float  # calibrated when the profile has a calibration
    naive_ms: float  # plain sum of layer times
    layers: list[tuple[str, float]]  # (layer, ms) in execution order
    interpolated: list[str]  # layers whose time was interpolated across channel counts


class LutProfile(HardwareProfile):
    """A measured look-up table (``*.json`` in ``hardware/``)."""

    kind = "measured"

    def __init__(self, data: LutFile, path: str = "<memory>", precision: str = "float32") -> None:
        self.data = data
        self.name = data.name
        self.path = path
        self.precision = precision  # what the entries of ``data`` measure; other precisions: :meth:`view`
        self._views: dict[str, LutProfile] = {}
        self._by_structure: dict[str, _Measured] | None = None
        self._layer_ms: dict[tuple[Any, ...], tuple[float | None, tuple[int, ...]]] = {}
        self._layer_ms_of: tuple[int, int] = (0, 0)  # (id, size) of the entries the memo was filled from

    @classmethod
    def load(cls, path: Path) -> LutProfile:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
            raise HardwareError(f"{path}: cannot read latency table: {exc}") from None
        if isinstance(raw, dict) and raw.get("format") != FORMAT:
            raise HardwareError(f"{path}: format must be {FORMAT!r}, but got {raw.get('format')!r}.")
        try:
            profile = cls(LutFile.model_validate(raw), str(path))
        except ValidationError as exc:
            raise HardwareError(f"{path}: {describe_validation_error(exc)}") from None
        if profile.elsewhere():
            warn_once(str(Path(path).resolve()), profile.elsewhere())
        return profile

    def elsewhere(self) -> str:
        """Empty when the table was measured on this machine; else one line saying what differs and the
        command that refits it here."""
        d = self.data
        diffs = differences(d.machine, d.device, d.framework_version if d.framework == "torch" else None,
                            this_machine())
        if not diffs:
            return ""
        by_name = is_builtin(self.path) or in_user_dir(self.path)
        return mismatch_message(self.name if by_name else self.path, self.path, diffs,
                                f"{Path(self.path).stem if not self.path.startswith('<') else self.name}-here")

    def save(self, path: Path | None = None) -> Path:
        """Write atomically (temp file + rename): an interrupted write never leaves a broken table."""
        target = Path(path or self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(self.data.model_dump_json(indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        self.path = str(target)
        return target

    def view(self, precision: str) -> LutProfile:
        """The table of ``precision`` (``arch.precision``): this profile for ``dtype``, else a profile of the
        section's entries and calibrations, measured with its own runtime (int8: onnxruntime)."""
        if precision == self.precision:
            return self
        if precision not in self._views:
            section = self.data.precisions.get(precision)  # type: ignore[call-overload]
            if section is None:
                raise HardwareError(
                    f"profile {self.name!r} has no {precision} entries (its entries are {self.data.dtype}); measure "
                    f"them with `nas hardware build --space SPACE --name {self.name} --runtime onnxruntime "
                    f"--precision {precision}`.")
            fields = {f: getattr(section, f) for f in ("framework", "framework_version", "date", "method")}
            data = self.data.model_copy(update={**fields, "entries": section.entries, "precisions": {},
                                                "calibrations": section.calibrations})
            self._views[precision] = LutProfile(data, self.path, precision)
        return self._views[precision]

    def missing(self, arch: ArchSpec) -> list[str]:
        if arch.precision != self.precision:
            return self.view(arch.precision).missing(arch)
        return [key for key in (layer_key(g) for g in layer_groups(ops(arch)).values()) if key not in self.data.entries]

    def predict(self, arch: ArchSpec, *, interpolate: bool = False) -> Prediction:
        """Latency of ``arch`` with its per-layer breakdown.

        A layer missing from the table is an error naming the missing signatures
        and the command that measures them, unless ``interpolate`` is set: then its
        time is scaled by MAdds from the measured layer of the same structure
        (kinds, kernels, strides, input size) nearest in MAdds, or, for a factorized
        layer (``arch.lowrank``) whose structure the table lacks, from its dense layer,
        and reported in ``Prediction.interpolated``. The entries are those of
        ``arch.precision`` (:meth:`view`).
        """
        if arch.precision != self.precision:
            return self.view(arch.precision).predict(arch, interpolate=interpolate)
        layers: list[tuple[str, float]] = []
        missing: list[str] = []
        interpolated: list[str] = []
        dense = layer_groups(ops(replace(arch, lowrank=None))) if interpolate and arch.lowrank is not None else {}
        for name, group in layer_groups(ops(arch)).items():
            ms, exact = self._price(group, dense.get(name), interpolate)
            if ms is None:
                missing.append(layer_key(group))
                continue
            layers.append((name, ms))
            if not exact:
                interpolated.append(name)
        if missing:
            raise HardwareError(
                f"profile {self.name!r} has no entry for {len(missing)} layer(s) of this network, e.g. "
                f"{missing[0]!r}; {self.coverage()}, this network takes {shape_key(arch.input_shape)} with "
                f"{arch.num_classes} classes. {self.build_hint(arch)} (SPACE: the space this network comes from), "
                f"or allow interpolation across channel counts.")
        naive = sum(ms for _, ms in layers)
        cal = self.calibration_for(arch)
        return Prediction(cal.intercept_ms + cal.slope * naive if cal else naive, naive, layers, interpolated)

    def _flags(self) -> str:
        return "" if self.precision == self.data.dtype else f" --runtime onnxruntime --precision {self.precision}"

    def coverage(self) -> str:
        """What the table was built for, in words: its spaces with the input shape each was measured at."""
        spaces = ", ".join(f"{n} at {shape_key(tuple(s))}" for n, s in self.data.spaces.items()) or "none yet"
        return f"it was built for the spaces: {spaces}"

    def build_hint(self, arch: ArchSpec, space: str = "SPACE") -> str:
        """The command that measures the layers of ``arch`` (drawn from ``space``) into this table, at the
        network's own input shape and class count; into a new table of the user's when this one is built-in."""
        flags = f"{self._flags()} --input {shape_key(arch.input_shape)} --classes {arch.num_classes}"
        if is_builtin(self.path):
            return (f"Measure them on this machine into a table of your own with `nas hardware build --space {space} "
                    f"--name NAME{flags}` and name it in the experiment (profiles: [NAME])")
        where = "" if self.path.startswith("<") or in_user_dir(self.path) else f" --out {Path(self.path).parent}"
        name = Path(self.path).stem if where else self.name
        return f"Measure them with `nas hardware build --space {space} --name {name}{where}{flags}`"

    def calibration_for(self, arch: ArchSpec) -> Calibration | None:
        """The correction fitted at ``arch``'s input shape; None (plain sum) where there is none."""
        if arch.precision != self.precision:
            return self.view(arch.precision).calibration_for(arch)
        return self.data.calibrations.get(shape_key(arch.input_shape))

    def _interpolate(self, group: list[Op]) -> float | None:
        """The time of the measured layer of the same structure nearest in work, scaled by work: MAdds,
        or for layers without (pooling over a pruned channel count) the input channels."""
        if self._by_structure is None:
            by: dict[str, list[tuple[int, float]]] = {}
            for key, e in self.data.entries.items():
                work = e.madds or int(key.split(":", 2)[1])  # a layer without MAdds: its input channels
                by.setdefault(e.structure, []).append((work, e.min_ms))
            self._by_structure = {structure: _Measured(entries) for structure, entries in by.items()}
        measured = self._by_structure.get(layer_structure(group))
        work = sum(o.madds for o in group) or group[0].cin
        if measured is None:
            return None
        ref_work, ref_ms = measured.nearest(work)
        return ref_ms * (work + 1) / (ref_work + 1)

    def _from_dense(self, group: list[Op], dense: list[Op]) -> float | None:
        """A factorized layer the table lacks: its dense layer's time, scaled by MAdds (as :meth:`_interpolate`)."""
        entry = self.data.entries.get(layer_key(dense))
        dense_ms = entry.min_ms if entry is not None else self._interpolate(dense)
        if dense_ms is None:
            return None
        return dense_ms * (sum(o.madds for o in group) + 1) / (sum(o.madds for o in dense) + 1)

    def latency_ms(self, arch: ArchSpec) -> float:
        """:meth:`predict` with interpolation: compressed networks run layers the table may not hold
        (structured-pruned channel counts, factorized layers); a structure it has never measured is
        still an error.

        The search asks this for every candidate, so each layer's time is memoized per (layer,
        input shape, low rank), as :func:`nas.count` memoizes its counts; the sum is the same float
        :meth:`predict` gives."""
        if arch.precision != self.precision:
            return self.view(arch.precision).latency_ms(arch)
        if arch.detector is not None:  # heads read feature maps across layers: the whole op list
            return self.predict(arch, interpolate=True).ms
        if self._layer_ms_of != (id(self.data.entries), len(self.data.entries)):
            self._layer_ms, self._layer_ms_of = {}, (id(self.data.entries), len(self.data.entries))
        naive, shape = 0.0, arch.input_shape
        for layer in arch.layers:
            key = (layer, shape, arch.lowrank)
            if key not in self._layer_ms:
                self._layer_ms[key] = self._one_layer_ms(layer, shape, arch.lowrank)
            ms, shape = self._layer_ms[key]
            if ms is None:  # not priceable: predict() raises the full error
                return self.predict(arch, interpolate=True).ms
            naive += ms
        cal = self.calibration_for(arch)
        return cal.intercept_ms + cal.slope * naive if cal else naive

    def _one_layer_ms(self, layer: Layer, shape: tuple[int, ...], lowrank: float | None
                      ) -> tuple[float | None, tuple[int, ...]]:
        """(time or None, output shape) of one layer, as :meth:`predict` prices it with interpolation."""
        dense, out_shape = layer_ops(layer, "layers.0", shape)
        if lowrank is None:
            return self._price(dense, None, True)[0], out_shape
        return self._price(factorize_ops(dense, lowrank), dense, True)[0], out_shape

    def _price(self, group: list[Op], dense: list[Op] | None, interpolate: bool) -> tuple[float | None, bool]:
        """(time or None, whether it is a measured entry) of one layer's ops: the entry; else, with
        ``interpolate``, the same structure's nearest entry, or for a factorized layer its ``dense`` one."""
        entry = self.data.entries.get(layer_key(group))
        if entry is not None:
            return entry.min_ms, True
        estimate = self._interpolate(group) if interpolate else None
        if estimate is None and dense is not None:
            estimate = self._from_dense(group, dense)
        return estimate, False

    def provenance(self) -> dict[str, Any]:
        d = self.data
        # the machine the table was measured on; loaded on another, a run's report says so from run.json
        extra: dict[str, Any] = {"machine": d.machine.describe() if d.machine else d.device}
        if d.adapted is not None:
            extra["adapted_from"] = f"{d.adapted.from_device} ({d.adapted.model}, {d.adapted.networks} networks)"
        if self.elsewhere():
            extra["measured_elsewhere"] = self.elsewhere()
        return {"kind": "measured (latency look-up table)", "file": self.path, "device": d.device,
                "framework": f"{d.framework} {d.framework_version}", "threads": d.threads, "batch": d.batch,
                "dtype": d.dtype, "date": d.date, "entries": len(d.entries), "spaces": sorted(d.spaces),
                "calibrated_for": sorted(d.calibrations), "method": d.method.model_dump(),
                "precisions": {p: {"framework": f"{sec.framework} {sec.framework_version}", "entries": len(sec.entries),
                                   "calibrated_for": sorted(sec.calibrations)} for p, sec in d.precisions.items()},
                **extra}
