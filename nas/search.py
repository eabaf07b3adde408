"""The search driver: an Optuna study over architectures and compression settings.

``nas search EXPERIMENT.yaml`` runs one experiment (:mod:`nas.experiment`) into a
run folder (docs/run-folder.md) and can be stopped and started again at will:

1. Each trial draws a :class:`~nas.spec.Candidate` through ``Space.sample(trial)``.
2. Cheap objectives come first: exact MAdds/params, the Deep Compression size
   estimate and the latency predicted by each hardware profile. Constraints are
   set with ``trial.set_constraint``; a candidate that breaks a cheap constraint
   is recorded as complete but infeasible (accuracy 0) without any training.
3. The rest are trained briefly (the proxy). Validation accuracy after every
   epoch goes to a companion single-objective study (``<name>:proxy``) whose
   Optuna pruner stops weak candidates early: Optuna's pruners do not accept
   multi-objective reports, so the companion study carries them.
4. After every trial the results files are rewritten atomically: the trials
   table (CSV and Parquet), the Pareto front (``study.best_trials``) and the
   hypervolume history (Optuna's ``compute_hypervolume`` on normalised values).

Storage is an SQLite file in the run folder (or ``--storage URL``, e.g.
PostgreSQL) with Optuna's heartbeat: a trial whose process died is failed and
its parameters retried (as Optuna's ``RetryHeartbeatStaleTrialCallback`` does). On
one machine a dead worker is noticed at once, without waiting for the grace period:
trials record their worker's host and pid (and node: host name, boot and pid
namespace), and a RUNNING trial whose pid no longer exists on this node is failed
and retried the same way. Across machines only the heartbeat can tell; so a
worker whose share of the budget is done waits for the trials others are running,
up to the grace period, and fails and retries those whose worker went silent.

Independent workers on many machines share one study by running
``nas search EXP --storage postgresql://...`` each (with its own run folder, if
they like: every folder gets the results of the whole study). Their samplers are
seeded from the experiment's seed and the worker's host and pid, so they do not
draw alike; one worker on its own run folder's study is reproducible.
``NAS_HEARTBEAT_S`` and ``NAS_HEARTBEAT_GRACE_S`` set the heartbeat interval and
grace period (seconds); ``NAS_WORKER_HOST`` the host name a worker records.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import HardwareError, NasError
from nas.files import write_atomic
from nas.experiment import Experiment, ExperimentError, load_experiment
from nas.spec import Candidate, InvertedResidual

#: Seconds between heartbeats, and how long a silent trial may go before another worker fails it
#: (``NAS_HEARTBEAT_S`` / ``NAS_HEARTBEAT_GRACE_S`` override them; the workers of a study should agree).
HEARTBEAT_S = 5
GRACE_S = 30
#: A RUNNING trial this old without a worker attribute (set first thing in every trial) lost its worker.
ORPHAN_S = 10
#: How many times a killed trial's parameters are retried.
MAX_RETRY = 3
#: Random candidates (seeds 0..N-1) every latency profile must price when a search starts.
COVERAGE_SAMPLES = 16
#: Random candidates drawn (seeds 0..N-1) to fix each cost's hypervolume reference point.
REFERENCE_SAMPLES = 256
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialFailed(Exception):
    """Raised inside a trial to record it as FAIL; the reason is in its ``fail_reason`` user attribute."""


# ----------------------------------------------------------------------------- storage, samplers, pruners


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


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


#: What a database says when another worker created the same tables or rows a moment earlier.
_CREATION_RACE = ("already exists", "duplicate key", "UNIQUE constraint failed")


def make_storage(url: str, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeat and retry of stale trials (SQLite file or a database server URL)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by nas (progress bar, trials.csv)
    interval, grace = heartbeat_settings()
    url = driver_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        for attempt in range(4):
            try:
                with _quiet_experimental():
                    if not heartbeat:
                        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
                    else:
                        storage = optuna.storages.RDBStorage(
                            url, engine_kwargs=kwargs, heartbeat_interval=interval, grace_period=grace,
                            heartbeat_stale_trial_callback=retry_trial)
                break
            except Exception as exc:  # workers started at once race to create the tables: the loser retries
                if attempt == 3 or not any(s in str(exc) for s in _CREATION_RACE):
                    raise
                time.sleep(0.2 * (attempt + 1))
        if url.startswith("sqlite"):
            _fast_sqlite(storage)
        return storage
    except ImportError as exc:
        raise NasError(f"storage {redact(url)!r} needs a database driver that is not installed ({exc}); "
                       "for PostgreSQL: pip install 'nas[postgres]'.") from None
    except Exception as exc:  # sqlalchemy's errors: unreachable server, bad URL, ...
        raise NasError(f"cannot open storage {redact(url)!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


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


def redact(url: str) -> str:
    """The URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in cred else url


