"""Figures chosen from a run or a checkpoint, shared by ``nas plot`` and ``nas report``.

Which profile a run's latency refers to, which trial stands for the run, and the
pictures and tables drawn for them; the commands only decide which to draw and say
what they wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.hardware import get_profile
from nas.plots._compression import RANKS, compression_tradeoff, layer_table, plot_compression_tradeoff
from nas.plots._latency import plot_latency_breakdown
from nas.plots._search import front_members
from nas.plots._tables import markdown_table
from nas.spec import ArchSpec, Candidate, CompressionSpec

if TYPE_CHECKING:
    from torch import nn

    from nas.run import RunFolder

#: How the per-layer table prints its columns.
LAYER_FORMATS = {"kept %": ".1f", "weight bits P+Q+H": ".2f", "index bits P+Q": ".0f", "index bits P+Q+H": ".2f",
                 "rate P+Q": ".1f", "rate P+Q+H": ".1f"}


def run_profile(run: RunFolder, override: str | None = None) -> str:
    """``override``, else the profile the run's latency refers to (:attr:`nas.run.RunInfo.latency_profile`)."""
    return override or run.info.latency_profile


def chosen_trial(run: RunFolder, number: int | None = None) -> Any:
    """The row of trial ``number``, else the top winner's, else the most accurate front member's."""
    if number is None:
        winners = run.winners()
        if winners:
            number = winners[0].number
    if number is not None:
        rows = run.trials[run.trials["number"] == number]
        if len(rows) == 0:
            raise NasError(f"{run.path} has no trial {number}.")
        return rows.iloc[0]
    feasible = run.require_trials(1, "plot")
    front = feasible[front_members(run, feasible)]
    key = next((o for o in run.objectives if o.maximize), run.objectives[0])
    pick = front if len(front) else feasible
    return pick.sort_values(key.name, ascending=not key.maximize, kind="stable").iloc[0]


def run_latency_breakdown(run: RunFolder, path: Path, trial: int | None = None, profile: str | None = None) -> Path:
    """Where the time of the :func:`chosen_trial`'s candidate goes on the :func:`run_profile`."""
    row = chosen_trial(run, trial)
    text = row.get("candidate")
    if not isinstance(text, str) or not text.strip():
        raise NasError(f"trial {int(row['number'])} of {run.path} has no candidate JSON in trials.csv.")
    cand = Candidate.from_json(text)
    label = f"trial {int(row['number'])}" + (f" ({row['label']})" if row.get("label") else "")
    return plot_latency_breakdown(get_profile(run_profile(run, profile)), cand.arch, path, label=label)


def write_layer_table(arch: ArchSpec, spec: CompressionSpec, folder: Path) -> Path:
    """Write the per-layer storage table as ``compression-layers.md`` and ``.csv`` in ``folder``;
    returns the Markdown file."""
    table = layer_table(arch, spec)
    md = folder / "compression-layers.md"
    md.write_text(f"Per-layer storage under {spec.to_dict()} (Deep Compression's accounting, nas.size_report)\n\n"
                  + markdown_table(table, LAYER_FORMATS) + "\n", encoding="utf-8")
    table.to_csv(folder / "compression-layers.csv", index=False)
    return md


def weight_picture_settings(spec: Any) -> tuple[dict[str, float], int, str]:
    """Sparsity per layer kind (``{"conv": .., "linear": ..}``) and codebook bits for the weight picture:
    the spec's, or 75% / 4 bits to illustrate where the spec has no pruning or no codebook."""
    sparsity = {"conv": spec.sparsity_conv, "linear": spec.sparsity_linear}
    bits = spec.codebook_bits
    prunes = any(sparsity.values())
    note = ""
    if not prunes or bits is None:
        note = " (the spec lacks " + " and ".join(
            w for w, missing in (("pruning", not prunes), ("a codebook", bits is None)) if missing) + \
            ": drawn with " + " / ".join(w for w, missing in (("75%", not prunes), ("4 bits", bits is None))
                                         if missing) + " to illustrate)"
    return sparsity if prunes else {"conv": 0.75, "linear": 0.75}, bits or 4, note


def tradeoff_picture(model: nn.Module, arch: ArchSpec, dataset: str, path: Path, *, root: str | None = None,
                     samples: int = 2000, retrain_epochs: int = 0,
                     normalization: dict[str, list[float]] | None = None) -> Path:
    """Deep Compression's Figure 6 for ``model`` measured on ``dataset``'s validation split (standardised with
    ``normalization``, the checkpoint's, when given)."""
    import torch
    from torch.utils.data import TensorDataset

    from nas.data import check_fits, load_configured
    from nas.experiment import DatasetConfig
    from nas.train import TrainConfig, as_tensors, evaluate, train

    if samples < 1 or retrain_epochs < 0:
        raise NasError(f"--eval-samples must be >= 1 and --retrain-epochs >= 0, but got {samples}, {retrain_epochs}.")
    splits = load_configured(DatasetConfig(name=dataset, root=root), arch.input_shape, normalization)
    check_fits(splits, arch.input_shape, arch.num_classes)
    x, y = as_tensors(splits.val)[:2]
    val = TensorDataset(x[:samples], y[:samples])
    retrain = None
    if retrain_epochs:
        config = TrainConfig(epochs=retrain_epochs, lr=0.005, threads=max(1, torch.get_num_threads()), progress=False)

        def retrain_stage(m: torch.nn.Module, stage: str) -> None:
            train(m, splits, config)

        retrain = retrain_stage

    table = compression_tradeoff(model, arch, lambda m: evaluate(m, val), ranks=RANKS, retrain=retrain)
    table.to_csv(path.with_suffix(".csv"), index=False)
    return plot_compression_tradeoff(table, path, retrained=bool(retrain_epochs))
