"""Reading a run folder (docs/run-folder.md): ``run.json``, the trials table, the front, the hypervolume, the study.

Everything here reads files that ``nas search`` replaces atomically after every finished
trial, so it also works while a search is still going: what is read is the state after
the last finished trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:
    import optuna
    import pandas as pd

#: Axis text for the objective names of the contract when run.json gives no label/unit.
DEFAULT_LABELS = {
    "accuracy": ("validation accuracy", ""),
    "latency_ms": ("latency", "ms"),
    "madds": ("multiply-adds", ""),
    "params": ("parameters", ""),
    "size_kb": ("compressed size", "KB"),
}

TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
#: Units of plain counts, shown scaled (thousands, millions) instead.
COUNT_UNITS = ("", "MAdds", "madds", "params", "parameters")


@dataclass(frozen=True)
class Objective:
    """One objective of a run, as ``run.json`` describes it."""

    name: str
    direction: str  # "maximize" or "minimize"
    label: str
    unit: str
    reference: float | None = None
    profile: str | None = None

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objective:
        name = str(d.get("name", ""))
        base = name.split(":", 1)[0]
        label, unit = DEFAULT_LABELS.get(base, (name, ""))
        direction = d.get("direction") or ("maximize" if base == "accuracy" else "minimize")
        ref = d.get("reference")
        return cls(name, str(direction), str(d.get("label") or label), str(d.get("unit", unit) or ""),
                   float(ref) if ref is not None else None, d.get("profile"))

    def display(self, values: Any) -> tuple[float, str]:
        """(factor, axis label) that shows this objective readably: accuracy in %, counts in k or M."""
        base = self.name.split(":", 1)[0]
        if base == "accuracy" and not self.unit:
            return 100.0, f"{self.label} (%)"
        if base in ("madds", "params") and self.unit in COUNT_UNITS:
            import numpy as np

            finite = np.asarray(values, dtype=float)
            top = float(np.nanmax(np.abs(finite))) if finite.size and np.isfinite(finite).any() else 0.0
            for factor, prefix in ((1e-6, "millions"), (1e-3, "thousands")):
                if top >= 1 / factor:
                    return factor, f"{self.label} ({prefix})"
            return 1.0, self.label
        return 1.0, f"{self.label} ({self.unit})" if self.unit else self.label

    def short(self, value: float) -> str:
        """The value as a table or key shows it: ``97.2%``, ``0.83 ms``, ``1.2M``."""
        if not math.isfinite(value):
            return "-"
        base = self.name.split(":", 1)[0]
        if base == "accuracy" and not self.unit:
            return f"{100 * value:.1f}%"
        if base in ("madds", "params") and self.unit in COUNT_UNITS:
            unit = f" {self.unit}" if self.unit else ""
            for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
                if abs(value) >= factor:
                    return f"{value / factor:.3g}{prefix}{unit}"
            return f"{value:.0f}{unit}"
        text = f"{value:#.3g}".rstrip(".") if abs(value) < 1e3 else f"{value:.0f}"
        return f"{text} {self.unit}".strip()

    @property
    def short_name(self) -> str:
        """``latency`` for ``latency_ms``, ``latency on pi4`` for ``latency_ms:pi4``, ``size`` for ``size_kb``."""
        base, _, profile = self.name.partition(":")
        base = base.removesuffix("_ms").removesuffix("_kb")
        return f"{base} on {profile}" if profile else base


@dataclass
class Winner:
    """A fine-tuned winner: its folder ``winners/<rank>-trial<number>/`` and its row of summary.csv."""

    rank: int
    number: int
    folder: Path
    row: dict[str, Any] = field(default_factory=dict)

    def files(self) -> dict[str, int]:
        """The artifacts that exist, with their real sizes in bytes."""
        out = {}
        for name in ("model.safetensors", "model.nasz", "model.onnx", "candidate.json"):
            path = self.folder / name
            if path.is_file():
                out[name] = path.stat().st_size
        return out


@dataclass
class Run:
    """A run folder read once; the trials table as ``nas search`` last wrote it."""

    path: Path
    info: dict[str, Any]
    objectives: list[Objective]
    trials: pd.DataFrame

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.path.name)

    def objective(self, name: str) -> Objective:
        for o in self.objectives:
            if o.name == name:
                return o
        raise NasError(f"{self.path}: no objective {name!r}; the run has {[o.name for o in self.objectives]}.")

    def completed(self) -> pd.DataFrame:
        """COMPLETE trials (the only ones Optuna puts on a front), in trial order."""
        return self.trials[self.trials["state"] == "COMPLETE"]

    def feasible(self) -> pd.DataFrame:
        done = self.completed()
        return done[done["feasible"]]

    def front(self) -> pd.DataFrame:
        """``front.csv`` when written, else the ``pareto`` rows of the trials table."""
        path = self.path / "front.csv"
        if path.is_file():
            df = _read_table(path)
            if len(df) or not self.trials["pareto"].any():
                return df
        return self.trials[self.trials["pareto"]]

    def require_trials(self, needed: int = 2, what: str = "plot") -> pd.DataFrame:
        """The feasible COMPLETE trials, or a clear error when there are too few to draw anything."""
        done = self.completed()
        if len(done) == 0:
            states = self.trials["state"].value_counts().to_dict() if len(self.trials) else {}
            so_far = f" (so far: {', '.join(f'{n} {s.lower()}' for s, n in states.items())})" if states else ""
            raise NasError(f"no completed trials yet in {self.path}{so_far}: nothing to {what}.")
        if len(done) < needed:
            raise NasError(f"only {len(done)} completed trial in {self.path}: nothing to {what} yet "
                           f"(a front needs at least {needed}); look again when the search has gone further.")
        feasible = done[done["feasible"]]
        if len(feasible) == 0:
            limits = ", ".join(f"{c.get('name')} {c.get('op', '<=')} {c.get('limit')}"
                               for c in self.info.get("constraints", [])) or "the run's constraints"
            raise NasError(f"all {len(done)} completed trials in {self.path} are infeasible ({limits}): "
                           f"no front to {what}; relax the constraints or widen the space.")
        return feasible

    def hypervolume(self) -> pd.DataFrame:
        """``hypervolume.csv`` (finished, number, hypervolume), computed from the trials when not written yet."""
        path = self.path / "hypervolume.csv"
        if path.is_file():
            return _read_table(path)
        from nas.plots._pareto import hypervolume_history

        return hypervolume_history(self.trials, self.objectives)

    def reference_text(self) -> str:
        """The hypervolume's reference point in the objectives' own units."""
        parts = []
        for o in self.objectives:
            ref = o.reference if o.reference is not None else (0.0 if o.maximize else float("nan"))
            parts.append(f"{o.short_name} {o.short(ref)}")
        return ", ".join(parts)

    def storage_url(self) -> str:
        """``RUN/study.db`` when the folder has one (the folder may have moved), else run.json's storage."""
        local = self.path / "study.db"
        if local.is_file():
            return f"sqlite:///{local.resolve()}"
        url = self.info.get("storage")
        if not url:
            raise NasError(f"{self.path}: no study.db and no storage URL in run.json: the Optuna study is needed "
                           f"for this picture.")
        return str(url)

    def study(self) -> optuna.Study:
        import optuna

        url = self.storage_url()
        name = str(self.info.get("study_name") or self.name)
        try:
            return optuna.load_study(study_name=name, storage=url)
        except KeyError:
            raise NasError(f"{url} holds no study named {name!r}.") from None
        except Exception as exc:  # storage errors come from sqlalchemy and the drivers; say which storage
            raise NasError(f"cannot open the study {name!r} at {url}: {type(exc).__name__}: {exc}".splitlines()[0]
                           ) from None

    def winners(self) -> list[Winner]:
        """Fine-tuned winners (``nas finetune RUN --top K``), best rank first; empty before that."""
        import re

        folder = self.path / "winners"
        rows: dict[int, dict[str, Any]] = {}
        summary = folder / "summary.csv"
        if summary.is_file():
            df = _read_table(summary)
            for i, row in enumerate(df.to_dict("records")):
                rank = int(row["rank"]) if "rank" in row and _finite(row["rank"]) else i + 1
                rows[rank] = row
        out = []
        for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
            m = re.fullmatch(r"(\d+)-trial(\d+)", sub.name)
            if m and sub.is_dir():
                out.append(Winner(int(m[1]), int(m[2]), sub, rows.get(int(m[1]), {})))
        return sorted(out, key=lambda w: w.rank)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, ValueError, ImportError) as exc:
        raise NasError(f"cannot read {path}: {exc}".splitlines()[0]) from None


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    text = series.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).astype(bool)


