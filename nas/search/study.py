"""The Optuna side of a search: storage (with heartbeat), samplers, pruners, per-session seeds.

Storage is an SQLite file in the run folder or a database URL (``--storage``, e.g. PostgreSQL)
shared by workers on many machines, with Optuna's heartbeat: a trial whose process went silent is
failed by another worker and its parameters retried (:func:`nas.search.workers.retry_trial`).
``NAS_HEARTBEAT_S`` and ``NAS_HEARTBEAT_GRACE_S`` set the heartbeat interval and grace period.
"""

from __future__ import annotations

import importlib.util
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from nas.errors import NasError
from nas.experiment import ExperimentConfig, ExperimentError
from nas.optuna_compat import quiet_experimental
from nas.search.workers import retry_trial

#: Seconds between heartbeats, and how long a silent trial may go before another worker fails it.
HEARTBEAT_S = 5
GRACE_S = 30
#: What a database says when another worker created the same tables or rows a moment earlier.
_CREATION_RACE = ("already exists", "duplicate key", "UNIQUE constraint failed")


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: HEARTBEAT_S and GRACE_S, or the environment's."""
    out = []
    for var, default in (("NAS_HEARTBEAT_S", HEARTBEAT_S), ("NAS_HEARTBEAT_GRACE_S", GRACE_S)):
        text = os.environ.get(var, "").strip()
        if text and (not text.isdigit() or int(text) < 1):
            raise NasError(f"{var} must be a positive whole number of seconds, but got {text!r}.")
        out.append(int(text) if text else default)
    interval, grace = out
    if grace <= interval:
        raise NasError(f"the grace period NAS_HEARTBEAT_GRACE_S ({grace} s) must be longer than the heartbeat "
                       f"interval NAS_HEARTBEAT_S ({interval} s).")
    return interval, grace


def driver_url(url: str) -> str:
    """The URL SQLAlchemy opens: ``postgresql://`` means psycopg2 to it, so it is read as psycopg (3, the
    ``postgres`` extra) when only that is installed; ``postgres://`` is read as ``postgresql://``."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.split("://", 1)[1]
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def absolute_url(url: str, folder: str | Path | None = None) -> str:
    """``url`` with a relative SQLite file path made absolute (from ``folder``, default the current one), so
    that run.json names the same file from wherever the run is resumed; other URLs as they are."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:////"):
        return url
    path, sep, query = url[len("sqlite:///"):].partition("?")
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return f"sqlite:///{(Path(folder or '.') / path).resolve()}{sep}{query}"


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def redact(url: str) -> str:
    """The URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else url


def make_storage(url: str, heartbeat: bool = True,
                 on_stale: Callable[[optuna.Study, Any], None] = retry_trial) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite file or a database server URL); with ``heartbeat``, a trial whose worker went
    silent is failed by another worker and handed to ``on_stale`` (by default its parameters are retried)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by nas (progress bar, trials.csv)
    url = driver_url(url)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beat: dict[str, Any] = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        beat = {"heartbeat_interval": interval, "grace_period": grace, "heartbeat_stale_trial_callback": on_stale}
    try:
        storage = _open(url, kwargs, beat)
    except ImportError as exc:
        raise NasError(f"storage {redact(url)!r} needs a database driver that is not installed ({exc}); "
                       "for PostgreSQL: pip install 'nas[postgres]'.") from None
    except Exception as exc:  # sqlalchemy's errors: unreachable server, bad URL, ...
        raise NasError(f"cannot open storage {redact(url)!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if url.startswith("sqlite"):
        _fast_sqlite(storage)
    return storage


def _open(url: str, engine: dict[str, Any], beat: dict[str, Any]) -> optuna.storages.RDBStorage:
    for attempt in range(4):
        try:
            with quiet_experimental():
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **beat)
        except Exception as exc:  # workers started at once race to create the tables: the loser retries
            if attempt == 3 or not any(s in str(exc) for s in _CREATION_RACE):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead log with ``synchronous=NORMAL``: a commit no longer waits for the disk (Optuna commits
    every parameter and attribute), readers do not block the writer, and a killed process loses nothing
    it committed (only a power cut could lose the last commits)."""
    import sqlalchemy

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the tables reconnect with the pragmas


def name_metrics(study: optuna.Study, names: list[str]) -> None:
    """The objectives' names on the study (``study.metric_names``), which Optuna's plots and optuna-dashboard
    label their axes with; set once (a resumed run made before they were set gets them too)."""
    if study.metric_names != names:
        with quiet_experimental():
            study.set_metric_names(names)


def load_hint(study_name: str, url: str) -> str:
    """How to open a run's study with Optuna's own tools: its storage also holds the ``<name>:proxy``
    study, so ``optuna.load_study`` needs the name."""
    return (f"optuna.load_study(study_name={study_name!r}, storage={redact(url)!r}); "
            f"optuna-dashboard {redact(url)}")


#: NSGA-II/III's population when the budget has no trial count (a minutes-only budget).
MINUTES_POPULATION = 16


def budget_population(trials: int | None) -> int:
    """A genetic sampler's population for a budget of ``trials``: a tenth of it, between 8 and 100, so
    that every search gets at least ~5 generations. Optuna's default of 50 left a 40-trial search all
    random draws (the first generation is random), and a search of thousands of cheap supernet trials
    gains from a population large enough to cover the front (NSGA-II's papers use ~100)."""
    if trials is None:
        return MINUTES_POPULATION
    return max(8, min(100, trials // 10))


def make_sampler(name: str, seed: int | None, population: int | None,
                 trials: int | None = None) -> optuna.samplers.BaseSampler:
    """NSGA-II (default), NSGA-III, multi-objective TPE or random; all seeded. ``population`` (None: sized
    to the budget's ``trials``) is the genetic samplers' generation size and TPE's random start."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population or budget_population(trials), seed=seed)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(population_size=population or budget_population(trials), seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population or 10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ExperimentError(f"unknown sampler {name!r}; choose from nsga2, nsga3, tpe, random.")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def session_sampler(config: ExperimentConfig, existing: int, worker_index: int = 0,
                    shared_by: str | None = None) -> optuna.samplers.BaseSampler:
    """The experiment's sampler, seeded per worker and per session: a resumed sampler must not replay the
    first session's draws, and independent workers of a shared study (``shared_by`` their host:pid) must
    not draw alike."""
    seed = config.seed + 7919 * worker_index + 104_729 * existing
    if shared_by is not None:
        seed += zlib.crc32(shared_by.encode())
    return make_sampler(config.sampler, seed % 2**32, config.population, config.budget.trials)
