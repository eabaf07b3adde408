"""Measuring latency with torch on this machine: layer tables, calibration, validation.

Protocol (the same for layers and whole networks): a fixed thread count, eval
mode under ``torch.inference_mode``, a warm-up, then ``rounds`` interleaved
rounds in which every item is timed once (a mean over enough calls to last
about ``target_ms``), in a freshly shuffled order each round so that drift and
background load spread over all items instead of biasing some. The statistic
kept is the minimum over rounds (interference from other processes or a noisy
host only ever adds time, so the minimum is what reproduces from run to run on
a shared machine); median, mean, spread (std) and count go into the table too.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nas.cost import count_ops
from nas.errors import HardwareError
from nas.graph import factorize_ops, layer_ops
from nas.hardware import ort
from nas.hardware.machine import this_machine
from nas.hardware.lut import (Calibration, Entry, LutFile, LutProfile, Method, Section, layer_key, layer_structure,
                              shape_key)
from nas.models import build_model
from nas.space import Space
from nas.spec import ArchSpec, Layer

WARMUP = 10


def device_name() -> str:
    return this_machine().cpu


#: What a sample is timed with: the wall clock, or the CPU time of the timing thread (``thread``), which a
#: process descheduled by its neighbours on a shared machine does not accrue; for one torch thread it is the
#: wall time the machine gives when the process has a core (``calibrate --here`` times with it).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


class Timer:
    """Times a module on a fixed input; calls per sample chosen so one sample lasts ~target_ms."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor, target_ms: float, clock: str = "wall") -> None:
        self.module, self.x, self.clock = module.eval(), x, CLOCKS[clock]
        with torch.inference_mode():
            for _ in range(WARMUP):
                module(x)
            start = time.perf_counter()
            module(x)
            once = (time.perf_counter() - start) * 1e3
        self.calls = max(1, min(200, round(target_ms / max(once, 1e-3))))

    def sample(self) -> float:
        with torch.inference_mode():
            start = self.clock()
            for _ in range(self.calls):
                self.module(self.x)
            return (self.clock() - start) * 1e3 / self.calls


def measure(items: Sequence[tuple[torch.nn.Module, torch.Tensor]], *, rounds: int, target_ms: float,
            seed: int = 0, progress: str | None = None, until: float | None = None, clock: str = "wall"
            ) -> list[list[float]]:
    """Interleaved timing of every (module, input); returns the per-round samples of each item (ms).
    ``until``: a ``time.monotonic()`` after which no further round starts (two rounds at least);
    ``clock``: one of :data:`CLOCKS`."""
    timers = [Timer(m, x, target_ms, clock) for m, x in items]
    samples: list[list[float]] = [[] for _ in items]
    rng = random.Random(seed)
    order = list(range(len(items)))
    with tqdm(total=rounds * len(items), desc=progress, unit="run", disable=progress is None, leave=False) as bar:
        for r in range(rounds):
            if until is not None and r >= 2 and time.monotonic() > until:
                break
            rng.shuffle(order)
            for i in order:
                samples[i].append(timers[i].sample())
                bar.update()
    return samples


def _layer_module(layer: Layer, shape: tuple[int, ...], batch: int, lowrank: float | None = None
                  ) -> tuple[torch.nn.Module, torch.Tensor]:
    """The layer's own module (``layers.0`` of a one-layer network, factorized at ``lowrank``):
    no wrapper calls timed."""
    torch.manual_seed(0)
    return build_model(ArchSpec(shape, (layer,), lowrank=lowrank)).layers[0], torch.randn(batch, *shape)


def _signatures(space: Space) -> Iterator[tuple[Layer, tuple[int, ...], float | None]]:
    """Every (layer, input shape, low-rank ratio) the space's networks run, dense and factorized."""
    ratios = sorted({r for r in space.config.compression.lowrank_ratio if r is not None})
    for layer, shape in sorted(space.layer_inputs(), key=repr):
        for ratio in (None, *ratios):
            yield layer, shape, ratio