def read_trials(path: Path, objectives: list[Objective]) -> pd.DataFrame:
    """``trials.parquet`` (typed) or ``trials.csv`` with the columns the pictures rely on normalised:
    ``state`` upper case, ``feasible``/``pareto``/``trained`` bool, objectives and costs float."""
    import pandas as pd

    df = pd.DataFrame()
    for name in ("trials.parquet", "trials.csv"):
        if (path / name).is_file():
            try:
                df = _read_table(path / name)
                break
            except NasError:
                if name == "trials.csv":
                    raise
    if "number" not in df.columns:
        df = df.assign(number=pd.Series(dtype="int64"))
    df = df.sort_values("number", kind="stable").reset_index(drop=True)
    df["state"] = df["state"].astype("string").str.upper() if "state" in df.columns else "COMPLETE"
    for col in ("feasible", "pareto", "trained"):
        df[col] = _as_bool(df[col]) if col in df.columns else (col != "pareto")
    for col in [o.name for o in objectives] + ["madds", "params", "size_kb", "latency_ms"]:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "label" not in df.columns:
        df["label"] = ""
    df["label"] = df["label"].fillna("").astype(str)
    return df


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``nas search``; a clear error when it is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise NasError(f"run folder {str(folder)!r} does not exist; give the folder `nas search` wrote "
                       f"(results/<run-name>/ by default).")
    meta = folder / "run.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NasError(f"{folder} is not a run folder: it has no run.json (written by `nas search` when it "
                       f"starts).") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise NasError(f"cannot read {meta}: {exc}.") from None
    if not isinstance(info, dict) or not info.get("objectives"):
        raise NasError(f"{meta}: 'objectives' is missing or empty; see docs/run-folder.md.")
    objectives = [Objective.from_dict(o) for o in info["objectives"]]
    return Run(folder, info, objectives, read_trials(folder, objectives))
