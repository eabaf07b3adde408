"""Synthetic run folders in the format of docs/run-folder.md, for tests and for trying the pictures.

:func:`write_synthetic_run` draws real candidates from a space through a real Optuna
study (SQLite ``study.db``), costs them exactly (MAdds, params, Deep Compression size,
latency on ``reference-cpu``), invents an accuracy that grows with the network's size
and falls with aggressive compression (no training: it takes seconds), and writes every
file the contract lists. It is not a search; ``nas search`` writes real runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.plots._pareto import hypervolume_history
from nas.plots._run import Objective

OBJECTIVES: dict[str, dict[str, Any]] = {
    "accuracy": {"direction": "maximize", "label": "validation accuracy", "unit": "", "reference": 0.0},
    "latency_ms": {"direction": "minimize", "label": "latency on reference-cpu", "unit": "ms",
                   "profile": "reference-cpu", "reference": 1.6},
    "size_kb": {"direction": "minimize", "label": "compressed size", "unit": "KB", "reference": 200.0},
    "madds": {"direction": "minimize", "label": "multiply-adds", "unit": "", "reference": 4e6},
    "params": {"direction": "minimize", "label": "parameters", "unit": "", "reference": 3e5},
}


@dataclass(frozen=True)
class SyntheticRun:
    """What to write: ``trials`` trials, of which the first ``pruned`` are pruned during proxy
    training, the next ``failed`` fail, the last ``running`` are still running. As in ``nas search``,
    a candidate over the latency limit is complete, infeasible and untrained (accuracy 0)."""

    name: str = "synthetic"
    space: str = "mobilenetv2-tiny"
    objectives: tuple[str, ...] = ("accuracy", "latency_ms", "size_kb")
    trials: int = 24
    latency_limit: float = 1.0  # constraint latency_ms <= limit
    pruned: int = 2
    failed: int = 1
    running: int = 0
    sampler: str = "random"
    seed: int = 0


def _label(params: dict[str, Any], compression: Any) -> str:
    width = params.get("width_multiplier", 1.0)
    depths = "-".join(str(params[k]) for k in sorted(params) if k.endswith(".depth"))
    kernels = sorted({int(v) for k, v in params.items() if k.endswith(".kernel")})
    bits = compression.codebook_bits or {"binary": 1, "ternary": 2}.get(compression.quantization, 32)
    return (f"w{width} d{depths} k{'/'.join(map(str, kernels))} s{compression.sparsity_conv:.2f} "
            f"b{bits}")


def _fake_accuracy(params: int, compression: Any, rng: np.random.Generator) -> float:
    size_gain = 0.12 * math.log10(params / 2e4)
    squeeze = (0.06 * compression.sparsity_conv ** 3 + 0.05 * compression.sparsity_linear ** 3
               + {"binary": 0.08, "ternary": 0.04}.get(compression.quantization, 0.0)
               + (0.03 if compression.codebook_bits is not None and compression.codebook_bits <= 3 else 0.0)
               + (0.05 * (1 - compression.lowrank_ratio) if compression.lowrank_ratio else 0.0))
    return float(np.clip(0.9 + size_gain - squeeze + rng.normal(0, 0.01), 0.05, 0.995))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_synthetic_run(folder: str | Path, spec: SyntheticRun = SyntheticRun()) -> Path:
    """Write a run folder (run.json, study.db, trials.csv/.parquet, front.csv, hypervolume.csv)."""
    import optuna
    import pandas as pd

    import nas

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    objectives = [{"name": n, **OBJECTIVES[n]} for n in spec.objectives]
    storage = f"sqlite:///{(folder / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[o["direction"] for o in objectives], storage=storage,
                                study_name=spec.name, sampler=optuna.samplers.RandomSampler(seed=spec.seed),
                                load_if_exists=False)
    space = nas.load_space(spec.space)
    profile = nas.get_profile("reference-cpu")
    rng = np.random.default_rng(spec.seed)
    extra: dict[int, dict[str, Any]] = {}
    for i in range(spec.trials):
        trial = study.ask()
        cand = space.sample(trial)
        cost = nas.count(cand.arch)
        costs = {"madds": float(cost.madds), "params": float(cost.params),
                 "size_kb": nas.size_bits(cand.arch, cand.compression) / 8 / 1000,
                 "latency_ms": profile.latency_ms(cand.arch)}
        violation = costs["latency_ms"] - spec.latency_limit
        trial.set_constraint("latency_ms", violation)
        info: dict[str, Any] = {"costs": costs, "violation": violation, "candidate": cand.to_json(), "history": [],
                "label": _label(trial.params, cand.compression), "trained": True, "fail_reason": ""}
        extra[trial.number] = info
        if i >= spec.trials - spec.running:
            continue  # left RUNNING
        acc = _fake_accuracy(cost.params, cand.compression, rng)
        if i < spec.pruned:  # the proxy-training pruner stopped it
            info.update(history=[round(acc * 0.5, 4)], fail_reason="pruned at epoch 1")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if i < spec.pruned + spec.failed:
            info["fail_reason"] = "training diverged (loss is NaN)"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if violation > 0:  # like nas search: complete but infeasible, accuracy 0, never trained
            info["trained"], acc = False, 0.0
        else:
            info["history"] = [round(acc * f, 4) for f in (0.6, 0.85, 1.0)]
        study.tell(trial, [acc if o["name"] == "accuracy" else costs[o["name"]] for o in objectives])

    best = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False):
        info = extra[t.number]
        values = dict(zip([o["name"] for o in objectives], t.values)) if t.values else {}
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for o in objectives:
            row[o["name"]] = values.get(o["name"], info["costs"].get(o["name"], math.nan))
        row.update(feasible=t.state.name == "COMPLETE" and info["violation"] <= 0, pareto=t.number in best,
                   trained=info["trained"], **{"c:latency_ms": info["violation"]})
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row.update(label=info["label"], candidate=info["candidate"], **info["costs"], epochs=len(info["history"]),
                   history=json.dumps(info["history"]), fail_reason=info["fail_reason"], retry_of="",
                   datetime_start=t.datetime_start.isoformat() if t.datetime_start else "",
                   datetime_complete=t.datetime_complete.isoformat() if t.datetime_complete else "",
                   duration_s=t.duration.total_seconds() if t.duration else math.nan)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:  # as nas search writes it before the first trial finishes
        df = pd.DataFrame(columns=["number", "state", *spec.objectives, "feasible", "pareto", "trained"])
    df.to_csv(folder / "trials.csv", index=False)
    df.to_parquet(folder / "trials.parquet", index=False)
    df[df["pareto"]].to_csv(folder / "front.csv", index=False)
    objs = [Objective.from_dict(o) for o in objectives]
    df_typed = df.assign(state=df["state"].astype("string"))
    hypervolume_history(df_typed, objs).to_csv(folder / "hypervolume.csv", index=False)
    run = {"name": spec.name, "study_name": spec.name, "storage": storage, "space": spec.space, "dataset": "digits",
           "sampler": spec.sampler, "seed": spec.seed, "budget": {"trials": spec.trials, "minutes": None},
           "objectives": objectives,
           "constraints": [{"name": "latency_ms", "op": "<=", "limit": spec.latency_limit}],
           "profiles": {"reference-cpu": profile.provenance()}, "nas_version": nas.__version__,
           "command": f"nas search experiments/{spec.name}.yaml", "created": "2026-11-28T22:40:00+00:00"}
    _atomic_write(folder / "run.json", json.dumps(run, indent=1) + "\n")
    _atomic_write(folder / "experiment.yaml", f"name: {spec.name}\nspace: {spec.space}\n# synthetic run\n")
    return folder


def write_winner(run_folder: str | Path, rank: int, number: int, *, onnx: bool = False, seed: int = 0) -> Path:
    """A winner folder ``winners/<rank>-trial<number>/`` for trial ``number`` of a synthetic run:
    its candidate with freshly initialised weights (checkpoint + compressed container), and a
    ``summary.csv`` row. ``model.onnx`` is only written when ``onnx`` (tests check that the
    report links only what exists)."""
    import pandas as pd
    import torch

    import nas
    from nas.checkpoint import save_checkpoint
    from nas.compress import apply_compression, save

    folder = Path(run_folder)
    trials = pd.read_csv(folder / "trials.csv")
    row = trials[trials["number"] == number].iloc[0]
    cand = nas.Candidate.from_json(row["candidate"])
    out = folder / "winners" / f"{rank}-trial{number}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = nas.build_model(cand.arch)
    save_checkpoint(out / "model.safetensors", model, cand, {"dataset": "digits"})
    report = save(apply_compression(model, cand.compression, seed=seed), out / "model.nasz")
    (out / "candidate.json").write_text(cand.to_json() + "\n", encoding="utf-8")
    if onnx:
        (out / "model.onnx").write_bytes(b"not a real onnx file")
    summary = folder / "winners" / "summary.csv"
    old = pd.read_csv(summary) if summary.is_file() else pd.DataFrame()
    new = pd.DataFrame([{"rank": rank, "number": number, "label": row["label"],
                         "accuracy_search": row.get("accuracy"), "accuracy": row.get("accuracy"),
                         "accuracy_compressed": row.get("accuracy"), "file_bytes": report.file_bytes}])
    pd.concat([old, new]).to_csv(summary, index=False)
    return out
