"""The trials table (``trials.csv`` / ``trials.parquet``): one column schema, one writer, one reader.

The writer turns the study's trials into rows (docs/run-folder.md, "trials.csv columns"); the
reader gives the table back with the same types whichever of the two files it comes from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.objectives import CHEAP, Objective
from nas.optuna_compat import named_constraints, pareto_front

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

#: The flag columns after the objectives and cheap costs.
FLAGS = ("feasible", "pareto", "trained")
#: Text columns: empty is "" whichever file they come from (CSV reads an empty cell as NaN, Parquet as "").
TEXT = ("label", "history", "fail_reason", "retry_of", "worker", "datetime_start", "datetime_complete", "candidate")
#: The reason a trial failed by another worker's heartbeat check carries (Optuna's storage keeps none).
SILENT_WORKER = "its worker went silent (no heartbeat within the grace period); retried"


def feasible(trial: FrozenTrial) -> bool:
    """COMPLETE, and every constraint set on it holds."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def rejected(frame: pd.DataFrame) -> pd.Series:
    """The rows of candidates refused before training (a cheap constraint broken): PRUNED and never trained,
    or, in a run folder made before they were told PRUNED, COMPLETE and never trained."""
    return ~frame["trained"] & frame["state"].isin(["COMPLETE", "PRUNED"])


def _row(t: FrozenTrial, names: list[str], front: set[int], retried: set[int]) -> dict[str, Any]:
    from optuna.trial import TrialState

    ua = t.user_attrs
    row: dict[str, Any] = {"number": t.number, "state": t.state.name}
    for j, name in enumerate(names):
        row[name] = t.values[j] if t.values is not None else ua.get(name, math.nan)
    for k in CHEAP:
        row.setdefault(k, ua.get(k, math.nan))
    row.update(feasible=feasible(t), pareto=t.number in front, trained=bool(ua.get("trained", False)))
    row.update({f"c:{k}": v for k, v in named_constraints(t).items()})
    row.update({k: v for k, v in ua.items() if k.startswith("latency_ms:") and k not in row})
    reason = ua.get("fail_reason", "")
    if t.state == TrialState.FAIL and not reason and t.number in retried:
        reason = SILENT_WORKER
    retry = t.system_attrs.get("failed_trial", ua.get("retry_of"))
    start, end = t.datetime_start, t.datetime_complete
    row.update(label=ua.get("label", ""), epochs=ua.get("epochs", 0), history=json.dumps(ua.get("history", [])),
               fail_reason=reason, retry_of=retry if retry is not None else "", worker=ua.get("worker", ""),
               datetime_start=start.isoformat() if start else "", datetime_complete=end.isoformat() if end else "",
               duration_s=(end - start).total_seconds() if start and end else math.nan)
    row.update({f"param:{k}": v for k, v in t.params.items()})
    row["candidate"] = ua.get("candidate", "")
    return row


def trials_frame(trials: Sequence[FrozenTrial], objectives: Sequence[Objective],
                 directions: Sequence[optuna.study.StudyDirection]) -> pd.DataFrame:
    """Every trial as a row; ``pareto`` as ``study.best_trials`` says."""
    import pandas as pd

    names = [o.name for o in objectives]
    front = {t.number for t in pareto_front(trials, directions)}
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    frame = pd.DataFrame([_row(t, names, front, retried) for t in trials])
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", *names, *FLAGS])
    params = [c for c in frame.columns if c.startswith("param:")]
    rest = [c for c in frame.columns if c not in params and c != "candidate"]
    return frame[rest + params + ["candidate"]]


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


def typed(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The table with the types readers rely on: ``state`` upper case, the flags bool, objectives and
    cheap costs float, the text columns text ("" when empty); sorted by trial number."""
    import pandas as pd

    if "number" not in df.columns:
        df = df.assign(number=pd.Series(dtype="int64"))
    df = df.sort_values("number", kind="stable").reset_index(drop=True)
    df["state"] = df["state"].astype("string").str.upper() if "state" in df.columns else "COMPLETE"
    for col in FLAGS:
        df[col] = _as_bool(df[col]) if col in df.columns else (col != "pareto")
    for col in [o.name for o in objectives] + list(CHEAP):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "retry_of" in df.columns:  # trial numbers; CSV reads a column of them with blanks as floats
        df["retry_of"] = [_number_text(v) for v in df["retry_of"]]
    for col in TEXT:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str) if col in df.columns else ""
    return df


def _number_text(value: Any) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(f) else str(int(f)) if f.is_integer() else str(value)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table of the run folder as it is (a clear error when it cannot be read)."""
    return _read_table(path)


def read_trials(folder: Path, objectives: Sequence[Objective]) -> pd.DataFrame:
    """``trials.parquet`` (typed) or, when it is missing or unreadable, ``trials.csv``; see :func:`typed`."""
    import pandas as pd

    df = pd.DataFrame()
    for name in ("trials.parquet", "trials.csv"):
        if (folder / name).is_file():
            try:
                df = _read_table(folder / name)
                break
            except NasError:
                if name == "trials.csv":
                    raise
    return typed(df, objectives)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The table as Parquet (text columns as strings: Parquet has no column of mixed Python objects)."""
    import io

    buf = io.BytesIO()
    frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(buf, index=False)
    return buf.getvalue()
