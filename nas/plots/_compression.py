"""Compression pictures in the style of Deep Compression (Han et al. 2016).

- :func:`compression_tradeoff` / :func:`plot_compression_tradeoff`: accuracy against
  model size for pruning only, quantization (k-means weight sharing) only, both, and low-rank
  factorization (their Figure 6), with or without retraining after each stage; the size is
  the container file's.
- :func:`plot_weight_distribution`: one layer's weights before and after pruning, with the
  k-means codebook's centroids on them (their Figures 4-5).
- :func:`layer_table`: the per-layer table (their Tables 2-5) from :func:`nas.cost.size_report`.

The models are compressed with :func:`nas.compress.apply_compression` and measured by
encoding them into the container (:func:`nas.compress.encode`), the same code ``nas compress``
uses to write its file; :func:`nas.size_bits`'s estimate is kept beside it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nas.errors import NasError
from nas.plots._style import FRONT, GREY, SECOND, new_figure, save, style

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from matplotlib.ticker import Formatter
    from torch import nn

    from nas.spec import ArchSpec, CompressionSpec

SPARSITIES = (0.2, 0.4, 0.6, 0.8, 0.9)
BITS = (8, 5, 4, 3, 2)
#: Fractions of the full rank for the low-rank line (SVD for linear layers, two-component for convs).
RANKS = (0.5, 0.25, 0.1)


def layer_table(arch: ArchSpec, compression: CompressionSpec) -> pd.DataFrame:
    """Deep Compression's per-layer table: weights, % kept, bits per weight and per index for
    P+Q and P+Q+H (Huffman estimate), and the compression rate (dense 32-bit over stored), plus
    a ``total`` row."""
    import pandas as pd

    from nas.cost import size_report

    rows = []
    for s in size_report(arch, compression):
        rows.append({"layer": s.name, "kind": s.kind, "weights": s.weights,
                     "kept %": 100 * s.kept / max(s.weights, 1),
                     "weight bits P+Q": s.value_bits, "weight bits P+Q+H": s.value_entropy,
                     "index bits P+Q": s.index_bits or np.nan,
                     "index bits P+Q+H": s.index_entropy if s.index_bits else np.nan,
                     "rate P+Q": s.dense_bits / max(s.bits_pq, 1), "rate P+Q+H": s.dense_bits / max(s.bits_pqh, 1),
                     "_pq": s.bits_pq, "_pqh": s.bits_pqh, "_dense": s.dense_bits, "_kept": s.kept})
    df = pd.DataFrame(rows)
    if len(df):
        total = {"layer": "total", "kind": "", "weights": int(df["weights"].sum()),
                 "kept %": 100 * df["_kept"].sum() / max(df["weights"].sum(), 1),
                 "rate P+Q": df["_dense"].sum() / df["_pq"].sum(), "rate P+Q+H": df["_dense"].sum() / df["_pqh"].sum()}
        df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    return df.drop(columns=["_pq", "_pqh", "_dense", "_kept"])


def _dense_bits(arch: ArchSpec) -> int:
    from nas.cost import count

    return 32 * count(arch).params


def compression_tradeoff(model: nn.Module, arch: ArchSpec, evaluate: Callable[[nn.Module], float], *,
                         sparsities: Sequence[float] = SPARSITIES, bits: Sequence[int] = BITS,
                         ranks: Sequence[float] = (), retrain: Callable[[nn.Module, str], object] | None = None,
                         seed: int = 0) -> pd.DataFrame:
    """Accuracy and size of ``model`` pruned only, weight-shared only, both, and factorized.

    ``evaluate(model) -> accuracy`` (a fraction) is called once per setting and once on the
    model as given. Pruning prunes conv and linear layers to the same sparsity; "both" pairs
    the sparsities with the bit widths from least to most aggressive; ``ranks`` (fractions of
    the full rank, none by default) add a "low-rank" line. ``retrain(model, stage)``,
    when given, fine-tunes after each stage (masks and codebook assignments stay fixed, see
    :func:`nas.compress.apply_compression`); without it the figures show what each knob costs
    before any recovery. ``file bytes`` is the size of the container file that ``nas compress
    --no-huffman --out`` writes for the same model and spec (Deep Compression's P+Q, measured)
    and ``size %`` is that as a share of the dense 32-bit parameters; ``estimate %`` is
    :func:`nas.size_bits`'s. Returns rows ``method, setting, file bytes, size %, estimate %,
    accuracy``; the first row is the uncompressed model (100%).
    """
    import pandas as pd

    from nas.compress import apply_compression, encode
    from nas.cost import size_bits
    from nas.spec import CompressionSpec

    dense = _dense_bits(arch)
    rows = [{"method": "uncompressed", "setting": "32-bit float", "file bytes": encode(model)[1].file_bytes,
             "size %": 100.0, "estimate %": 100.0, "accuracy": float(evaluate(model))}]
    plans: list[tuple[str, str, CompressionSpec]] = []
    plans += [("pruning only", f"{s:.0%} pruned", CompressionSpec(sparsity_conv=s, sparsity_linear=s, huffman=False))
              for s in sparsities]
    plans += [("quantization only", f"{b}-bit", CompressionSpec(codebook_bits=b, huffman=False)) for b in bits]
    plans += [("pruning + quantization", f"{s:.0%} pruned, {b}-bit",
               CompressionSpec(sparsity_conv=s, sparsity_linear=s, codebook_bits=b, huffman=False))
              for s, b in zip(sorted(sparsities), sorted(bits, reverse=True))]
    plans += [("low-rank", f"{r:g} of full rank", CompressionSpec(lowrank_ratio=r, huffman=False)) for r in ranks]
    for method, setting, spec in plans:
        compressed = apply_compression(model, spec, retrain=retrain, seed=seed)
        compressed.eval()
        file_bytes = encode(compressed, huffman_coding=False)[1].file_bytes
        rows.append({"method": method, "setting": setting, "file bytes": file_bytes,
                     "size %": 100 * 8 * file_bytes / dense, "estimate %": 100 * size_bits(arch, spec) / dense,
                     "accuracy": float(evaluate(compressed))})
    return pd.DataFrame(rows)


def plot_compression_tradeoff(table: pd.DataFrame, path: str | Path, *, retrained: bool = False,
                              title: str = "", log_size: bool = False, floor: float | None = None) -> Path:
    """Accuracy change against model size for each method (Deep Compression, Figure 6); ``log_size``
    draws the size on a log axis (the settings that matter sit at a few percent); changes below
    ``floor`` points are drawn on it as open markers, so that one collapse does not flatten the rest."""
    base = table[table["method"] == "uncompressed"]
    if len(base) == 0 or len(table) < 2:
        raise NasError("the trade-off table needs the uncompressed row and at least one compressed setting.")
    baseline = float(base["accuracy"].iloc[0])
    styles = {"pruning only": (GREY, "s"), "quantization only": (SECOND, "^"), "pruning + quantization": (FRONT, "o"),
              "low-rank": ("tab:green", "D")}
    with style():
        fig = new_figure(7.0, 4.6)
        ax = fig.add_subplot()
        for method, group in table[table["method"] != "uncompressed"].groupby("method", sort=False):
            color, marker = styles.get(str(method), ("C4", "D"))
            group = group.sort_values("size %")
            change = 100 * (group["accuracy"] - baseline)
            shown = change if floor is None else change.clip(lower=floor)
            ax.plot(group["size %"], shown, marker=marker, color=color, lw=1.5, ms=5, label=str(method))
            if floor is not None and (change < floor).any():
                below = change < floor
                ax.plot(group["size %"][below], shown[below], ls="none", marker=marker, ms=7, mfc="white",
                        color=color)
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
        if log_size:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, None)
        ax.xaxis.set_major_formatter(_percent_formatter())
        ax.set_xlabel("model size after compression (container file, % of the 32-bit dense parameters)")
        ax.set_ylabel("accuracy change (percentage points)" + ("" if floor is None else
                                                              f"; open markers: below {floor:g}"))
        how = "with retraining after each stage" if retrained else "without retraining"
        ax.set_title(title or f"Accuracy against size, {how} (uncompressed: {100 * baseline:.1f}%)", fontsize=9.5)
        fig.legend(loc="outside lower center", ncol=4, frameon=False)
        return save(fig, path)


def _percent_formatter() -> Formatter:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}%")


def _weight(module: nn.Module) -> torch.Tensor:
    weight: torch.Tensor = module.weight  # type: ignore[assignment]  # conv/linear: always a tensor
    return weight


def _weight_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    from nas.compress.pruning import weight_layers

    named = list(weight_layers(model))
    if not named:
        raise NasError("the model has no conv or linear layer: no weights to draw.")
    if layer is None:
        return max(named, key=lambda nm: _weight(nm[1]).numel())
    for name, module in named:
        if name == layer:
            return name, module
    raise NasError(f"no conv/linear layer {layer!r}; the model has {[n for n, _ in named]}.")


def plot_weight_distribution(model: nn.Module, path: str | Path, *, sparsity: float | Mapping[str, float] = 0.75,
                             bits: int = 4, layer: str | None = None, seed: int = 0) -> Path:
    """One layer's weight histogram before and after magnitude pruning, with the k-means
    codebook (``2**bits`` centroids, linear initialisation) drawn on the pruned weights.
    ``sparsity`` is one fraction, or one per layer kind (``{"conv": 0.5, "linear": 0.9}``, as
    a CompressionSpec prunes); the layer is pruned at its own kind's. The title gives the
    fraction of its weights really pruned. ``layer`` defaults to the layer with the most weights."""
    from nas.compress.pruning import magnitude_prune, masks
    from nas.compress.sharing import kmeans_codebook

    name, module = _weight_layer(model, layer)
    kind = "conv" if _weight(module).dim() > 2 else "linear"  # as CompressionSpec's sparsity_conv / _linear
    own = float(sparsity) if isinstance(sparsity, (int, float)) else float(sparsity.get(kind, 0.0))
    before = _weight(module).detach().flatten().cpu().numpy()
    if own > 0:
        pruned = copy.deepcopy(model)
        magnitude_prune(pruned, layers={name: own})
        keep = masks(pruned)[name].flatten().bool().cpu().numpy()
    else:
        keep = np.ones(before.size, bool)
    kept = before[keep]
    zeros = 1 - kept.size / before.size
    centroids, _ = kmeans_codebook(kept, bits, "linear", seed=seed)
    with style():
        fig = new_figure(7.0, 3.4)
        left, right = fig.subplots(1, 2, sharex=True)
        bins = np.linspace(before.min(), before.max(), 80)
        left.hist(before, bins=bins, color=GREY)
        left.set_title(f"{name}: {before.size:,} weights before pruning", fontsize=9)
        right.hist(kept, bins=bins, color=SECOND, label=f"{kept.size:,} kept ({100 * kept.size / before.size:.0f}%)")
        for i, c in enumerate(np.unique(centroids)):
            right.axvline(c, color=FRONT, lw=0.8, alpha=0.8, label=f"{2 ** bits} k-means centroids" if i == 0 else None)
        after = f"after pruning {zeros:.0%}" if zeros > 0 else f"not pruned (sparsity_{kind} is 0)"
        right.set_title(f"{after}, with the {bits}-bit codebook", fontsize=9)
        right.set_ylim(0, right.get_ylim()[1] * 1.25)  # headroom for the legend
        right.legend(loc="upper center", fontsize=7.5, ncol=2, framealpha=1.0)
        for ax in (left, right):
            ax.set_xlabel("weight value")
        left.set_ylabel("count")
        return save(fig, path, description=f"{left.get_title()} | {right.get_title()}")
