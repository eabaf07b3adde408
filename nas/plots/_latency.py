"""Latency pictures: how well a profile predicts (``nas hardware validate --json``) and where a
candidate's time goes, layer by layer (and op by op where the profile prices single ops)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import NasError
from nas.plots._style import FRONT, GREY, new_figure, save, style

if TYPE_CHECKING:
    from nas.hardware import HardwareProfile
    from nas.spec import ArchSpec

VALIDATION_KEYS = ("measured_ms", "predicted_ms", "naive_ms")


def read_validation(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The result of ``nas hardware validate PROFILE --space S --json FILE`` (a dict or the file)."""
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise NasError(f"cannot read validation result {str(source)!r}: {exc}; write one with "
                           f"`nas hardware validate PROFILE --space SPACE --json FILE`.") from None
    missing = [k for k in VALIDATION_KEYS if not isinstance(data.get(k) if isinstance(data, dict) else None, list)]
    if missing:
        raise NasError(f"{source if not isinstance(source, dict) else 'the validation result'} lacks {missing}: "
                       f"is it the --json output of `nas hardware validate`?")
    if not data["measured_ms"]:
        raise NasError("the validation result measured no networks: nothing to plot.")
    return data


def plot_latency_validation(source: str | Path | dict[str, Any], path: str | Path) -> Path:
    """Predicted against measured latency of held-out networks, with the +-10% band."""
    data = read_validation(source)
    measured = np.asarray(data["measured_ms"], dtype=float)
    series = [("naive sum of layer times", np.asarray(data["naive_ms"], dtype=float), data.get("naive_sum"), GREY)]
    if data.get("calibrated"):
        series.append(("calibrated prediction", np.asarray(data["predicted_ms"], dtype=float), data["calibrated"],
                       FRONT))
    every = np.concatenate([measured] + [s[1] for s in series])
    lo, hi = float(every.min()) * 0.85, float(every.max()) * 1.15
    with style():
        fig = new_figure(7.0, 6.0)
        ax = fig.add_subplot()
        line = np.geomspace(lo, hi, 50)
        ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, lw=0, label="within ±10%")
        ax.plot(line, line, color="tab:green", lw=1.0, label="prediction = measurement")
        for label, values, scores, color in series:
            if scores:
                label += (f": {100 * scores['within_10pct']:.0f}% within ±10%, MAPE {100 * scores['mape']:.1f}%, "
                          f"Spearman {scores['spearman']:.3f}")
            hollow = color == GREY
            ax.scatter(measured, values, s=22, label=label, zorder=3, facecolors="none" if hollow else color,
                       edgecolors=color, linewidths=1.0)
        if hi / lo >= 30:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        noise = data.get("noise_floor_median_pct")
        noise_text = f"; noise floor {noise:.1f}% (same network measured twice)" if noise is not None else ""
        ax.set_title(f"Profile {data.get('profile', '?')!r} on {data.get('networks', len(measured))} held-out "
                     f"networks of {data.get('space', '?')!r}\n{noise_text.removeprefix('; ')}", fontsize=9)
        fig.legend(loc="outside lower center", fontsize=7.5, ncol=1, frameon=False)
        return save(fig, path)


def _describe(layer: Any) -> str:
    from nas.spec import Conv, GlobalAvgPool, InvertedResidual, Linear, MaxPool

    if isinstance(layer, InvertedResidual):
        conv = {"depthwise": "dw", "grouped": f"g{layer.groups}", "full": "full"}.get(layer.conv, layer.conv)
        return f"block k{layer.kernel} e{layer.expansion:g} {conv} ->{layer.out}" + (" s2" if layer.stride > 1 else "")
    if isinstance(layer, Conv):
        return f"conv {layer.kernel}x{layer.kernel} ->{layer.out}" + (f" s{layer.stride}" if layer.stride > 1 else "")
    if isinstance(layer, Linear):
        return f"linear ->{layer.out}"
    if isinstance(layer, GlobalAvgPool):
        return "global avg pool"
    if isinstance(layer, MaxPool):
        return f"max pool {layer.kernel}"
    return str(getattr(layer, "type", type(layer).__name__))