def make_sampler(name: str, seed: int | None, population: int | None) -> optuna.samplers.BaseSampler:
    """NSGA-II (default), NSGA-III, multi-objective TPE or random; all seeded."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population or 16, seed=seed)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(population_size=population or 16, seed=seed)
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


# ----------------------------------------------------------------------------- the run folder


@dataclass
class Run:
    """A run folder and what it was started with (docs/run-folder.md)."""

    folder: Path
    experiment: Experiment
    storage_url: str
    meta: dict[str, Any]

    @property
    def study_name(self) -> str:
        return self.experiment.name

    @property
    def objectives(self) -> list[dict[str, Any]]:
        return list(self.meta["objectives"])

    def study(self, storage: optuna.storages.BaseStorage | None = None,
              sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=storage or make_storage(self.storage_url),
                                 sampler=sampler)


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_run(experiment: Experiment, folder: Path | None = None, storage: str | None = None,
             command: str = "") -> Run:
    """Create the run folder and study, or reopen them to resume; refuses a changed experiment."""
    folder = Path(folder) if folder is not None else Path("results") / experiment.name
    url = storage or experiment.config.storage or default_storage(folder)
    meta_path = folder / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("digest") != experiment.digest:
            raise ExperimentError(
                f"{folder} was started with a different experiment ({folder / 'experiment.yaml'}); "
                f"resume with that file, or start a new run with another name or --out folder.")
        if storage and meta.get("storage") != redact(url):
            raise ExperimentError(f"{folder} uses storage {meta.get('storage')!r}, not {redact(url)!r}.")
        url = storage or (experiment.config.storage or default_storage(folder))
        return Run(folder, experiment, url, meta)
    folder.mkdir(parents=True, exist_ok=True)
    from nas import __version__

    objectives = [o.to_dict() for o in experiment.objectives]
    references = reference_point(experiment)
    for o in objectives:
        o["reference"] = references[o["name"]]
    meta = {
        "name": experiment.name, "study_name": experiment.name, "storage": redact(url),
        "space": experiment.config.space, "dataset": experiment.dataset.name if experiment.dataset else None,
        "sampler": experiment.config.sampler, "seed": experiment.config.seed,
        "budget": experiment.config.budget.model_dump(), "objectives": objectives,
        "constraints": [c.to_dict() for c in experiment.constraints],
        "profiles": {name: _provenance(name) for name in _profile_names(experiment)},
        "digest": experiment.digest, "nas_version": __version__, "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    study_kwargs = {"directions": [o["direction"] for o in objectives]}
    optuna.create_study(study_name=experiment.name, storage=make_storage(url), load_if_exists=True, **study_kwargs)
    write_atomic(folder / "experiment.yaml", experiment.text)
    write_atomic(meta_path, json.dumps(meta, indent=1) + "\n")
    return Run(folder, experiment, url, meta)


def _profile_names(experiment: Experiment) -> list[str]:
    names = list(experiment.config.profiles)
    for o in experiment.objectives:
        if o.profile and o.profile not in names:
            names.append(o.profile)
    return names


def _provenance(name: str) -> dict[str, Any]:
    from nas.hardware import get_profile

    return dict(get_profile(name).provenance())


def reference_point(experiment: Experiment) -> dict[str, float]:
    """Each objective's fixed hypervolume reference: accuracy 0; a cost its constraint limit if it has
    one, else 1.1x its largest value over the space's first REFERENCE_SAMPLES random candidates."""
    limits = {c.name: c.limit for c in experiment.constraints if c.op == "<="}
    needed = {o.name for o in experiment.objectives if o.kind != "accuracy" and o.name not in limits}
    if not needed:
        return {o.name: 0.0 if o.kind == "accuracy" else float(limits[o.name]) for o in experiment.objectives}
    scorer = CheapScorer(experiment, data=False)
    worst: dict[str, float] = {}
    for seed in range(REFERENCE_SAMPLES):
        try:
            costs = scorer(scorer.space.random(seed), needed)
        except HardwareError:
            continue
        for k, v in costs.items():
            worst[k] = max(worst.get(k, 0.0), v)
    out = {}
    for o in experiment.objectives:
        if o.kind == "accuracy":
            out[o.name] = 0.0
        elif o.name in limits:
            out[o.name] = float(limits[o.name])
        else:
            out[o.name] = float(f"{1.1 * worst.get(o.name, 1.0):.4g}")
    return out


