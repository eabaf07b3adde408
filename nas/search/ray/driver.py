"""The driver side of the Ray backend: Ray's ``OptunaSearch`` on the run's own study, ASHA, resume.

- **Sampling.** Ray's ``OptunaSearch`` with a define-by-run space (``Space.sample(trial)``), the
  experiment's Optuna sampler, its objectives as the multi-objective ``metric``/``mode`` lists, and the
  run's own storage and study name, so ``nas plot``, ``nas report``, ``nas finetune`` and a later
  local-backend session read the study unchanged.
- **Recording.** Trials never open the study: when Tune reports a trial finished, the driver records
  its :class:`~nas.search.record.Outcome` with :func:`~nas.search.record.record`, the local backend's
  function, and then tells the study. Workers on other machines need no access to the storage.
- **Early stopping.** ASHA (reduction factor 2, grace period one epoch) on the per-epoch validation
  accuracy takes the place of the local backend's Optuna pruner; ``proxy.pruner: none`` runs every trial
  to the end. A trial ASHA stops is PRUNED with its last accuracy.
- **Resources.** ``resources: {cpus, gpus}`` is what each trial reserves (default ``proxy.threads`` CPUs).
  A trial that reserves a GPU trains on it: Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPU it chose, so the
  experiment's ``device: cuda`` (or ``auto``) is that GPU in the trial
  (:func:`nas.search.ray.trial.trial_device`); a GPU reserved for ``device: cpu``, or ``device: cuda``
  without one, is refused before any trial starts (:func:`check_gpus`).
- **Resume.** Each session is a Tune experiment in ``RUN/ray/session-N`` (listed in
  ``RUN/ray/sessions.json``). An interrupted session is picked up with ``Tuner.restore`` and its unfinished
  trials continue from their last checkpoint; budget left after that runs as a new session on the same
  study. Optuna trials a dead driver left RUNNING that no restored trial owns are failed and retried.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from nas.errors import NasError
from nas.experiment import Experiment
from nas.files import write_atomic
from nas.optuna_compat import storage_of
from nas.optuna_compat import trial_id as optuna_id
from nas.search.budget import ProgressBar, counted
from nas.search.ray.trial import experiment_of, run_trial
from nas.search.record import Outcome, label, record
from nas.search.session import SearchRun
from nas.search.setup import prepare
from nas.search.study import make_storage, session_sampler
from nas.search.workers import MAX_RETRY, claim, reap_dead_workers

#: The list of Tune sessions inside the run's ``ray/`` folder.
SESSIONS = "sessions.json"
#: ASHA halves the trials at each rung (epochs 1, 2, 4, ...), like the local backend's median pruner.
ASHA_REDUCTION = 2
#: What a trial that raised (after Ray's retries) or whose worker died is recorded with.
RAY_FAILURE = "the Ray trial raised or its worker died (after Ray's retries); see its error.txt under RUN/ray/"

#: The driver of the search running in this process: Tune callbacks and a restored searcher find it here
#: (they are pickled into the Tune experiment, so they hold no reference to it themselves).
_CURRENT: Driver | None = None


def outcome_of(result: dict[str, Any] | None, error: bool) -> Outcome:
    """The outcome of a finished Tune trial from its last report (a non-final one: a scheduler stopped it)."""
    r = result or {}
    if "outcome" not in r:
        return Outcome.failed(RAY_FAILURE)
    outcome = Outcome.from_dict(json.loads(r["outcome"]))
    attrs = {**outcome.attrs, **({"ray_trial": r["trial_id"]} if "trial_id" in r else {})}
    if error:
        return Outcome.failed(RAY_FAILURE, costs=outcome.costs, attrs=attrs)
    return Outcome(outcome.state, outcome.costs, outcome.accuracy, outcome.trained, outcome.epochs, outcome.history,
                   outcome.seconds, outcome.reason, attrs)


class Driver:
    """One ``search`` call: restores an interrupted Tune session, then runs a new one for the budget left."""

    def __init__(self, run: SearchRun, progress: bool | None) -> None:
        self.run = run
        self.experiment = run.experiment
        self.storage = make_storage(run.storage_url, heartbeat=False)  # asked and told by hand, like proxy trials
        self.study = run.study(self.storage)
        self.folder = run.folder.ray_dir.resolve()
        self.progress = progress
        self.bar: ProgressBar | None = None
        #: Wall-clock end of the time budget (``time.time()``): no trial starts after it, running ones finish
        #: (as the local backend's ``optimize(timeout=...)``); None without one.
        self.deadline: float | None = None

    def drive(self) -> bool:
        """Run the search; True when interrupted."""
        global _CURRENT
        _CURRENT = self
        budget = self.experiment.config.budget
        self.bar = ProgressBar(self.run, budget.trials, counted(self.study.get_trials(deepcopy=False)), self.progress)
        try:
            sessions = self._sessions()
            if budget.minutes is not None:
                self.deadline = time.time() + budget.minutes * 60 - sum(s["seconds"] for s in sessions)
            if self._restore_last(sessions):
                return True
            # RUNNING trials whose driver died and that no restored trial finished: failed, parameters retried.
            reap_dead_workers(self.study)
            return self._new_session(sessions)
        finally:
            _CURRENT = None
            self.bar.close()

    def _restore_last(self, sessions: list[dict[str, Any]]) -> bool:
        """Finish an interrupted last session with ``Tuner.restore``; True when interrupted again."""
        last = sessions[-1] if sessions else None
        if last is None or last["finished"]:
            return False
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
        return False

    def _new_session(self, sessions: list[dict[str, Any]]) -> bool:
        """A new Tune session for the budget left; True when interrupted."""
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
        normal end, so both are put back here in any case. Tune's own words on a stop ("Resume experiment
        with: Tuner.restore(...)") are silenced: ``nas search`` says what to run instead.
        """
        start = time.perf_counter()
        tune_log = logging.getLogger("ray.tune.tune")
        level = tune_log.level
        tune_log.setLevel(logging.ERROR)
        try:
            if threading.current_thread() is not threading.main_thread():
                tuner.fit()
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
        finally:
            tune_log.setLevel(level)
            entry["seconds"] += time.perf_counter() - start

    def _trainable(self) -> Any:
        fn = tune.with_parameters(run_trial, experiment=self.experiment.config.model_dump(mode="json"),
                                  source=self.experiment.source)
        return tune.with_resources(fn, resources(self.experiment))

    def _tuner(self, name: str, n: int) -> Any:
        cfg = self.experiment.config
        searcher = Searcher(
            SpaceSampler(cfg.model_dump(mode="json"), self.experiment.source),
            metric=[o.name for o in self.experiment.objectives],
            mode=["max" if o.maximize else "min" for o in self.experiment.objectives],
            sampler=session_sampler(cfg, len(self.study.get_trials(deepcopy=False))),
            storage=self.storage, study_name=self.run.study_name)
        searcher.deadline = self.deadline
        scheduler = None
        if self.experiment.needs_training and cfg.proxy.pruner != "none":
            scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max",
                                      max_t=cfg.proxy.epochs, grace_period=1, reduction_factor=ASHA_REDUCTION)
        return tune.Tuner(
            self._trainable(),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                        max_concurrent_trials=_at_once(self.experiment), reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=str(self.folder), verbose=0, callbacks=[AfterTrial()],
                failure_config=tune.FailureConfig(max_failures=MAX_RETRY),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))

    def after_trial(self) -> None:
        """Rewrite the results files and move the progress bar (after every finished trial)."""
        trials = self.study.get_trials(deepcopy=False)
        frame, hv = self.run.folder.write_results(trials, self.study.directions)
        if self.bar is not None:
            self.bar.update(counted(trials), int(frame["pareto"].sum()), hv)

    def _sessions(self) -> list[dict[str, Any]]:
        path = self.folder / SESSIONS
        return list(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else []

    def _save_sessions(self, sessions: list[dict[str, Any]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / SESSIONS, json.dumps(sessions, indent=1) + "\n")


def resources(experiment: Experiment) -> dict[str, float]:
    """What one trial reserves: ``resources.cpus`` (default ``proxy.threads``) and ``resources.gpus``."""
    res = experiment.config.resources
    return {"cpu": float(res.cpus or experiment.config.proxy.threads), "gpu": float(res.gpus)}


def check_gpus(experiment: Experiment) -> None:
    """Refuse a ``device`` that cannot use what ``resources.gpus`` reserves (or lacks what it needs)."""
    gpus, device = experiment.config.resources.gpus, experiment.config.device
    if gpus > 0 and device == "cpu":
        raise NasError(f"{experiment.source}: resources.gpus {gpus:g} reserves a GPU for every trial, but device is "
                       f"cpu (the default), so it would sit idle: set device: auto or cuda in the experiment file "
                       f"(or give --device cuda), or resources.gpus: 0.")
    if gpus == 0 and device.startswith("cuda"):
        raise NasError(f"{experiment.source}: device {device}, but resources.gpus is 0: Ray hides the GPUs from a "
                       f"trial that reserves none; set resources.gpus (1, or a fraction to share a GPU), or "
                       f"device: auto.")


def _at_once(experiment: Experiment) -> int:
    """How many trials the cluster holds at once, or a clear error when not even one fits."""
    import ray

    need = resources(experiment)
    total = ray.cluster_resources()  # type: ignore[no-untyped-call]
    at_once = int(total.get("CPU", 1) // need["cpu"])
    if need["gpu"]:
        at_once = min(at_once, int(total.get("GPU", 0) // need["gpu"]))
    if at_once < 1:
        raise NasError(f"a trial asks for {need['cpu']:g} CPUs and {need['gpu']:g} GPUs (resources in the "
                       f"experiment file), but the Ray cluster has {total.get('CPU', 0):g} CPUs and "
                       f"{total.get('GPU', 0):g} GPUs.")
    return at_once


def _trial_name(trial: Any) -> str:
    return f"trial{trial.config.get('number', '')}_{trial.trial_id}"


class SpaceSampler:
    """The define-by-run space ``OptunaSearch`` calls in the driver for each new trial: ``Space.sample``, the
    trial's identity (so the local backend's reaper knows whose it is), and the candidate for the Tune trial.
    Pickled into the Tune experiment: it keeps the experiment's settings, not the loaded space."""

    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.config, self.source = config, source
        self._space: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "source": self.source, "_space": None}

    @property
    def experiment(self) -> Experiment:
        return experiment_of(self.config, self.source)

    @property
    def space(self) -> Any:
        if self._space is None:  # with the dataset's input shape and classes, as the trials see it
            driver = _CURRENT
            self._space = driver.run.setup.space if driver is not None else prepare(self.experiment, data=False).space
        return self._space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        claim(trial)
        trial.set_user_attr("backend", "ray")
        candidate = self.space.sample(trial)
        label(trial, candidate)
        return {"candidate": candidate.to_json(), "number": trial.number}


class Searcher(OptunaSearch):
    """``OptunaSearch`` that records a finished trial's outcome in its Optuna trial before telling the study,
    that starts no trial after the time budget's deadline, and that, restored from a Tune experiment,
    reconnects to the storage of the search now running."""

    def __init__(self, space: SpaceSampler, **kwargs: Any) -> None:
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
        if storage_of(study).get_trial(optuna_id(ot_trial)).state.is_finished():
            return  # told before the driver died, run again after restore: the first result stands
        state, values = record(ot_trial, outcome_of(result, error), self._nas_space.experiment)
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
        self._ot_trials = {k: optuna.Trial(study, optuna_id(t)) for k, t in self._ot_trials.items()}
        for key, t in self._ot_trials.items():
            if key not in self._completed_trials and driver.storage.get_trial(optuna_id(t)).state == TrialState.RUNNING:
                claim(t)  # this driver owns it now: no reaper fails it while it runs
        _ = self._nas_space.space  # load now: OptunaSearch warns when the define-by-run call takes over a second



class AfterTrial(tune.Callback):
    """Results files and progress after every finished trial (Tune calls it after the searcher)."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.after_trial()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.after_trial()