def build_table(space: Space, name: str, path: Path, *, threads: int = 1, batch: int = 1, rounds: int = 11,
                target_ms: float = 1.0, chunk: int = 1024, log: Callable[[str], None] = print,
                runtime: str = "torch", precision: str = "float32") -> LutProfile:
    """Measure every layer signature ``space`` can produce into the table at ``path``, each layer
    dense and factorized at every low-rank ratio the space samples.

    Layers are measured ``chunk`` at a time, all of a chunk interleaved in every
    round, so that each layer's samples spread over the whole chunk's duration
    (tens of seconds): on a shared machine whose speed wanders over seconds, this
    is what made tables agree with whole networks (measured on ``mobilenetv2``:
    chunks of 300 layers gave 88% of held-out networks within +-10%, one chunk of
    all 852 layers 100%). Entries already in the file are kept (an interrupted
    build resumes where it stopped; the file is rewritten after every chunk). The table records the
    device, torch version, threads, batch and date; measuring into an existing
    table made with other settings is refused.

    ``runtime``/``precision``: ``torch``/``float32`` times torch modules into the table's
    entries; ``onnxruntime`` times each layer as an ONNX file in an ``InferenceSession``
    (:mod:`nas.hardware.ort`), ``float32`` into the entries of a new table, ``int8`` (quantized
    with onnxruntime) into the table's ``int8`` section, beside the float32 entries.
    """
    ort.check_runtime(runtime, precision)
    torch.set_num_threads(threads)
    version = ort.runtime_version(runtime)
    if path.exists():
        profile = LutProfile.load(path)
        d = profile.data
        if profile.elsewhere():
            raise HardwareError(f"{path} was measured on another machine; measure this one's into a table of its "
                                f"own (another --name).")
        d.machine = d.machine or this_machine()
        if (d.threads, d.batch) != (threads, batch):
            raise HardwareError(f"{path} was measured with threads={d.threads}, batch={d.batch}; this run has "
                                f"threads={threads}, batch={batch}. Use another --name, or the same settings.")
    else:
        profile = LutProfile(LutFile(
            format="nas-lut/1", name=name, device=device_name(), framework=runtime,
            framework_version=version, threads=threads, batch=batch, dtype="float32",
            date=datetime.now(timezone.utc).date().isoformat(),
            method=_method(runtime, rounds, target_ms), machine=this_machine()), str(path))
    if precision != "float32" and precision not in profile.data.precisions:
        profile.data.precisions[precision] = Section(  # type: ignore[index]
            framework=runtime, framework_version=version, date=datetime.now(timezone.utc).date().isoformat(),
            method=_method(runtime, rounds, target_ms))
    table = profile.view(precision).data
    if (table.framework, table.framework_version) != (runtime, version):
        raise HardwareError(f"{path}: its {precision} entries were measured with {table.framework} "
                            f"{table.framework_version}; this run uses {runtime} {version}. Use another --name.")
    with ort.scratch() as tmp:
        return _measure_layers(space, profile, table, Path(tmp), rounds=rounds, target_ms=target_ms, chunk=chunk,
                               log=log, precision=precision)


def _method(runtime: str, rounds: int, target_ms: float) -> Method:
    if runtime == "torch":
        return Method(warmup=WARMUP, rounds=rounds, target_ms=target_ms)
    return Method(warmup=WARMUP, rounds=rounds, target_ms=target_ms,
                  context="each layer as one ONNX file (torch.onnx.export; int8: onnxruntime quantize_static, QDQ, "
                          "per-channel s8 weights, s8 activations) in an onnxruntime InferenceSession, 1 inter-op "
                          "thread")