# ----------------------------------------------------------------------------- scoring


class CheapScorer:
    """MAdds, params, compressed size and predicted latency of a candidate: no training, microseconds."""

    def __init__(self, experiment: Experiment, data: bool = True) -> None:
        from nas.data import load_dataset
        from nas.hardware import get_profile
        from nas.space import load_space

        space = load_space(experiment.resolve(experiment.config.space))
        self.splits = None
        ds = experiment.dataset
        if ds is not None:  # the dataset sets the input shape and class count
            splits = load_dataset(ds.name, seed=ds.split_seed, root=ds.root)
            if space.input_shape != splits.input_shape or space.config.num_classes != splits.num_classes:
                space = space.with_input(splits.input_shape, splits.num_classes)
            self.splits = splits if data else None
        self.space = space
        names = _profile_names(experiment)
        self.profiles = {name: get_profile(name) for name in names}
        self.first = names[0] if names else None
        for name, profile in self.profiles.items():  # a table that lacks the space's operators is a bad input,
            for seed in range(COVERAGE_SAMPLES):     # not a search whose every trial fails
                try:
                    profile.latency_ms(space.random(seed).arch)
                except HardwareError as exc:
                    raise HardwareError(f"profile {name!r} cannot price candidates of space {space.name!r} "
                                        f"(seed {seed}): {exc}") from None

    def __call__(self, candidate: Candidate, only: set[str] | None = None) -> dict[str, float]:
        """All cheap costs, or those named in ``only`` (the size estimate is the slow one)."""
        from nas.cost import count, size_bits

        def want(name: str) -> bool:
            return only is None or name in only or (name == "latency_ms:" + str(self.first) and "latency_ms" in only)

        cost = count(candidate.arch)
        out = {"madds": float(cost.madds), "params": float(cost.params)}
        if want("size_kb"):
            out["size_kb"] = size_bits(candidate.arch, candidate.compression) / 8000.0
        for name, profile in self.profiles.items():
            if want(f"latency_ms:{name}"):
                out[f"latency_ms:{name}"] = float(profile.latency_ms(candidate.arch))
        if self.first is not None and f"latency_ms:{self.first}" in out:
            out["latency_ms"] = out[f"latency_ms:{self.first}"]
        return out


def short_label(candidate: Candidate) -> str:
    """A few characters that tell candidates apart on a plot: blocks, kernels, compression."""
    arch, comp = candidate.arch, candidate.compression
    blocks = [layer for layer in arch.layers if isinstance(layer, InvertedResidual)]
    kernels = "/".join(str(k) for k in sorted({b.kernel for b in blocks}))
    parts = [f"{len(blocks)}blk k{kernels}" if blocks else f"{len(arch.layers)} layers"]
    if comp.sparsity_conv or comp.sparsity_linear:
        parts.append(f"p{comp.sparsity_conv:.2f}/{comp.sparsity_linear:.2f}".replace("0.", "."))
    if comp.quantization != "none":
        parts.append(comp.quantization[:3])
    elif comp.codebook_bits is not None:
        parts.append(f"{comp.codebook_bits}b")
    if comp.lowrank_ratio is not None:
        parts.append(f"r{comp.lowrank_ratio:g}")
    return " ".join(parts)


def cheap_violations(experiment: Experiment, costs: dict[str, float]) -> dict[str, float]:
    """Each constraint known before training, as Optuna's violation (<= 0 holds), in the file's order."""
    return {c.name: c.violation(costs[c.name]) for c in experiment.constraints if c.name != "accuracy"}


def accuracy_violations(experiment: Experiment, accuracy: float) -> dict[str, float]:
    """The accuracy constraint's violation (empty when there is none)."""
    return {c.name: c.violation(accuracy) for c in experiment.constraints if c.name == "accuracy"}


def objective_values(experiment: Experiment, costs: dict[str, float], accuracy: float) -> tuple[float, ...]:
    """The study's values of a trial, in the order of the experiment's objectives."""
    values = {**costs, "accuracy": accuracy}
    return tuple(values[o.name] for o in experiment.objectives)


