"""The Ray Tune backend of ``nas search``: ``nas search EXP --backend ray [--address HOST:PORT | auto]``.

The same trials as the local backend (:mod:`nas.search`), run as Ray Tune trials on a local Ray instance or
a cluster, into the same run folder (docs/run-folder.md):

- **Sampling.** Ray's ``OptunaSearch`` with a define-by-run space (``Space.sample(trial)``), the
  experiment's Optuna sampler (NSGA-II, ...), its objectives as the multi-objective ``metric``/``mode``
  lists, and the run's own storage and study name: the study is the one in ``RUN/study.db`` (or
  ``--storage URL``), so ``nas plot``, ``nas report``, ``nas finetune`` and a later local-backend session
  read it unchanged.
- **Trials.** Each Tune trial computes the cheap costs of its candidate, skips training when a cheap
  constraint breaks, else trains the proxy and reports validation accuracy after every epoch with
  ``tune.report(..., checkpoint=...)`` (weights as a safetensors checkpoint, :mod:`nas.checkpoint`).
  Trials never open the study: the driver writes what a trial reported into its Optuna trial (user
  attributes, ``set_constraint``) and then tells the study, so trials.csv has the same columns as a local
  run and ``best_trials`` honours the same constraints. Workers on other machines need no access to the
  storage.
- **Early stopping.** ASHA (``ASHAScheduler``, reduction factor 2, grace period one epoch) on the per-epoch
  validation accuracy takes the place of the local backend's Optuna pruner; ``proxy.pruner: none`` runs
  every trial to the end. A trial ASHA stops is PRUNED, with its last accuracy as the local backend records.
- **Resources.** ``resources: {cpus, gpus}`` of the experiment is what each trial reserves (default
  ``proxy.threads`` CPUs, no GPU); as many trials run at once as the cluster holds.
- **Resume.** Each session is a Tune experiment in ``RUN/ray/session-N`` (listed in
  ``RUN/ray/sessions.json``). An interrupted session (Ctrl+C: Tune saves its state and stops; or a killed
  driver: its last periodic save) is picked up with ``Tuner.restore`` and its unfinished trials continue from
  their last checkpoint; budget left after that (e.g. a raised ``--trials``) runs as a new session on the
  same study. Optuna trials a dead driver left RUNNING that no restored trial owns are failed and their
  parameters retried, as the local backend's reaper does.

**Token authentication.** Ray 2.59+ turns it on for a new local ``ray.init()`` cluster when
``RAY_AUTH_MODE`` is unset, and then writes a token to ``~/.ray/auth_token`` if it finds none. The choice
here, made explicitly: the local instance keeps authentication on, with a fresh random token for this search
only, held in this process's environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``) from which the Ray
processes it starts inherit it, and forgotten when the search ends. Nothing is written to the home folder,
and the instance is not open: Ray's ports listen on every interface even for a local instance, so with
authentication off any user of a shared machine (or of its network) could run code in our workers. The
user's settings win: ``RAY_AUTH_MODE=disabled`` turns it off, and a token given in ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` is used (with ``RAY_AUTH_MODE=token`` set for it when unset). With ``--address`` the
cluster decides: Ray never turns tokens on by itself for an explicit address, so a cluster started with a
token needs that token in ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` (README, "Many machines").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from nas.errors import HardwareError, NasError
from nas.experiment import Experiment, ExperimentConfig, load_experiment
from nas.files import write_atomic
from nas.search import (
    MAX_RETRY,
    NODE,
    CheapScorer,
    Run,
    SearchResult,
    _progress_bar,
    accuracy_violations,
    cheap_violations,
    counted,
    make_sampler,
    make_storage,
    objective_values,
    open_run,
    proxy_setup,
    proxy_train,
    reap_dead_workers,
    short_label,
    worker_host,
    write_results,
)
from nas.spec import Candidate

#: Folder of the Tune experiments inside the run folder, and its list of sessions.
RAY_DIR = "ray"
SESSIONS = "sessions.json"
#: ASHA halves the trials at each rung (epochs 1, 2, 4, ...), like the local backend's median pruner.
ASHA_REDUCTION = 2
#: Object store of a local instance: trials exchange only small results, so Ray's default (30% of memory) is waste.
OBJECT_STORE_BYTES = 128 * 2**20
#: Environment of the driver while a search runs: Tune's plain output engine at verbose=0 prints nothing, and
#: results may omit metrics (a trial rejected before training reports no validation accuracy to ASHA).
#: A snapshot of the experiment after every checkpoint (num_to_keep=1 forces one) is wanted, not worth a warning.
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
              "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
#: Cost keys a trial reports (latency also as ``latency_ms:<profile>``).
_COSTS = ("madds", "params", "size_kb", "latency_ms")


# ----------------------------------------------------------------------------- the driver


def search(experiment: Experiment | str | Path, *, folder: str | Path | None = None, storage: str | None = None,
           address: str | None = None, num_cpus: int | None = None, progress: bool | None = None,
           command: str = "") -> SearchResult:
    """Run (or resume) an experiment as Ray Tune trials until its budget is used.

    ``address``: a running cluster (``HOST:PORT`` or ``auto``); None starts a local instance with
    ``num_cpus`` CPUs (default: all of this machine's). Inside a caller's own ``ray.init()`` that session is
    used as it is. Raises KeyboardInterrupt when the search was interrupted (its state is saved; the same
    call resumes it).
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    run = open_run(exp, Path(folder) if folder else None, storage, command)
    started = time.perf_counter()
    interrupted = False
    try:
        with ray_session(address, num_cpus):
            interrupted = _Driver(run, progress).drive()
    finally:
        st = run.study()
        frame, hv = write_results(run, st)
    if interrupted:
        raise KeyboardInterrupt
    return SearchResult(run, frame, hv, counted(st.get_trials(deepcopy=False)),
                        int(frame["pareto"].sum()) if len(frame) else 0, time.perf_counter() - started)


#: The driver of the search running in this process: Tune callbacks and a restored searcher find it here
#: (they are pickled into the Tune experiment, so they hold no reference to it themselves).
_CURRENT: _Driver | None = None


class _Driver:
    """One ``search`` call: restores an interrupted Tune session, then runs a new one for the budget left."""

    def __init__(self, run: Run, progress: bool | None) -> None:
        self.run = run
        self.experiment = run.experiment
        self.storage = make_storage(run.storage_url, heartbeat=False)  # asked and told by hand, like proxy trials
        self.study = run.study(self.storage)
        self.folder = (run.folder / RAY_DIR).resolve()
        self.progress = progress
        self.bar: Any = None
        #: Wall-clock end of the time budget (``time.time()``): no trial starts after it, running ones finish
        #: (as the local backend's ``optimize(timeout=...)``); None without one.
        self.deadline: float | None = None

    def drive(self) -> bool:
        """True when interrupted."""
        global _CURRENT
        _CURRENT = self
        budget = self.experiment.config.budget
        self.bar = _progress_bar(self.run, budget.trials, counted(self.study.get_trials(deepcopy=False)),
                                 self.progress)
        try:
            sessions = self._sessions()
            if budget.minutes is not None:
                self.deadline = time.time() + budget.minutes * 60 - sum(s["seconds"] for s in sessions)
            last = sessions[-1] if sessions else None
            if last is not None and not last["finished"]:
                path = self.folder / last["name"]
                if tune.Tuner.can_restore(str(path)):
                    tuner = tune.Tuner.restore(str(path), trainable=self._trainable(), resume_unfinished=True,
                                               resume_errored=True)
                    interrupted = self._fit(tuner, last)
                    self._save_sessions(sessions)
                    if interrupted:
                        return True
                last["finished"] = True
                self._save_sessions(sessions)
            # RUNNING trials whose driver died and that no restored trial finished: failed, parameters retried.
            reap_dead_workers(self.study)
            n = self._remaining()
            if n <= 0 or (self.deadline is not None and time.time() >= self.deadline - 1):
                return False
            name = f"session-{len(sessions) + 1}"
            entry: dict[str, Any] = {"name": name, "trials": n, "finished": False, "seconds": 0.0,
                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            sessions.append(entry)
            self._save_sessions(sessions)
            interrupted = self._fit(self._tuner(name, n), entry)
            entry["finished"] = not interrupted
            self._save_sessions(sessions)
            return interrupted
        finally:
            _CURRENT = None
            if self.bar is not None:
                self.bar.close()

    def _remaining(self) -> int:
        """Trials still to start: the budget less those that used it up; retries (WAITING) run in any case."""
        trials = self.study.get_trials(deepcopy=False)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        budget = self.experiment.config.budget.trials
        if budget is None:
            return max(waiting, 10**9)  # until the time budget ends
        return max(budget - counted(trials), waiting)

    def _fit(self, tuner: Any, entry: dict[str, Any]) -> bool:
        """Run a Tune experiment; True when a stop signal interrupted it.

        Tune catches the first SIGINT (or SIGUSR1), saves the experiment and returns from ``fit`` as if it had
        finished; its handler puts back the SIGINT handler it found. So a marker handler installed here and
        found in place afterwards means Tune was stopped. Tune leaves its own handlers installed after a
        normal end, so both are put back here in any case.
        """
        start = time.perf_counter()
        # Tune's own words on a stop ("Stop signal received", "Resume experiment with: Tuner.restore(...)"):
        # ``nas search`` says what to run instead.
        tune_log = logging.getLogger("ray.tune.tune")
        level = tune_log.level
        tune_log.setLevel(logging.ERROR)
        try:
            return self._fit_quietly(tuner, entry, start)
        finally:
            tune_log.setLevel(level)

    def _fit_quietly(self, tuner: Any, entry: dict[str, Any], start: float) -> bool:
        if threading.current_thread() is not threading.main_thread():
            try:
                tuner.fit()
            finally:
                entry["seconds"] += time.perf_counter() - start
            return False

        def marker(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # a second Ctrl+C: stop at once, without Tune's last save

        old_int = signal.signal(signal.SIGINT, marker)
        old_usr1 = signal.getsignal(signal.SIGUSR1)
        try:
            tuner.fit()
            return signal.getsignal(signal.SIGINT) is marker
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGUSR1, old_usr1)
            entry["seconds"] += time.perf_counter() - start

    def _trainable(self) -> Any:
        cfg = self.experiment.config
        fn = tune.with_parameters(_trial, experiment=cfg.model_dump(mode="json"), source=self.experiment.source)
        return tune.with_resources(fn, _resources(self.experiment))

    def _tuner(self, name: str, n: int) -> Any:
        import ray

        cfg = self.experiment.config
        # Seeded per session as the local backend is: a resumed sampler must not replay the first session's draws.
        seed = cfg.seed + 104_729 * len(self.study.get_trials(deepcopy=False))
        searcher = _Searcher(
            _Space(cfg.model_dump(mode="json"), self.experiment.source),
            metric=[o.name for o in self.experiment.objectives],
            mode=["max" if o.direction == "maximize" else "min" for o in self.experiment.objectives],
            sampler=make_sampler(cfg.sampler, seed % 2**32, cfg.population),
            storage=self.storage, study_name=self.run.study_name)
        searcher.deadline = self.deadline
        scheduler = None
        if self.experiment.needs_training and cfg.proxy.pruner != "none":
            scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max",
                                      max_t=cfg.proxy.epochs, grace_period=1, reduction_factor=ASHA_REDUCTION)
        resources = _resources(self.experiment)
        total = ray.cluster_resources()  # type: ignore[no-untyped-call]
        at_once = int(total.get("CPU", 1) // resources["cpu"])
        if resources["gpu"]:
            at_once = min(at_once, int(total.get("GPU", 0) // resources["gpu"]))
        if at_once < 1:
            raise NasError(f"a trial asks for {resources['cpu']:g} CPUs and {resources['gpu']:g} GPUs "
                           f"(resources in the experiment file), but the Ray cluster has {total.get('CPU', 0):g} "
                           f"CPUs and {total.get('GPU', 0):g} GPUs.")
        return tune.Tuner(
            self._trainable(),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                        max_concurrent_trials=at_once, reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=str(self.folder), verbose=0, callbacks=[_AfterTrial()],
                failure_config=tune.FailureConfig(max_failures=MAX_RETRY),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))

    def after_trial(self) -> None:
        """Rewrite the results files and move the progress bar (after every finished trial)."""
        trials = self.study.get_trials(deepcopy=False)
        frame, hv = write_results(self.run, self.study, trials)
        if self.bar is not None:
            n = counted(trials)
            self.bar.n = min(n, self.bar.total) if self.bar.total else n
            self.bar.set_postfix_str(f"front {int(frame['pareto'].sum())}, HV {hv:.4f}", refresh=True)

    def _sessions(self) -> list[dict[str, Any]]:
        path = self.folder / SESSIONS
        return list(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else []

    def _save_sessions(self, sessions: list[dict[str, Any]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / SESSIONS, json.dumps(sessions, indent=1) + "\n")


def _resources(experiment: Experiment) -> dict[str, float]:
    res = experiment.config.resources
    return {"cpu": float(res.cpus or experiment.config.proxy.threads), "gpu": float(res.gpus)}


def _trial_name(trial: Any) -> str:
    return f"trial{trial.config.get('number', '')}_{trial.trial_id}"


def _failed(trial: optuna.Trial, reason: str) -> tuple[TrialState, None]:
    trial.set_user_attr("fail_reason", reason[:500])
    return TrialState.FAIL, None


def _record(trial: optuna.Trial, result: dict[str, Any] | None, error: bool, experiment: Experiment
            ) -> tuple[TrialState, list[float] | None]:
    """Write what a Tune trial reported into its Optuna trial; returns the state and values to tell."""
    r = result or {}
    costs = {k: float(v) for k, v in r.items() if k in _COSTS or k.startswith("latency_ms:")}
    for k, v in costs.items():
        trial.set_user_attr(k, v)
    for k in ("trained", "epochs", "train_seconds", "ray_node"):
        if k in r:
            trial.set_user_attr(k, r[k])
    if "history" in r:
        trial.set_user_attr("history", json.loads(r["history"]))
    if "trial_id" in r:
        trial.set_user_attr("ray_trial", r["trial_id"])
    if costs and all(c.name in costs for c in experiment.constraints if c.name != "accuracy"):
        for name, v in cheap_violations(experiment, costs).items():
            trial.set_constraint(name, v)
    if error or not r:
        return _failed(trial, "the Ray trial raised or its worker died (after Ray's retries); see its error.txt "
                              "under RUN/ray/")
    if r.get("nas_state") == "FAIL":
        return _failed(trial, str(r.get("fail_reason", "")))
    if not r.get("final"):
        accuracy = float(r.get("val_accuracy", math.nan))
        trial.set_user_attr("fail_reason", f"stopped by ASHA after epoch {r.get('epoch', '?')} "
                                           f"(validation accuracy {accuracy:.3f})")
        trial.set_user_attr("accuracy", accuracy)
        return TrialState.PRUNED, None
    accuracy = float(r.get("accuracy", math.nan))
    for name, v in accuracy_violations(experiment, accuracy).items():
        trial.set_constraint(name, v)
    return TrialState.COMPLETE, list(objective_values(experiment, costs, accuracy))


def _experiment(config: dict[str, Any], source: str) -> Experiment:
    return Experiment(ExperimentConfig.model_validate(config), source)


class _Space:
    """The define-by-run space ``OptunaSearch`` calls in the driver for each new trial: ``Space.sample``, the
    trial's identity (so the local backend's reaper knows whose it is), and the candidate for the Tune trial."""

    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.config, self.source = config, source
        self._space: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "source": self.source, "_space": None}

    @property
    def experiment(self) -> Experiment:
        return _experiment(self.config, self.source)

    @property
    def space(self) -> Any:
        if self._space is None:  # with the dataset's input shape and classes, as the trials see it
            self._space = CheapScorer(self.experiment, data=False).space
        return self._space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        trial.set_user_attr("node", NODE)
        trial.set_user_attr("worker", f"{worker_host()}:{os.getpid()}")
        trial.set_user_attr("backend", "ray")
        if trial.user_attrs.get("fail_reason"):  # a retry starts with a copy of the failed trial's attributes
            trial.set_user_attr("fail_reason", "")
            trial.set_user_attr("retried", False)
        candidate = self.space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_json())
        trial.set_user_attr("label", short_label(candidate))
        return {"candidate": candidate.to_json(), "number": trial.number}


class _Searcher(OptunaSearch):
    """``OptunaSearch`` that records a finished trial's report in its Optuna trial before telling the study
    (states: COMPLETE, PRUNED when ASHA stopped it, FAIL with the reason), that starts no trial after the
    time budget's deadline, and that, restored from a Tune experiment, reconnects to the storage of the
    search now running."""

    def __init__(self, space: _Space, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self._nas_space = space
        self.deadline: float | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # FINISHED is a str
        if self.deadline is not None and time.time() >= self.deadline and trial_id not in self._ot_trials:
            return str(self.FINISHED)
        out: dict[str, Any] | None = super().suggest(trial_id)
        return out

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        study: optuna.Study | None = self._ot_study
        if ot_trial is None or study is None or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        self._completed_trials.add(trial_id)
        if study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            return  # told before the driver died, run again after restore: the first result stands
        state, values = _record(ot_trial, result, error, self._nas_space.experiment)
        study.tell(ot_trial, values, state=state)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        driver = _CURRENT
        if driver is None:
            return
        self.deadline = driver.deadline
        study = optuna.load_study(study_name=self._study_name, storage=driver.storage, sampler=self._sampler)
        self._ot_study = study  # type: ignore[assignment]
        self._storage = driver.storage
        self._ot_trials = {k: optuna.Trial(study, t._trial_id) for k, t in self._ot_trials.items()}
        me = f"{worker_host()}:{os.getpid()}"
        for key, t in self._ot_trials.items():
            if key not in self._completed_trials and driver.storage.get_trial(t._trial_id).state == TrialState.RUNNING:
                t.set_user_attr("node", NODE)
                t.set_user_attr("worker", me)  # this driver owns it now: no reaper fails it while it runs
        _ = self._nas_space.space  # load now: OptunaSearch warns when the define-by-run call takes over a second


class _AfterTrial(tune.Callback):
    """Results files and progress after every finished trial (Tune calls it after the searcher)."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.after_trial()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.after_trial()


# ----------------------------------------------------------------------------- a trial (runs in a Ray worker)


class _Evaluator:
    """What a worker process needs for every trial of an experiment, loaded once (the dataset, the profiles)."""

    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.experiment = _experiment(config, source)
        self.scorer = CheapScorer(self.experiment)


_EVALUATORS: dict[str, _Evaluator] = {}


def _evaluator(config: dict[str, Any], source: str) -> _Evaluator:
    key = json.dumps([config, source], sort_keys=True)
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = _Evaluator(config, source)
    return _EVALUATORS[key]


class _Reported(Exception):
    """An error raised by ``tune.report`` itself: Tune's business, never a trial's failure."""


def _trial(config: dict[str, Any], *, experiment: dict[str, Any], source: str) -> None:
    """One Tune trial: cheap costs, then (when feasible) the proxy training with a report per epoch."""
    import socket

    ev = _evaluator(experiment, source)
    exp = ev.experiment
    base: dict[str, Any] = {"ray_node": socket.gethostname()}
    try:
        candidate = Candidate.from_json(config["candidate"])
        costs = ev.scorer(candidate)
    except HardwareError as exc:
        tune.report({**base, "nas_state": "FAIL", "fail_reason": f"HardwareError: {exc}", "final": True})
        return
    except Exception as exc:  # any error in one candidate fails that trial, not the search
        tune.report({**base, "nas_state": "FAIL", "fail_reason": f"{type(exc).__name__}: {exc}", "final": True})
        return
    base.update(costs)
    feasible = all(v <= 0 for v in cheap_violations(exp, costs).values())
    if not exp.needs_training or not feasible:
        tune.report({**base, **({"accuracy": 0.0} if exp.needs_training else {}), "trained": False, "final": True})
        return
    try:
        final = _train(ev, candidate, int(config["number"]), base)
    except _Reported as exc:
        raise exc.__cause__ or exc from None
    except Exception as exc:
        final = {**base, "nas_state": "FAIL", "fail_reason": f"{type(exc).__name__}: {exc}", "final": True}
    tune.report(final)


def _train(ev: _Evaluator, candidate: Candidate, number: int, base: dict[str, Any]) -> dict[str, Any]:
    """The proxy training of a trial (:func:`nas.search.proxy_train`, as the local backend trains it), with a
    report and a checkpoint after every epoch but the last; resumed from the checkpoint when Tune restores the
    trial. Returns the final report."""
    from nas.checkpoint import load_weights, read_checkpoint, save_checkpoint

    exp = ev.experiment
    proxy = exp.config.proxy
    splits = ev.scorer.splits
    assert splits is not None
    model, config = proxy_setup(exp, candidate, number, proxy.threads)
    done, history = 0, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            tensors, meta = read_checkpoint(Path(folder) / "model.safetensors")
        load_weights(model, tensors, f"trial {number}'s checkpoint")
        done, history = int(meta["extra"]["epoch"]), list(meta["extra"]["history"])
    start = time.perf_counter()
    stop: list[str] = []

    def on_epoch(k: int, accuracy: float) -> bool:
        """After epoch ``k`` (from 1). Epochs before the last train the dense model (the compressed one, with
        ``proxy.compressed``, is always epoch ``proxy.epochs``): their checkpoints hold dense weights."""
        history.append(accuracy)
        if proxy.max_seconds is not None and time.perf_counter() - start > proxy.max_seconds:
            stop.append(f"time budget of {proxy.max_seconds:g} s used up after epoch {k}")
            return True
        if k < config.epochs:  # the last epoch is reported with the final result
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder) / "model.safetensors", model, candidate,
                                extra={"epoch": k, "history": history, "trial": number})
                metrics = {**base, "val_accuracy": accuracy, "epoch": k, "trained": True, "epochs": k,
                           "history": json.dumps([round(a, 5) for a in history])}
                try:
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
                except Exception as exc:
                    raise _Reported() from exc
        return False

    epochs, result = _resume(model, candidate, splits, config, done, on_epoch, proxy.compressed)
    final = {**base, "trained": True, "epochs": epochs, "final": True,
             "history": json.dumps([round(a, 5) for a in history]),
             "train_seconds": round(time.perf_counter() - start, 3)}
    if result.failed or stop:
        return {**final, "nas_state": "FAIL", "fail_reason": result.failed or stop[0]}
    return {**final, "accuracy": float(result.val_accuracy), "val_accuracy": float(result.val_accuracy),
            "epoch": epochs}


def _resume(model: Any, candidate: Candidate, splits: Any, config: Any, done: int, on_epoch: Any,
            compressed: bool) -> tuple[int, Any]:
    """``proxy_train`` from epoch ``done`` on: ``(epochs run in all, the last TrainResult)``.

    From the start it is ``proxy_train`` itself. After ``done`` dense epochs, the rest of the dense phase
    continues with the learning rate where the dense phase's cosine schedule was (momentum starts again and
    the data order is reseeded, so a resumed trial is close to, not identical with, an uninterrupted one),
    and the compressed last epoch is ``proxy_train``'s own (same seed and learning rate as without a break).
    """
    from dataclasses import replace

    from nas.compress import stages
    from nas.train import train

    if done == 0:
        result = proxy_train(model, candidate, splits, config, lambda e, a: on_epoch(e + 1, a), compressed)
        return result.epochs, result
    compress_last = compressed and bool(stages(candidate.compression))
    dense = replace(config, epochs=config.epochs - 1) if compress_last else config
    epochs = done
    if done < dense.epochs:
        result = train(model, splits, _rest_of_run(dense, len(splits.train), done),
                       on_epoch=lambda e, a: on_epoch(done + e + 1, a))
        epochs += result.epochs
        if not compress_last or result.failed or result.stopped_early:
            return epochs, result
    last = proxy_train(model, candidate, splits, replace(config, epochs=1), lambda e, a: on_epoch(config.epochs, a),
                       True)
    return epochs + last.epochs, last


def _rest_of_run(config: Any, n_train: int, done: int) -> Any:
    """The settings for the epochs after ``done`` of a run of ``config``: the cosine learning rate from where
    it was to zero at the same end, the data order reseeded, the rest of ``max_samples``."""
    from dataclasses import replace

    from nas.train import Plan

    plan = Plan(n_train, config)
    steps = min(done * plan.steps_per_epoch, plan.total_steps - 1)
    lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * steps / plan.total_steps))
    samples = None if config.max_samples is None else max(1, config.max_samples - steps * plan.batch_size)
    return replace(config, epochs=max(1, plan.epochs - done), lr=lr, seed=config.seed + done, max_samples=samples)


# ----------------------------------------------------------------------------- the Ray session


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to a cluster (``address``), or start a local instance of ``num_cpus`` CPUs (default:
    ``$NAS_RAY_CPUS``, else the machine's), quietly and with token authentication as the module docstring
    says; shut it down after."""
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {k: os.environ.get(k) for k in (*_AUTH_ENV, *_QUIET_ENV)}
    os.environ.update(_QUIET_ENV)
    try:
        _token_auth(local=address is None)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address is None:
            kwargs.update(num_cpus=num_cpus or _env_cpus() or os.cpu_count() or 1,
                          object_store_memory=OBJECT_STORE_BYTES)
        try:
            # "local": a new instance even when ``ray start`` left a cluster (or its address file) on this machine.
            ray.init(address=address or "local", **kwargs)
        except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError: one line with what to do
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise NasError(
                f"cannot start or reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                + ("; a cluster with token authentication needs its token here: RAY_AUTH_TOKEN=... or "
                   "RAY_AUTH_TOKEN_PATH=FILE (see README, Many machines)." if address else ".")) from None
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        changed = {k: v for k, v in saved.items() if os.environ.get(k) != v}
        for k, v in changed.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if any(k in _AUTH_ENV for k in changed):
            _refresh_ray_config()


def _env_cpus() -> int | None:
    text = os.environ.get("NAS_RAY_CPUS", "").strip()
    if text and (not text.isdigit() or int(text) < 1):
        raise NasError(f"NAS_RAY_CPUS must be a whole number of CPUs >= 1, but got {text!r}.")
    return int(text) if text else None


def _token_auth(local: bool) -> None:
    """Ray's token authentication, explicitly (see the module docstring): the user's ``RAY_AUTH_MODE`` wins; a
    token given in the environment is used; a local instance otherwise gets a fresh token of its own."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_MODE"] = "token"
    elif local:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    else:
        return  # an explicit address without a token: Ray connects without one (a cluster without tokens)
    _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into a config cached at import; re-read it, as Ray's own ``ray.init`` does when
    it turns tokens on (``_enable_token_auth``), and drop a cached token."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


__all__ = ["search", "ray_session"]