def _measure_layers(space: Space, profile: LutProfile, table: LutFile, tmp: Path, *, rounds: int, target_ms: float,
                    chunk: int, log: Callable[[str], None], precision: str) -> LutProfile:
    """Measure the layers of ``space`` that ``table`` (the profile's entries of ``precision``) lacks."""
    path, name, batch, threads = Path(profile.path), profile.name, table.batch, table.threads

    stems = itertools.count()

    def item(k: str) -> tuple[Any, Any]:
        layer, shape, ratio = todo[k][:3]
        if table.framework == "torch":
            return _layer_module(layer, shape, batch, ratio)
        return ort.layer_call(layer, shape, batch, precision, threads, tmp, f"l{next(stems)}", lowrank=ratio)

    todo: dict[str, tuple[Layer, tuple[int, ...], float | None, list[Any]]] = {}
    for layer, shape, ratio in _signatures(space):
        group = layer_ops(layer, "layers.0", shape)[0]
        group = group if ratio is None else factorize_ops(group, ratio)
        key = layer_key(group)
        if key not in table.entries:
            todo.setdefault(key, (layer, shape, ratio, group))
    total = len(todo)
    shape = list(space.input_shape)  # the same space at another input size: another record beside it
    known = profile.data.spaces.get(space.name, shape) == shape
    profile.data.spaces[space.name if known else f"{space.name}@{shape_key(space.input_shape)}"] = shape
    if not todo:
        log(f"{name}: all layer signatures of {space.name!r} are measured ({len(table.entries)} {precision} entries).")
        profile.save(path)
        return profile
    keys = list(todo)
    probe = keys[:: max(1, len(keys) // 8)][:8]
    start = time.perf_counter()
    probe_samples = measure([item(k) for k in probe], rounds=1, target_ms=target_ms)
    # The probe paid set-up, warm-up and one sample per item; each further round adds one sample,
    # which lasts target_ms or one call, whichever is longer.
    sample_s = statistics.fmean(max(target_ms, s[0]) for s in probe_samples) / 1e3
    per_item = (time.perf_counter() - start) / len(probe) + (rounds - 1) * sample_s
    log(f"{name}: measuring {total} layer signatures of {space.name!r} on {profile.data.device}, "
        f"{threads} thread(s), batch {batch}, {precision} with {table.framework}, {rounds} rounds: "
        f"about {_duration(per_item * total)}. "
        f"Interrupt at any time: measured entries are kept and the next run resumes.")
    with tqdm(total=total, desc=f"hardware build {name}", unit="layer") as bar:
        for i in range(0, total, chunk):
            part = keys[i:i + chunk]
            samples = measure([item(k) for k in part], rounds=rounds, target_ms=target_ms, seed=i)
            for key, s in zip(part, samples):
                group = todo[key][3]
                table.entries[key] = Entry(
                    min_ms=min(s), median_ms=statistics.median(s), mean_ms=statistics.fmean(s),
                    std_ms=statistics.stdev(s) if len(s) > 1 else 0.0, count=len(s),
                    madds=count_ops(group).madds, structure=layer_structure(group))
            profile.save(path)
            bar.update(len(part))
    return profile


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def measure_networks(archs: Iterable[ArchSpec], *, batch: int, rounds: int, target_ms: float, seed: int = 0,
                     progress: str | None = None, runtime: str = "torch", threads: int = 1,
                     until: float | None = None, clock: str = "wall") -> list[float]:
    """End-to-end times (ms, minimum over rounds) of whole networks, interleaved like the layer table;
    with ``runtime="onnxruntime"`` each network runs as an ONNX file at its ``precision`` (``threads``)."""
    archs = list(archs)
    with ort.scratch() as tmp:
        items: list[tuple[Any, Any]] = []
        if runtime == "onnxruntime":
            items = list(ort.network_calls(archs, batch, threads, Path(tmp)))
        for arch in archs if runtime == "torch" else ():
            torch.manual_seed(0)
            items.append((build_model(arch), torch.randn(batch, *arch.input_shape)))
        return [min(s) for s in measure(items, rounds=rounds, target_ms=target_ms, seed=seed, progress=progress,
                                        until=until, clock=clock)]


def onnx_latency(paths: Sequence[str | Path], input_shape: tuple[int, ...], *, batch: int = 1, threads: int = 1,
                 rounds: int = 21, target_ms: float = 20.0, seed: int = 0) -> list[float]:
    """Median over ``rounds`` interleaved rounds of the mean time per call (ms) of each ONNX file
    (interleaved as :func:`measure` does, so the files compared see the same background load)."""
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
    samples = measure([(ort.OrtCall(p, threads), x) for p in paths], rounds=rounds, target_ms=target_ms, seed=seed)
    return [float(np.median(s)) for s in samples]


def _networks(profile: LutProfile, space: Space, n: int, seed: int, precision: str
              ) -> tuple[LutProfile, list[ArchSpec], dict[str, Any]]:
    """(the table of ``precision``, ``n`` random networks of ``space`` at that precision, how to measure them)."""
    table = profile.view(precision)
    torch.set_num_threads(profile.data.threads)
    archs = [replace(space.random(seed + i).arch, precision=precision) for i in range(n)]
    how = {"batch": profile.data.batch, "target_ms": table.data.method.target_ms, "runtime": table.data.framework,
           "threads": profile.data.threads}
    return table, archs, how


def calibrate(profile: LutProfile, space: Space, n: int = 30, *, seed: int = 10_000, rounds: int = 11,
              precision: str = "float32") -> dict[str, Calibration]:
    """Fit ``measured = intercept + slope * sum of layer times`` on ``n`` random networks
    (seeds ``seed ..``; validation uses other seeds), one fit per input shape among
    them (LeNet's MLPs and convnets differ), and store the fits in the profile (in the
    entries of ``precision``, measured with their runtime)."""
    if n < 2:
        raise HardwareError(f"calibration needs at least 2 networks, but got n={n}.")
    table, archs, how = _networks(profile, space, n, seed, precision)
    naive = np.array([profile.predict(a).naive_ms for a in archs])
    measured = np.array(measure_networks(archs, rounds=rounds, progress="calibrate", **how))
    fits: dict[str, Calibration] = {}
    for key in sorted({shape_key(a.input_shape) for a in archs}):
        pick = np.array([shape_key(a.input_shape) == key for a in archs])
        if pick.sum() < 2:
            continue
        design = np.stack([np.ones(pick.sum()), naive[pick]], axis=1)
        (intercept, slope), *_ = np.linalg.lstsq(design, measured[pick], rcond=None)
        fits[key] = Calibration(intercept_ms=float(intercept), slope=float(slope), networks=int(pick.sum()),
                                space=space.name)
    table.data.calibrations.update(fits)
    profile.save()
    return fits


def validate(profile: LutProfile, space: Space, n: int = 50, *, seed: int = 20_000, rounds: int = 11,
             precision: str = "float32") -> dict[str, Any]:
    """Measure ``n`` held-out networks end to end, twice, and compare with the profile.

    Returns the share within +-10%, MAPE and Spearman rank correlation for the
    calibrated prediction and for the naive sum, and the noise floor: how much
    the same network's two measurements differ (median absolute % difference).
    """
    from scipy.stats import spearmanr

    _, archs, how = _networks(profile, space, n, seed, precision)
    predictions = [profile.predict(a) for a in archs]
    first = np.array(measure_networks(archs, rounds=rounds, seed=1, progress="validate 1/2", **how))
    second = np.array(measure_networks(archs, rounds=rounds, seed=2, progress="validate 2/2", **how))
    measured = (first + second) / 2

    def scores(predicted: np.ndarray) -> dict[str, float]:
        error = (predicted - measured) / measured
        return {"within_10pct": float(np.mean(np.abs(error) <= 0.10)),
                "mape": float(np.mean(np.abs(error))),
                "spearman": float(spearmanr(predicted, measured).statistic)}

    return {
        "profile": profile.name, "space": space.name, "precision": precision, "networks": n, "seeds": [seed, seed + n - 1],
        "calibrated": scores(np.array([p.ms for p in predictions]))
        if all(profile.calibration_for(a) for a in archs) else None,
        "naive_sum": scores(np.array([p.naive_ms for p in predictions])),
        "noise_floor_median_pct": float(np.median(np.abs(first - second) / measured) * 100),
        "measured_ms": measured.round(4).tolist(),
        "predicted_ms": [round(p.ms, 4) for p in predictions],
        "naive_ms": [round(p.naive_ms, 4) for p in predictions],
    }