def proxy_setup(experiment: Experiment, candidate: Candidate, number: int, threads: int) -> tuple[Any, Any]:
    """``(model, TrainConfig)`` of trial ``number``'s proxy training: the network built under the trial's
    seed and the experiment's proxy settings (the same on every backend)."""
    import torch

    from nas.models import build_model
    from nas.train import TrainConfig

    proxy = experiment.config.proxy
    seed = experiment.config.seed * 100_003 + number
    config = TrainConfig(epochs=proxy.epochs, max_samples=proxy.max_samples, batch_size=proxy.batch_size,
                         lr=proxy.lr, seed=seed, threads=threads, progress=False)
    torch.manual_seed(seed)
    return build_model(candidate.arch), config


class TrialObjective:
    """The function Optuna calls for each trial (one per worker process)."""

    def __init__(self, run: Run, threads: int = 1) -> None:
        self.run = run
        self.experiment = run.experiment
        self.scorer = CheapScorer(run.experiment)
        self.threads = threads
        cfg = run.experiment.config
        self.proxy_study = None
        if self.experiment.needs_training:
            # Its own connection without heartbeat: proxy trials are asked and told by hand, not by optimize().
            self.proxy_study = optuna.create_study(
                study_name=f"{run.study_name}:proxy", storage=make_storage(run.storage_url, heartbeat=False),
                direction="maximize", load_if_exists=True,
                pruner=make_pruner(cfg.proxy.pruner, cfg.proxy.epochs))
        self.worker = f"{worker_host()}:{os.getpid()}"

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        trial.set_user_attr("node", NODE)  # before "worker": a trial with a worker always has its node
        trial.set_user_attr("worker", self.worker)
        if trial.user_attrs.get("fail_reason"):  # a retry starts with a copy of the failed trial's attributes
            trial.set_user_attr("fail_reason", "")
            trial.set_user_attr("retried", False)
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl+C); retried on resume")
            trial.set_user_attr("retried", True)
            with _quiet_experimental():
                trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        except (TrialFailed, optuna.TrialPruned):
            raise
        except Exception as exc:  # any error in one candidate fails that trial, not the search
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise TrialFailed(str(exc)) from exc

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        candidate = self.scorer.space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_json())
        trial.set_user_attr("label", short_label(candidate))
        try:
            costs = self.scorer(candidate)
        except HardwareError as exc:
            trial.set_user_attr("fail_reason", f"HardwareError: {exc}"[:500])
            raise TrialFailed(str(exc)) from None
        for k, v in costs.items():
            trial.set_user_attr(k, v)
        cheap = cheap_violations(self.experiment, costs)
        feasible = all(v <= 0 for v in cheap.values())
        for name, v in cheap.items():
            trial.set_constraint(name, v)
        accuracy = math.nan
        trial.set_user_attr("trained", False)
        if self.experiment.needs_training:
            accuracy = self._train(trial, candidate) if feasible else 0.0
        for name, v in accuracy_violations(self.experiment, accuracy).items():
            trial.set_constraint(name, v)
        return objective_values(self.experiment, costs, accuracy)

    def _train(self, trial: optuna.Trial, candidate: Candidate) -> float:
        proxy = self.experiment.config.proxy
        model, config = proxy_setup(self.experiment, candidate, trial.number, self.threads)
        assert self.proxy_study is not None and self.scorer.splits is not None
        fidelity = self.proxy_study.ask()
        fidelity.set_user_attr("trial", trial.number)
        fidelity.set_user_attr("node", NODE)
        fidelity.set_user_attr("worker", self.worker)
        start = time.perf_counter()
        stop: list[str] = []

        def on_epoch(epoch: int, accuracy: float) -> bool:  # epoch counts from 0; reported from 1
            done = epoch + 1
            fidelity.report(accuracy, done)
            if proxy.max_seconds is not None and time.perf_counter() - start > proxy.max_seconds:
                stop.append(f"time budget of {proxy.max_seconds:g} s used up after epoch {done}")
                return True
            if done < proxy.epochs and fidelity.should_prune():
                stop.append(f"pruned after epoch {done} (validation accuracy {accuracy:.3f})")
                return True
            return False

        try:
            result = proxy_train(model, candidate, self.scorer.splits, config, on_epoch, proxy.compressed)
        except BaseException:  # the trial fails (or is interrupted): its proxy trial must not stay RUNNING
            self.proxy_study.tell(fidelity, state=TrialState.FAIL)
            raise
        trial.set_user_attr("trained", True)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("history", [round(a, 5) for a in result.history])
        trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        if result.failed or stop[:1] and stop[0].startswith("time"):
            reason = result.failed or stop[0]
            trial.set_user_attr("fail_reason", reason)
            self.proxy_study.tell(fidelity, state=TrialState.FAIL)
            raise TrialFailed(reason)
        if stop:
            trial.set_user_attr("fail_reason", stop[0])
            trial.set_user_attr("accuracy", result.val_accuracy)
            self.proxy_study.tell(fidelity, state=TrialState.PRUNED)
            raise optuna.TrialPruned(stop[0])
        self.proxy_study.tell(fidelity, result.val_accuracy)
        return float(result.val_accuracy)