def layer_breakdown(profile: HardwareProfile, arch: ArchSpec) -> tuple[list[str], dict[str, np.ndarray], float, str]:
    """Per-layer times ``(names, {part: ms per layer}, total ms, note)``.

    A measured table times whole layers (conv + batch norm + activation as one module),
    so its only part is ``layer``; a profile that prices single ops (``op_ms``, the
    roofline models) is split by operator kind.
    """
    from nas.graph import ops
    from nas.hardware.lut import LutProfile, layer_groups

    layers = {f"layers.{i}": _describe(layer) for i, layer in enumerate(arch.layers)}
    if isinstance(profile, LutProfile):
        pred = profile.predict(arch, interpolate=True)
        names = [f"{name}  {layers.get(name, '')}".rstrip() for name, _ in pred.layers]
        parts = {"layer (conv + BN + activation timed together)": np.array([ms for _, ms in pred.layers])}
        note = (f"the table times whole layers; sum {pred.naive_ms:.3f} ms, calibrated whole-network "
                f"prediction {pred.ms:.3f} ms")
        if pred.interpolated:
            note += f"; {len(pred.interpolated)} layer(s) interpolated across channel counts"
        return names, parts, pred.ms, note
    op_ms = getattr(profile, "op_ms", None)
    if op_ms is None:
        raise NasError(f"profile {profile.name!r} ({type(profile).__name__}) gives one number per network: no "
                       f"per-layer breakdown; use a measured table (e.g. reference-cpu) or a roofline profile.")
    groups = layer_groups(ops(arch))
    kinds = sorted({op.kind for group in groups.values() for op in group})
    parts = {k: np.zeros(len(groups)) for k in kinds}
    for i, group in enumerate(groups.values()):
        for op in group:
            parts[op.kind][i] += op_ms(op)
    parts = {k: v for k, v in parts.items() if v.any()}
    names = [f"{name}  {layers.get(name, '')}".rstrip() for name in groups]
    total = float(sum(v.sum() for v in parts.values()))
    return names, parts, total, f"sum of operator times {total:.3f} ms (roofline model)"


def plot_latency_breakdown(profile: HardwareProfile, arch: ArchSpec, path: str | Path, *, label: str = "") -> Path:
    """Horizontal bars: where one candidate's predicted time goes on ``profile``."""
    import textwrap

    names, parts, total, note = layer_breakdown(profile, arch)
    who = f" of {label}" if label else ""
    title = textwrap.fill(f"Latency{who} on {profile.name!r} ({profile.kind}), layer by layer", 100) + "\n" + \
        textwrap.fill(note, 100)
    with style():
        fig = new_figure(7.0, 1.3 + 0.16 * title.count("\n") + 0.24 * len(names))
        ax = fig.add_subplot()
        y = np.arange(len(names))
        left = np.zeros(len(names))
        for i, (kind, ms) in enumerate(parts.items()):
            ax.barh(y, ms, left=left, height=0.7, color=f"C{i}", label=kind)
            left += ms
        for yi, ms in zip(y.tolist(), left.tolist()):
            ax.text(ms, yi, f" {ms:.3f}", va="center", fontsize=7)
        ax.set_yticks(y, names, fontsize=7.5)
        ax.invert_yaxis()
        ax.set_xlim(0, float(left.max()) * 1.18 if len(left) else 1)
        ax.set_xlabel("predicted time (ms), batch 1")
        ax.grid(axis="y", visible=False)
        fig.suptitle(title, fontsize=9, x=0.01, ha="left")
        if len(parts) > 1:
            ax.legend(loc="lower right", fontsize=7.5)
        return save(fig, path)
