"""Opening a search: the run folder and its study, created on the first start, checked on a resume."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from nas.experiment import Experiment, ExperimentError
from nas.run import RunFolder, RunInfo
from nas.search.evaluator import evaluator_class
from nas.search.scoring import reference_point
from nas.search.setup import Setup, prepare
from nas.search.study import absolute_url, make_storage, name_metrics, redact, sqlite_file

if TYPE_CHECKING:
    from nas.space import Space


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
    """Create the run folder and study, or reopen them to resume (refusing a changed experiment or space, and
    a study that is gone); prepares the worker's Setup once (``data``: load the dataset's splits; default: when
    the evaluator needs them). ``storage``: a URL given on the command line; default: the experiment's
    ``storage``, else ``study.db`` in the run folder; a resume reads it back from run.json."""
    run = RunFolder(Path(folder) if folder is not None else Path("results") / experiment.name)
    evaluator = evaluator_class(experiment.config.evaluator)
    data = evaluator.needs_data if data is None else data
    given = absolute_url(storage) if storage else None
    if given is None and experiment.config.storage:  # a SQLite path in the file is read from the file's folder
        given = absolute_url(experiment.config.storage, experiment.base)
    if run.exists():
        info = run.info
        if info.digest != experiment.digest:
            raise ExperimentError(
                f"{run.path} was started with a different experiment ({run.file('experiment.yaml')}); "
                f"resume with that file, or start a new run with another name or --out folder.")
        url = _resume_storage(run, given)
        setup = prepare(experiment, data=data, normalization=run.normalization)
        if info.space_digest and info.space_digest != space_digest(setup.space):
            raise ExperimentError(
                f"{experiment.resolve(experiment.config.space)}: the search space changed since {run.path} was "
                f"started, so its trials' choices no longer fit it; restore the space file, or start a new run "
                f"with another name or --out folder.")
        run.update_experiment(experiment.text)  # this session's budget and winners: section
        name_metrics(optuna.load_study(study_name=info.study_name, storage=make_storage(url, heartbeat=False)),
                     [o.name for o in info.objectives])  # a run made before studies had metric names
        return SearchRun(run, experiment, url, setup)
    url = given or run.default_storage
    setup = prepare(experiment, data=data)
    info = _info(setup, redact(url), command)
    run.path.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=experiment.name, storage=make_storage(url), load_if_exists=True,
                                directions=[o.direction for o in info.objectives])
    name_metrics(study, [o.name for o in info.objectives])
    run.create(info, experiment.text)  # after the study: a folder with run.json always has its study
    if setup.splits is not None:
        run.write_normalization(setup.splits.normalization)
    return SearchRun(run, experiment, url, setup)


def space_digest(space: Space) -> str:
    """A hash of a space's settings as the search draws from them (formatting and comments aside)."""
    text = json.dumps(space.config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resume_storage(run: RunFolder, given: str | None) -> str:
    """The storage URL of the run's study, checked to hold it before anything is opened (opening a SQLite URL
    creates the file): ``given`` when it is the one run.json records, else ``study.db`` in the folder (which
    may have moved), else run.json's ``storage``."""
    recorded = absolute_url(run.info.storage) if run.info.storage else ""
    if given is not None:
        if recorded and redact(given) not in (recorded, run.default_storage):
            raise ExperimentError(f"{run.path} uses storage {recorded!r}, not {redact(given)!r}; resume without "
                                  f"--storage (run.json keeps it), or start a new run with another --out folder.")
        url = given
    else:
        url = absolute_url(run.storage_url())
        if ":***@" in url:
            raise ExperimentError(f"{run.path} uses storage {url!r}; run.json keeps no password: give the URL "
                                  f"again with --storage.")
    db = sqlite_file(url)
    if db is not None and not db.is_file():
        raise ExperimentError(f"{run.path}: its study's database {db} does not exist (deleted or moved?), so there "
                              f"is nothing to resume; restore the file, or start a new run with another name or "
                              f"--out folder.")
    try:
        make_storage(url, heartbeat=False).get_study_id_from_name(run.info.study_name)
    except KeyError:
        raise ExperimentError(f"{run.path}: storage {redact(url)!r} holds no study named {run.info.study_name!r} "
                              f"(a database other than the one this run was started with?); give that storage "
                              f"with --storage, or start a new run with another name or --out folder.") from None
    return url


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
        digest=experiment.digest, space_digest=space_digest(setup.space),
        experiment_dir=str(experiment.base.resolve()) if experiment.base is not None else "",
        nas_version=__version__, command=command, cwd=str(Path.cwd()),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