def proxy_train(model: Any, candidate: Candidate, splits: Any, config: Any, on_epoch: Any,
                compressed: bool = True) -> Any:
    """The proxy: train ``config.epochs``; with ``compressed`` (and a candidate that compresses), the last
    epoch trains the model with its compression applied (pruning masks, codebooks, binary/ternary
    weights, low-rank factors), so the accuracy the search sees is the compressed model's. Epochs are
    numbered on through both phases for ``on_epoch``; returns the last phase's TrainResult with the
    whole history."""
    from dataclasses import replace

    from nas.compress import apply_compression
    from nas.compress._apply import stages
    from nas.train import train

    if not compressed or not stages(candidate.compression):
        return train(model, splits, config, on_epoch=on_epoch)
    dense_epochs = config.epochs - 1
    history: list[float] = []
    if dense_epochs:
        first = train(model, splits, replace(config, epochs=dense_epochs), on_epoch=on_epoch)
        history = list(first.history)
        if first.failed or first.stopped_early:  # failed, pruned or out of time
            return first
    model = apply_compression(model, candidate.compression, inplace=True)
    last = train(model, splits, replace(config, epochs=1, seed=config.seed + 1),
                 on_epoch=lambda epoch, accuracy: on_epoch(dense_epochs + epoch, accuracy))
    return replace(last, history=history + list(last.history), epochs=dense_epochs + last.epochs)


# ----------------------------------------------------------------------------- dead workers


def worker_host() -> str:
    """The host name trials record for this worker: ``$NAS_WORKER_HOST``, else the machine's."""
    return os.environ.get("NAS_WORKER_HOST") or socket.gethostname()


def _node() -> str:
    """Which processes this one can see: host name, boot and pid namespace. The pid reaper judges only
    trials of its own node, so machines or containers that share a host name never fail live trials."""
    parts = [worker_host()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


NODE = _node()


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (a WAITING copy), as Optuna's RetryHeartbeatStaleTrialCallback
    does, at most MAX_RETRY times; the copy leaves out the dead worker's identity (so that no reaper takes
    the retry for the dead trial before it starts), and the trial's companion proxy trial is failed too."""
    _fail_proxy_trials(study, {trial.number})
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY or not trial.params:
        return
    system = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
              "retry_history": history}
    user = {k: v for k, v in trial.user_attrs.items() if k not in ("worker", "node", "fail_reason", "retried")}
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                        distributions=trial.distributions, user_attrs=user, system_attrs=system))


