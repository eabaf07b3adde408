"""The run folder: the one reader and writer of the files ``nas search`` leaves (docs/run-folder.md).

The search writes through :meth:`RunFolder.create` and :meth:`RunFolder.write_results` (every file
replaced atomically after each finished trial); ``nas plot``, ``nas report`` and ``nas finetune``
read through the same object. Reading works while a search is still going: what is read is the
state after the last finished trial.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.files import write_atomic
from nas.run._info import RunInfo
from nas.run._pareto import hypervolume_history
from nas.run._table import parquet_bytes, read_table, read_trials, trials_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

    from nas.experiment import Experiment
    from nas.objectives import Objective

#: The files of a run folder, by role.
RUN_JSON, EXPERIMENT, STUDY_DB = "run.json", "experiment.yaml", "study.db"
TRIALS_CSV, TRIALS_PARQUET, FRONT, HYPERVOLUME = "trials.csv", "trials.parquet", "front.csv", "hypervolume.csv"
WINNERS, SUMMARY, RAY, PLOTS = "winners", "summary.csv", "ray", "plots"
#: The per-channel mean and std the run's dataset is standardised with (computed once on its training split).
NORMALIZATION = "normalization.json"
WINNER_FILES = ("model.safetensors", "model.nasz", "model.onnx", "candidate.json")


@dataclass
class Winner:
    """A fine-tuned winner: its folder ``winners/<rank>-trial<number>/`` and its row of summary.csv."""

    rank: int
    number: int
    folder: Path
    row: dict[str, Any] = field(default_factory=dict)

    def files(self) -> dict[str, int]:
        """The artifacts that exist, with their real sizes in bytes."""
        return {name: (self.folder / name).stat().st_size for name in WINNER_FILES if (self.folder / name).is_file()}


class RunFolder:
    """A run folder on disk. Reading is lazy and cached: ``info`` and ``trials`` are read once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ paths

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def default_storage(self) -> str:
        """The study's URL when no ``--storage`` was given: ``study.db`` in the folder."""
        return f"sqlite:///{(self.path / STUDY_DB).resolve()}"

    @property
    def winners_dir(self) -> Path:
        return self.path / WINNERS

    @property
    def ray_dir(self) -> Path:
        return self.path / RAY

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    @property
    def experiment_file(self) -> Path:
        """The experiment file as given, copied in when the run started and again on each resume."""
        return self.path / EXPERIMENT

    @property
    def summary_file(self) -> Path:
        """``winners/summary.csv`` (written by ``nas finetune RUN``; may not exist yet)."""
        return self.path / WINNERS / SUMMARY

    def exists(self) -> bool:
        return (self.path / RUN_JSON).is_file()

    # ------------------------------------------------------------------ writing (nas search)

    def create(self, info: RunInfo, experiment_text: str) -> None:
        """Start the folder: the experiment file as given and ``run.json``."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / EXPERIMENT, experiment_text)
        write_atomic(self.path / RUN_JSON, info.to_json())
        self.__dict__["info"] = info

    def update_experiment(self, experiment_text: str) -> None:
        """On a resume: keep the experiment file as given this time (its budget or ``winners:`` may differ
        from the first start's; what defines the trials may not, :attr:`nas.experiment.Experiment.digest`)."""
        if experiment_text:
            write_atomic(self.path / EXPERIMENT, experiment_text)

    def record_device(self, device: str) -> None:
        """Keep in ``run.json`` where this session trains (``device``; see :attr:`RunInfo.device`)."""
        if device != self.info.device:
            info = replace(self.info, device=device)
            write_atomic(self.path / RUN_JSON, info.to_json())
            self.__dict__["info"] = info
    def write_normalization(self, normalization: dict[str, list[float]]) -> None:
        """Record the dataset's standardisation (``{"mean": [...], "std": [...]}``, per channel) when the
        search starts: a resume, the winners and their exported models use the same."""
        write_atomic(self.path / NORMALIZATION, json.dumps(normalization, indent=1) + "\n")

    def write_results(self, trials: Sequence[FrozenTrial], directions: Sequence[optuna.study.StudyDirection]
                      ) -> tuple[pd.DataFrame, float]:
        """Rewrite trials.csv/.parquet, front.csv and hypervolume.csv; returns (trials table, hypervolume).

        Each file is replaced atomically: if the disk fills, the files already there stay whole, and the
        error says so (the study keeps every finished trial; a resume writes them all again)."""
        try:
            frame = trials_frame(trials, self.info.objectives, directions)
            write_atomic(self.path / TRIALS_CSV, frame.to_csv(index=False))
            write_atomic(self.path / TRIALS_PARQUET, parquet_bytes(frame))
            write_atomic(self.path / FRONT, frame[frame["pareto"].astype(bool)].to_csv(index=False))
            history = hypervolume_history(frame, self.info.objectives)
            write_atomic(self.path / HYPERVOLUME, history.to_csv(index=False))
        except OSError as exc:
            raise NasError(f"cannot write the results into {self.path}: {exc.strerror or exc}; every finished "
                           f"trial is kept in the study and the files there are whole: free space and run the "
                           f"same command to resume.") from None
        self.__dict__.pop("trials", None)
        return frame, float(history["hypervolume"].iloc[-1]) if len(history) else 0.0

    # ------------------------------------------------------------------ reading

    def require(self) -> RunFolder:
        """This folder, or a clear error when it is not a run folder."""
        if not self.path.is_dir():
            raise NasError(f"run folder {str(self.path)!r} does not exist; give the folder `nas search` wrote "
                           f"(results/<run-name>/ by default).")
        _ = self.info
        return self

    @cached_property
    def info(self) -> RunInfo:
        path = self.path / RUN_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NasError(f"{self.path} is not a run folder: it has no run.json (written by `nas search` when it "
                           f"starts).") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NasError(f"cannot read {path}: {exc}.") from None
        return RunInfo.from_dict(data, str(path))

    @property
    def name(self) -> str:
        return self.info.name or self.path.name

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        """The recorded :data:`NORMALIZATION` (None for a run without one: made before, or cost-only)."""
        path = self.path / NORMALIZATION
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NasError(f"cannot read {path}: {exc}; delete it to have it computed again.") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("mean", "std")):
            raise NasError(f"{path} must hold {{\"mean\": [...], \"std\": [...]}}; delete it to have it computed "
                           f"again.")
        return {"mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}

    @property
    def objectives(self) -> list[Objective]:
        return list(self.info.objectives)

    def objective(self, name: str) -> Objective:
        return self.info.objective(name)

    def experiment(self) -> Experiment:
        """The experiment the run was started with (its copy in the folder), its relative paths read from the
        folder the original file was in (run.json's ``experiment_dir``; the current folder for runs made
        before it was kept, as then)."""
        from nas.experiment import load_experiment

        return load_experiment(self.experiment_file, base=self.info.experiment_dir or Path.cwd())

    @cached_property
    def trials(self) -> pd.DataFrame:
        """The trials table as the search last wrote it, typed (:func:`nas.run.read_trials`)."""
        return read_trials(self.path, self.info.objectives)

    def completed(self) -> pd.DataFrame:
        """COMPLETE trials (the only ones Optuna puts on a front), in trial order."""
        return self.trials[self.trials["state"] == "COMPLETE"]

    def feasible(self) -> pd.DataFrame:
        done = self.completed()
        return done[done["feasible"]]

    def front(self) -> pd.DataFrame:
        """The Pareto-front rows: ``front.csv`` when written, else the ``pareto`` rows of the trials table."""
        path = self.path / FRONT
        if path.is_file():
            df = read_table(path)
            if len(df) or not self.trials["pareto"].any():
                return df
        return self.trials[self.trials["pareto"]]

    def hypervolume(self) -> pd.DataFrame:
        """``hypervolume.csv`` (finished, number, hypervolume), computed from the trials when not written yet."""
        path = self.path / HYPERVOLUME
        if path.is_file():
            return read_table(path)
        return hypervolume_history(self.trials, self.info.objectives)

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
            limits = ", ".join(f"{c.name} {c.op} {c.limit:g}" for c in self.info.constraints) \
                or "the run's constraints"
            raise NasError(f"all {len(done)} completed trials in {self.path} are infeasible ({limits}): "
                           f"no front to {what}; relax the constraints or widen the space.")
        return feasible

    def reference_text(self) -> str:
        """The hypervolume's reference point in the objectives' own units."""
        parts = []
        for o in self.info.objectives:
            ref = o.reference if o.reference is not None else (0.0 if o.maximize else float("nan"))
            parts.append(f"{o.short_name} {o.short(ref)}")
        return ", ".join(parts)

    def storage_url(self) -> str:
        """``study.db`` in the folder when it has one (the folder may have moved), else run.json's storage."""
        if (self.path / STUDY_DB).is_file():
            return self.default_storage
        if not self.info.storage:
            raise NasError(f"{self.path}: no study.db and no storage URL in run.json: the Optuna study is needed "
                           f"for this.")
        return self.info.storage

    def study(self) -> optuna.Study:
        """The run's Optuna study, read-only use (plots, report)."""
        import optuna

        url = self.storage_url()
        name = self.info.study_name
        try:
            return optuna.load_study(study_name=name, storage=url)
        except KeyError:
            raise NasError(f"{url} holds no study named {name!r}.") from None
        except Exception as exc:  # storage errors come from sqlalchemy and the drivers; say which storage
            raise NasError(f"cannot open the study {name!r} at {url}: {type(exc).__name__}: {exc}".splitlines()[0]
                           ) from None

    def winners(self) -> list[Winner]:
        """Fine-tuned winners (``nas finetune RUN --top K``), best rank first; empty before that."""
        folder = self.winners_dir
        rows: dict[int, dict[str, Any]] = {}
        if self.summary_file.is_file():
            for i, row in enumerate(read_table(self.summary_file).to_dict("records")):
                rows[_rank(row.get("rank"), i + 1)] = row
        out = []
        for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
            m = re.fullmatch(r"(\d+)-trial(\d+)", sub.name)
            if m and sub.is_dir():
                out.append(Winner(int(m[1]), int(m[2]), sub, rows.get(int(m[1]), {})))
        return sorted(out, key=lambda w: w.rank)


def _rank(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # empty, text, NaN, infinite: the row's place instead
        return default


def load_run(path: str | Path) -> RunFolder:
    """A run folder written by ``nas search``, checked; a clear error when it is not one."""
    return RunFolder(path).require()
