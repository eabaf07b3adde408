"""Opening a search: the run folder and its study, created on the first start, checked on a resume."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import optuna

from nas.experiment import Experiment, ExperimentError
from nas.run import RunFolder, RunInfo
from nas.search.evaluator import evaluator_class
from nas.search.scoring import reference_point
from nas.search.setup import Setup, prepare
from nas.search.study import make_storage, redact


@dataclass
class SearchRun:
    """A search's run folder, its experiment, the storage URL it opens (with the password, unlike run.json)
    and the worker's prepared :class:`~nas.search.setup.Setup`."""

    folder: RunFolder
    experiment: Experiment
    storage_url: str
    setup: Setup

    @property
    def study_name(self) -> str:
        return self.experiment.name

    def study(self, storage: optuna.storages.BaseStorage | None = None,
              sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=storage or make_storage(self.storage_url),
                                 sampler=sampler)


def open_run(experiment: Experiment, folder: str | Path | None = None, storage: str | None = None,
             command: str = "", data: bool | None = None) -> SearchRun:
    """Create the run folder and study, or reopen them to resume (refusing a changed experiment); prepares the
    worker's Setup once (``data``: load the dataset's splits; default: when the evaluator needs them)."""
    run = RunFolder(Path(folder) if folder is not None else Path("results") / experiment.name)
    evaluator = evaluator_class(experiment.config.evaluator)
    url = storage or experiment.config.storage or run.default_storage
    if run.exists():
        info = run.info
        if info.digest != experiment.digest:
            raise ExperimentError(
                f"{run.path} was started with a different experiment ({run.file('experiment.yaml')}); "
                f"resume with that file, or start a new run with another name or --out folder.")
        if storage and info.storage != redact(url):
            raise ExperimentError(f"{run.path} uses storage {info.storage!r}, not {redact(url)!r}.")
        setup = prepare(experiment, data=evaluator.needs_data if data is None else data)
        run.update_experiment(experiment.text)  # this session's budget and winners: section
        return SearchRun(run, experiment, url, setup)
    setup = prepare(experiment, data=evaluator.needs_data if data is None else data)
    info = _info(setup, redact(url), command)
    run.path.mkdir(parents=True, exist_ok=True)
    optuna.create_study(study_name=experiment.name, storage=make_storage(url), load_if_exists=True,
                        directions=[o.direction for o in info.objectives])
    run.create(info, experiment.text)  # after the study: a folder with run.json always has its study
    return SearchRun(run, experiment, url, setup)


def _info(setup: Setup, storage: str, command: str) -> RunInfo:
    from nas import __version__

    experiment = setup.experiment
    references = reference_point(setup)
    cfg = experiment.config
    return RunInfo(
        name=experiment.name, study_name=experiment.name, storage=storage, space=cfg.space,
        dataset=experiment.dataset.name if experiment.dataset else None, sampler=cfg.sampler, seed=cfg.seed,
        budget=cfg.budget.model_dump(), objectives=tuple(replace(o, reference=references[o.name])
                                                          for o in experiment.objectives),
        constraints=tuple(experiment.constraints),
        profiles={name: dict(p.provenance()) for name, p in setup.profiles.items()}, evaluator=cfg.evaluator,
        digest=experiment.digest, nas_version=__version__, command=command, cwd=str(Path.cwd()),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