def _fail_proxy_trials(study: optuna.Study, numbers: set[int]) -> None:
    """Fail the RUNNING proxy-training trials (companion study) of the given main trials."""
    storage = study._storage
    try:
        proxy_id = storage.get_study_id_from_name(f"{study.study_name}:proxy")
    except KeyError:
        return
    for t in storage.get_all_trials(proxy_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("trial") in numbers:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_unowned_proxy_trials(proxy_study: optuna.Study) -> None:
    """Fail RUNNING proxy trials that never got their owner's attributes (a worker killed between asking
    for one and labelling it). Called only when no search trial is RUNNING: every live proxy trial
    belongs to a RUNNING search trial, so none of these can be live."""
    for t in proxy_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not t.user_attrs.get("worker"):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                proxy_study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def reap_dead_workers(study: optuna.Study, retry: bool = True) -> list[int]:
    """Fail RUNNING trials whose worker process on this node is gone, and retry their parameters.

    Heartbeats find dead workers on any machine, but only after the grace period;
    this finds the ones on this machine at once (pid check). Returns the trial numbers failed.
    """
    storage = study._storage
    failed = []
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        pid = worker.rpartition(":")[2]
        if not worker and t.datetime_start and (now - t.datetime_start).total_seconds() > ORPHAN_S:
            reason = "its worker died before the trial began; nothing to retry"  # killed between ask and objective
        elif t.user_attrs.get("node") == NODE and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            reason = f"worker {worker} died mid-trial; retried"
        else:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            storage.set_trial_user_attr(t._trial_id, "retried", True)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        if retry:
            retry_trial(study, storage.get_trial(t._trial_id))
    return failed


# ----------------------------------------------------------------------------- results


def objective_columns(meta: dict[str, Any]) -> list[str]:
    return [o["name"] for o in meta["objectives"]]


def normalised_losses(values: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Minimisation values scaled so the reference point is all ones: 1 - accuracy, cost / reference."""
    out = np.empty_like(values, dtype=float)
    for j, o in enumerate(meta["objectives"]):
        if o["direction"] == "maximize":
            out[:, j] = 1.0 - values[:, j]
        else:
            out[:, j] = values[:, j] / o["reference"]
    return out


def hypervolume(values: np.ndarray, meta: dict[str, Any]) -> float:
    """Optuna's hypervolume of ``values`` (rows of objective values) on the normalised scale."""
    from optuna._hypervolume import compute_hypervolume

    if len(values) == 0:
        return 0.0
    losses = normalised_losses(np.asarray(values, dtype=float), meta)
    losses = losses[np.all(losses < 1.0, axis=1) & np.all(np.isfinite(losses), axis=1)]
    if len(losses) == 0:
        return 0.0
    return float(compute_hypervolume(losses, np.ones(losses.shape[1])))


def _feasible(t: FrozenTrial) -> bool:
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs  # noqa: PLC0415

    if t.state != TrialState.COMPLETE:
        return False
    return all(v <= 0 for v in _get_constraints_from_system_attrs(t.system_attrs).values())


def pareto_front(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``study.best_trials`` (feasible trials only when constraints are set) on an already fetched list."""
    from optuna.study._constrained_optimization import _is_constrained_optimization
    from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

    return _get_pareto_front_trials_by_trials(list(trials), study.directions,
                                              consider_constraint=_is_constrained_optimization(list(trials)))


def trials_frame(study: optuna.Study, meta: dict[str, Any], trials: Sequence[FrozenTrial] | None = None) -> Any:
    """Every trial as a row (docs/run-folder.md), Pareto membership as ``study.best_trials`` says."""
    import pandas as pd
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    front = {t.number for t in pareto_front(study, trials)}
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    names = objective_columns(meta)
    rows = []
    for t in trials:
        ua = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for j, name in enumerate(names):
            row[name] = t.values[j] if t.values is not None else ua.get(name, math.nan)
        for k in ("madds", "params", "size_kb", "latency_ms"):
            row.setdefault(k, ua.get(k, math.nan))
        row.update(feasible=_feasible(t), pareto=t.number in front, trained=bool(ua.get("trained", False)))
        for k, v in _get_constraints_from_system_attrs(t.system_attrs).items():
            row[f"c:{k}"] = v
        for k, v in t.params.items():
            row[f"param:{k}"] = v
        for k, v in ua.items():
            if k.startswith("latency_ms:") and k not in row:
                row[k] = v
        retry = t.system_attrs.get("failed_trial", ua.get("retry_of"))
        reason = ua.get("fail_reason", "")
        if t.state == TrialState.FAIL and not reason and t.number in retried:  # failed by another worker's heartbeat check
            reason = "its worker went silent (no heartbeat within the grace period); retried"
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if (
            t.datetime_complete and t.datetime_start) else math.nan
        row.update(label=ua.get("label", ""), candidate=ua.get("candidate", ""), epochs=ua.get("epochs", 0),
                   history=json.dumps(ua.get("history", [])), fail_reason=reason,
                   retry_of=retry if retry is not None else "", worker=ua.get("worker", ""),
                   datetime_start=t.datetime_start.isoformat() if t.datetime_start else "",
                   datetime_complete=t.datetime_complete.isoformat() if t.datetime_complete else "",
                   duration_s=duration)
        rows.append(row)
    frame = pd.DataFrame(rows)
    first = [c for c in frame.columns if not c.startswith("param:") and c != "candidate"]
    frame = frame[first + [c for c in frame.columns if c.startswith("param:")] + ["candidate"] * ("candidate" in frame)]
    if frame.empty:
        frame = pd.DataFrame(columns=["number", "state", *names, "feasible", "pareto", "trained"])
    return frame


def hypervolume_history(frame: Any, meta: dict[str, Any]) -> Any:
    """The hypervolume after each finished trial, in order of completion."""
    import pandas as pd

    names = objective_columns(meta)
    done = frame[frame["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    if done.empty:
        return pd.DataFrame(columns=["finished", "number", "hypervolume"])
    done = done.sort_values(["datetime_complete", "number"])
    ok = (done["state"] == "COMPLETE") & done["feasible"].astype(bool)
    values = done[names].to_numpy(dtype=float)
    rows, hv, points = [], 0.0, []
    for i, (number, good, vals) in enumerate(zip(done["number"], ok, values, strict=True)):
        if good:
            points.append(vals)
            hv = hypervolume(np.array(points), meta)
        rows.append({"finished": i + 1, "number": int(number), "hypervolume": hv})
    return pd.DataFrame(rows)


def write_results(run: Run, study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> tuple[Any, float]:
    """Rewrite trials.csv/.parquet, front.csv and hypervolume.csv; returns (trials frame, hypervolume).

    Each file is replaced atomically; if the disk is full, the files already there stay whole and the
    error says so (the study keeps every finished trial; resuming writes them all)."""
    try:
        return _write_results(run, study, trials)
    except OSError as exc:
        raise NasError(f"cannot write the results into {run.folder}: {exc.strerror or exc}; every finished trial is "
                       f"kept in the study and the files there are whole: free space and run the same command to "
                       f"resume.") from None


def _write_results(run: Run, study: optuna.Study, trials: Sequence[FrozenTrial] | None) -> tuple[Any, float]:
    import io

    frame = trials_frame(study, run.meta, trials)
    write_atomic(run.folder / "trials.csv", frame.to_csv(index=False))
    buf = io.BytesIO()
    frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(buf, index=False)
    write_atomic(run.folder / "trials.parquet", buf.getvalue())
    write_atomic(run.folder / "front.csv", frame[frame["pareto"].astype(bool)].to_csv(index=False))
    history = hypervolume_history(frame, run.meta)
    write_atomic(run.folder / "hypervolume.csv", history.to_csv(index=False))
    hv = float(history["hypervolume"].iloc[-1]) if len(history) else 0.0
    return frame, hv


# ----------------------------------------------------------------------------- the driver


def counted(trials: Sequence[FrozenTrial]) -> int:
    """Trials that used up budget: complete, pruned, or failed by their own candidate. A trial failed because
    its worker died or was interrupted is not counted: its parameters are retried."""
    n = 0
    for t in trials:
        if t.state in FINISHED:
            ua = t.user_attrs
            n += t.state != TrialState.FAIL or (bool(ua.get("fail_reason")) and not ua.get("retried"))
    return n


@dataclass
class SearchResult:
    run: Run
    frame: Any
    hypervolume: float
    trials: int
    front: int
    seconds: float


def search(experiment: Experiment | str | Path, *, folder: str | Path | None = None, storage: str | None = None,
           workers: int | None = None, progress: bool | None = None, command: str = "",
           worker_index: int = 0) -> SearchResult:
    """Run (or resume) an experiment until its budget is used; returns the results of the whole study.

    With ``workers > 1`` this process starts ``workers - 1`` more ``nas search`` processes on the same
    storage and works alongside them; each trains with ``proxy.threads`` threads (default 1).
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    run = open_run(exp, Path(folder) if folder else None, storage, command)
    n_workers = workers or exp.config.workers
    started = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    if worker_index == 0 and n_workers > 1:
        procs = _start_workers(run, n_workers)
    try:
        _work(run, n_workers, worker_index, progress if worker_index == 0 else False, started)
    finally:
        for p in procs:
            try:
                p.wait()
            except KeyboardInterrupt:
                p.terminate()
                p.wait()
        st = run.study()
        if worker_index == 0:
            reap_dead_workers(st)
        frame, hv = write_results(run, st)
    bad = [p.returncode for p in procs if p.returncode not in (0, None)]
    if bad:
        raise NasError(f"{len(bad)} worker process(es) failed (exit codes {bad}); their trials were retried or "
                       f"recorded; run the same command to resume.")
    return SearchResult(run, frame, hv, counted(st.get_trials(deepcopy=False)), int(frame["pareto"].sum()) if len(frame) else 0,
                        time.perf_counter() - started)


def _start_workers(run: Run, n_workers: int) -> list[subprocess.Popen[bytes]]:
    src = run.experiment.source
    if src.startswith("<"):  # given in Python: the run folder's copy has the same settings
        src = str(run.folder / "experiment.yaml")
    args = [sys.executable, "-m", "nas", "search", src, "--out", str(run.folder), "--storage", run.storage_url,
            "--workers", str(n_workers), "--no-progress"]
    if run.experiment.config.budget.trials is not None:  # --trials (or a changed budget) reaches the workers
        args += ["--trials", str(run.experiment.config.budget.trials)]
    return [subprocess.Popen([*args, "--worker-index", str(i)]) for i in range(1, n_workers)]


def _work(run: Run, n_workers: int, worker_index: int, progress: bool | None, started: float) -> None:
    cfg = run.experiment.config
    storage = make_storage(run.storage_url)
    # Seeded per worker and per session: a resumed sampler must not replay the first session's draws.
    existing = len(run.study(storage).get_trials(deepcopy=False))
    seed = cfg.seed + 7919 * worker_index + 104_729 * existing
    if worker_index == 0 and run.storage_url != default_storage(run.folder):
        # A shared study: independent workers (other machines) all start as worker 0 and must not draw alike.
        seed += zlib.crc32(f"{worker_host()}:{os.getpid()}".encode())
    sampler = make_sampler(cfg.sampler, seed % 2**32, cfg.population)
    study = run.study(storage, sampler)
    reap_dead_workers(study)
    objective = TrialObjective(run, cfg.proxy.threads)
    if objective.proxy_study is not None:
        reap_dead_workers(objective.proxy_study, retry=False)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _fail_unowned_proxy_trials(objective.proxy_study)
    budget = cfg.budget.trials

    def budget_met(trials: Sequence[FrozenTrial]) -> bool:
        return budget is not None and counted(trials) >= budget and not any(
            t.state == TrialState.WAITING for t in trials)

    if budget_met(study.get_trials(deepcopy=False)) and not _wait_for_others(study):
        return
    bar = _progress_bar(run, budget, counted(study.get_trials(deepcopy=False)), progress)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if n_workers > 1:
            reap_dead_workers(study)
        trials = study.get_trials(deepcopy=False)
        frame, hv = write_results(run, study, trials)
        n = counted(trials)
        if bar is not None:
            bar.n = min(n, bar.total) if bar.total else n
            bar.set_postfix_str(f"front {int(frame['pareto'].sum())}, HV {hv:.4f}", refresh=True)
            if trial.state == TrialState.FAIL:
                bar.write(f"trial {trial.number} failed: {trial.user_attrs.get('fail_reason', '?')}")
        if budget_met(trials):
            study.stop()

    deadline = None
    if cfg.budget.minutes is not None:
        deadline = time.monotonic() + max(1.0, cfg.budget.minutes * 60 - _elapsed_before(run))
    try:
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            study.optimize(objective, n_trials=None, timeout=timeout, catch=(TrialFailed,), callbacks=[after_trial],
                           gc_after_trial=False)
            if (deadline is not None and time.monotonic() >= deadline) or not _wait_for_others(study):
                break
    finally:
        if bar is not None:
            bar.close()


def _wait_for_others(study: optuna.Study) -> bool:
    """The budget is met: wait for the trials other workers are running, at most the grace period, failing
    and retrying those whose worker went silent (a dead worker on another machine is found no other way).
    True when retries are waiting to be run."""
    interval, grace = heartbeat_settings()
    end = time.monotonic() + grace + interval
    while True:
        with _quiet_experimental():
            optuna.storages.fail_stale_trials(study)
        reap_dead_workers(study)
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        if not trials or time.monotonic() >= end:
            return False
        time.sleep(min(interval, 0.5))


def _elapsed_before(run: Run) -> float:
    """Wall time already spent by earlier sessions of this run (sum of trial durations / workers is not
    the wall time, so use first start to last completion of finished trials)."""
    st = run.study()
    done = [t for t in st.get_trials(deepcopy=False, states=FINISHED) if t.datetime_start and t.datetime_complete]
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / max(1, run.experiment.config.workers)


def _progress_bar(run: Run, budget: int | None, done: int, progress: bool | None) -> Any:
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=budget, initial=done, desc=f"search {run.study_name}", unit="trial",
                disable=None if progress is None else not progress, dynamic_ncols=True)
