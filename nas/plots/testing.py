"""Synthetic run folders in the format of docs/run-folder.md, for tests and for trying the pictures.

:func:`write_synthetic_run` draws real candidates from a space through a real Optuna
study (SQLite ``study.db``), costs them exactly (MAdds, params, Deep Compression size,
latency on ``reference-cpu``), invents an accuracy that grows with the network's size
and falls with aggressive compression (no training: it takes seconds), records on each
trial the attributes the search records, and writes the folder through
:class:`nas.run.RunFolder`, the same writer ``nas search`` uses. It is not a search;
``nas search`` writes real runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.files import write_atomic
from nas.objectives import KINDS, Constraint, Objective
from nas.run import RunFolder, RunInfo, read_table

if TYPE_CHECKING:
    import optuna

    from nas.hardware import HardwareProfile
    from nas.space import Space
    from nas.spec import Candidate, CompressionSpec

#: The synthetic run's latency profile, and each objective's hypervolume reference point.
PROFILE = "reference-cpu"
REFERENCES = {"accuracy": 0.0, "latency_ms": 1.6, "size_kb": 200.0, "madds": 4e6, "params": 3e5}


@dataclass(frozen=True)
class SyntheticRun:
    """What to write: ``trials`` trials, of which the first ``pruned`` are pruned during proxy
    training, the next ``failed`` fail, the last ``running`` are still running. A candidate over the
    latency limit is complete, infeasible and untrained (accuracy 0), as ``nas search`` recorded it before
    such candidates were told PRUNED: a run folder of that time."""

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


def _label(params: dict[str, Any], compression: CompressionSpec) -> str:
    width = params.get("width_multiplier", 1.0)
    depths = "-".join(str(params[k]) for k in sorted(params) if k.endswith(".depth"))
    kernels = sorted({int(v) for k, v in params.items() if k.endswith(".kernel")})
    bits = compression.codebook_bits or {"binary": 1, "ternary": 2}.get(compression.quantization, 32)
    return (f"w{width} d{depths} k{'/'.join(map(str, kernels))} s{compression.sparsity_conv:.2f} "
            f"b{bits}")


def _fake_accuracy(params: float, compression: CompressionSpec, rng: np.random.Generator) -> float:
    size_gain = 0.12 * math.log10(params / 2e4)
    squeeze = (0.06 * compression.sparsity_conv ** 3 + 0.05 * compression.sparsity_linear ** 3
               + {"binary": 0.08, "ternary": 0.04}.get(compression.quantization, 0.0)
               + (0.03 if compression.codebook_bits is not None and compression.codebook_bits <= 3 else 0.0)
               + (0.05 * (1 - compression.lowrank_ratio) if compression.lowrank_ratio else 0.0))
    return float(np.clip(0.9 + size_gain - squeeze + rng.normal(0, 0.01), 0.05, 0.995))


def _info(spec: SyntheticRun, storage: str, profile: HardwareProfile) -> RunInfo:
    """run.json of the synthetic run, as ``nas search`` would describe it."""
    import nas

    objectives = tuple(Objective.of(n, PROFILE if KINDS[n].per_profile else None, REFERENCES[n])
                       for n in spec.objectives)
    return RunInfo(name=spec.name, objectives=objectives, storage=storage, space=spec.space, dataset="digits",
                   sampler=spec.sampler, seed=spec.seed, budget={"trials": spec.trials, "minutes": None},
                   constraints=(Constraint("latency_ms", "<=", spec.latency_limit),),
                   profiles={PROFILE: profile.provenance()}, nas_version=nas.__version__,
                   command=f"nas search experiments/{spec.name}.yaml", created="2026-11-28T22:40:00+00:00")


def _costs(candidate: Candidate, profile: HardwareProfile) -> dict[str, float]:
    """The cheap costs every trial records, computed by the objective registry as the search does."""
    return {name: float(kind.compute(candidate, profile)) for name, kind in KINDS.items() if kind.compute is not None}


def _trial(study: optuna.Study, i: int, spec: SyntheticRun, space: Space, profile: HardwareProfile,
           rng: np.random.Generator) -> None:
    """Ask one trial, record on it what the search records, and tell its end (or leave it running)."""
    from optuna.trial import TrialState

    trial = study.ask()
    cand = space.sample(trial)
    costs = _costs(cand, profile)
    for name, value in costs.items():
        trial.set_user_attr(name, value)
    trial.set_user_attr("candidate", cand.to_json())
    trial.set_user_attr("label", _label(trial.params, cand.compression))
    trial.set_user_attr("fail_reason", "")
    trial.set_user_attr("trained", False)
    violation = costs["latency_ms"] - spec.latency_limit
    trial.set_constraint("latency_ms", violation)
    if i >= spec.trials - spec.running:
        return  # left RUNNING
    acc = _fake_accuracy(costs["params"], cand.compression, rng)
    if i < spec.pruned:  # the proxy-training pruner stopped it after one epoch
        _trained(trial, [round(acc * 0.5, 4)], "pruned at epoch 1")
        study.tell(trial, state=TrialState.PRUNED)
    elif i < spec.pruned + spec.failed:
        _trained(trial, [], "training diverged (loss is NaN)")
        study.tell(trial, state=TrialState.FAIL)
    elif violation > 0:  # like nas search: complete but infeasible, accuracy 0, never trained
        study.tell(trial, [0.0 if name == "accuracy" else costs[name] for name in spec.objectives])
    else:
        _trained(trial, [round(acc * f, 4) for f in (0.6, 0.85, 1.0)])
        study.tell(trial, [acc if name == "accuracy" else costs[name] for name in spec.objectives])


def _trained(trial: optuna.Trial, history: list[float], fail_reason: str = "") -> None:
    trial.set_user_attr("trained", True)
    trial.set_user_attr("epochs", len(history))
    trial.set_user_attr("history", history)
    trial.set_user_attr("fail_reason", fail_reason)


def write_synthetic_run(folder: str | Path, spec: SyntheticRun = SyntheticRun()) -> Path:
    """Write a run folder (experiment.yaml, run.json, study.db, trials.csv/.parquet, front.csv, hypervolume.csv)
    through :class:`nas.run.RunFolder`, as ``nas search`` does."""
    import optuna

    import nas

    run = RunFolder(folder)
    profile = nas.get_profile(PROFILE)
    info = _info(spec, run.default_storage, profile)
    run.create(info, f"name: {spec.name}\nspace: {spec.space}\n# synthetic run\n")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[o.direction for o in info.objectives], storage=info.storage,
                                study_name=info.study_name, sampler=optuna.samplers.RandomSampler(seed=spec.seed),
                                load_if_exists=False)
    space = nas.load_space(spec.space)
    rng = np.random.default_rng(spec.seed)
    for i in range(spec.trials):
        _trial(study, i, spec, space, profile, rng)
    run.write_results(study.get_trials(deepcopy=False), study.directions)
    return run.path


def write_winner(run_folder: str | Path, rank: int, number: int, *, onnx: bool = False, seed: int = 0) -> Path:
    """A winner folder ``winners/<rank>-trial<number>/`` for trial ``number`` of a synthetic run:
    its candidate with freshly initialised weights (checkpoint + compressed container), and a
    ``summary.csv`` row with the columns ``nas finetune RUN`` writes (accuracies as fractions, each the
    trial's search accuracy). ``model.onnx`` is only written when ``onnx`` (tests check that the
    report links only what exists)."""
    import pandas as pd
    import torch

    import nas
    from nas.checkpoint import save_checkpoint
    from nas.compress import apply_compression, save

    run = RunFolder(run_folder)
    row = run.trials[run.trials["number"] == number].iloc[0]
    cand = nas.Candidate.from_json(str(row["candidate"]))
    out = run.winners_dir / f"{rank}-trial{number}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = nas.build_model(cand.arch)
    save_checkpoint(out / "model.safetensors", model, cand, {"dataset": "digits"})
    report = save(apply_compression(model, cand.compression, seed=seed), out / "model.nasz")
    write_atomic(out / "candidate.json", cand.to_json() + "\n")
    if onnx:
        (out / "model.onnx").write_bytes(b"not a real onnx file")
    summary = run.summary_file
    old = read_table(summary) if summary.is_file() else pd.DataFrame()
    acc = row.get("accuracy")
    new = pd.DataFrame([{"rank": rank, "trial": number, "label": row["label"], "search_val_accuracy": acc,
                         "distilled_test_accuracy": acc, "compressed_test_accuracy": acc,
                         "file_bytes": report.file_bytes, "folder": str(out.relative_to(run.path))}])
    write_atomic(summary, pd.concat([old, new]).to_csv(index=False))
    return out
