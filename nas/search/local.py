"""The local backend: an Optuna study driven by worker processes on this machine.

``search(experiment)`` runs (or resumes) an experiment until its budget is used; with ``workers > 1``
it starts ``workers - 1`` more worker processes on the same study and works alongside them. Each
trial draws a candidate, is scored cheaply, and, when it passes the cheap constraints, goes to the
experiment's evaluator. Per-epoch reports go to a companion single-objective study
(``<name>:proxy``) whose Optuna pruner stops weak candidates early: Optuna's pruners do not accept
multi-objective reports. After every trial the run folder's results are rewritten.

Ctrl+C (SIGINT) and SIGTERM ask the study to stop and interrupt the running trial, which is failed
and its parameters retried on resume; the search then ends with KeyboardInterrupt (exit 130).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.device import describe, resolve_device
from nas.errors import NasError
from nas.experiment import Experiment, ExperimentConfig, load_experiment
from nas.optuna_compat import ask_labelled
from nas.search.budget import ProgressBar, budget_met, counted, elapsed_before, session_failure, wait_for_others
from nas.search.evaluator import Evaluator, Progress, evaluate_candidate, evaluator_class
from nas.search.record import Outcome, label, record
from nas.search.session import SearchRun, open_run
from nas.search.study import make_pruner, make_storage, session_sampler
from nas.search.workers import (
    NODE,
    claim,
    fail_unowned_proxy_trials,
    proxy_study_name,
    reap_dead_workers,
    retry_interrupted,
    worker_id,
)
from nas.spec import Candidate


class TrialFailed(Exception):
    """Raised inside a trial to record it as FAIL; the reason is in its ``fail_reason`` user attribute."""


@dataclass
class SearchResult:
    run: SearchRun
    frame: pd.DataFrame
    hypervolume: float
    trials: int
    front: int
    seconds: float
    #: Why the session failed as a whole (every trial it finished failed); empty when it did not.
    failure: str = ""


class Interrupt:
    """SIGINT and SIGTERM while a search runs: remember the signal, ask the study to stop (no trial starts
    after this one) and raise KeyboardInterrupt to stop the running trial now. Should Python swallow that
    exception (it does when it lands in a garbage-collection callback), the search still stops after the
    trial and ends interrupted: the decision does not depend on where the exception happens to be raised."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.study: optuna.Study | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self.study is not None:
            try:
                self.study.stop()
            except RuntimeError:  # outside optimize(): nothing to stop
                pass
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt at a safe point once a stop was asked for."""
        if self.signal is not None:
            raise KeyboardInterrupt


class ProxyProgress(Progress):
    """Per-epoch reports of one trial into the companion study, whose Optuna pruner decides."""

    def __init__(self, proxy_study: optuna.Study, trial: optuna.Trial, interrupt: Interrupt) -> None:
        self.study = proxy_study
        self.interrupt = interrupt
        # Asked with its owner in one transaction: a worker killed in between leaves no unowned proxy trial.
        # ``trial`` is the main study's trial number (the numbers differ); the parameters are the main trial's.
        self.fidelity = ask_labelled(proxy_study, {"trial": trial.number, "node": NODE, "worker": worker_id()},
                                     trial.params, trial.distributions)
        trial.set_user_attr("proxy_trial", self.fidelity.number)

    def report(self, epoch: int, accuracy: float, model: Any, last: bool) -> bool:
        self.interrupt.check()
        self.fidelity.report(accuracy, epoch)
        return not last and self.fidelity.should_prune()

    def close(self, outcome: Outcome | None) -> None:
        """Tell the companion trial how the search trial ended (FAIL when it was interrupted)."""
        if outcome is not None and outcome.state == "COMPLETE":
            self.study.tell(self.fidelity, outcome.accuracy)
        else:
            state = TrialState.PRUNED if outcome is not None and outcome.state == "PRUNED" else TrialState.FAIL
            self.study.tell(self.fidelity, state=state)


class TrialObjective:
    """The function Optuna calls for each trial (one per worker process)."""

    def __init__(self, run: SearchRun, evaluator: Evaluator, interrupt: Interrupt) -> None:
        self.run = run
        self.experiment = run.experiment
        self.evaluator = evaluator
        self.interrupt = interrupt
        self.proxy_study: optuna.Study | None = None
        if self.experiment.needs_training:
            cfg = self.experiment.config.proxy
            # Its own connection without heartbeat: proxy trials are asked and told by hand, not by optimize().
            self.proxy_study = optuna.create_study(
                study_name=proxy_study_name(run.study_name), storage=make_storage(run.storage_url, heartbeat=False),
                direction="maximize", load_if_exists=True, pruner=make_pruner(cfg.pruner, cfg.epochs))

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        claim(trial)
        try:
            outcome = self._outcome(trial)
        except KeyboardInterrupt:
            retry_interrupted(trial)
            raise
        state, values = record(trial, outcome, self.experiment)
        if state == TrialState.FAIL:
            raise TrialFailed(outcome.reason)
        if state == TrialState.PRUNED:
            raise optuna.TrialPruned(outcome.reason)
        assert values is not None
        return tuple(values)

    def _outcome(self, trial: optuna.Trial) -> Outcome:
        try:
            candidate = self.run.setup.space.sample(trial)
            label(trial, candidate)
        except Exception as exc:  # a draw that cannot be built fails this trial, not the search
            return Outcome.failed(f"{type(exc).__name__}: {exc}")
        return evaluate_candidate(self.run.setup, candidate, lambda costs: self._evaluate(trial, candidate))

    def _evaluate(self, trial: optuna.Trial, candidate: Candidate) -> Outcome:
        assert self.proxy_study is not None
        progress = ProxyProgress(self.proxy_study, trial, self.interrupt)
        outcome = None
        try:
            outcome = self.evaluator.evaluate(candidate, trial.number, progress)
            return outcome
        finally:  # the trial ends (or is interrupted): its proxy trial must not stay RUNNING
            progress.close(outcome)


def search(experiment: Experiment | str | Path, *, folder: str | Path | None = None, storage: str | None = None,
           workers: int | None = None, progress: bool | None = None, command: str = "",
           worker_index: int = 0) -> SearchResult:
    """Run (or resume) an experiment until its budget is used; returns the results of the whole study.

    With ``workers > 1`` this process starts ``workers - 1`` more worker processes on the same storage and
    works alongside them; each trains with ``proxy.threads`` threads (default 1). Raises KeyboardInterrupt
    when interrupted (every finished trial is saved; the same call resumes).
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    # A GPU this machine lacks is said once here, not by every trial.
    device = resolve_device(exp.config.device, f"{exp.source}: device") if exp.needs_training else None
    run = open_run(exp, folder, storage, command)
    if device is not None and worker_index == 0:
        run.folder.record_device(describe(device))
    first = len(run.study().get_trials(deepcopy=False))  # the number of this session's first trial
    n_workers = workers or exp.config.workers
    started = time.perf_counter()
    procs = start_workers(run, n_workers) if worker_index == 0 and n_workers > 1 else []
    interrupt = Interrupt()
    try:
        with interrupt:
            _work(run, n_workers, worker_index, progress if worker_index == 0 else False, interrupt)
            _join(procs)
    finally:
        study = run.study()
        if worker_index == 0:
            reap_dead_workers(study)
        trials = study.get_trials(deepcopy=False)
        frame, hv = run.folder.write_results(trials, study.directions)
    if interrupt.signal is not None:
        raise KeyboardInterrupt
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise NasError(f"{len(bad)} worker process(es) failed (exit codes {bad}); their trials were retried or "
                       f"recorded; run the same command to resume.")
    return SearchResult(run, frame, hv, counted(trials), int(frame["pareto"].sum()) if len(frame) else 0,
                        time.perf_counter() - started, session_failure(trials, first))


def _join(procs: list[Any]) -> None:
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers are told to stop as this process was: they fail and retry their trials
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        raise


def start_workers(run: SearchRun, n_workers: int) -> list[Any]:
    """Worker processes 1..n-1 on the run's study (fresh interpreters: no state shared with this one)."""
    ctx = multiprocessing.get_context("spawn")
    exp = run.experiment
    base = str(exp.base) if exp.base is not None else None
    args = (exp.config.model_dump(mode="json"), exp.source, exp.text, base, str(run.folder.path), run.storage_url,
            n_workers)
    procs = [ctx.Process(target=worker_main, args=(*args, i), name=f"nas-worker-{i}") for i in range(1, n_workers)]
    for p in procs:
        p.start()
    return procs


def worker_main(config: dict[str, Any], source: str, text: str, base: str | None, folder: str, storage: str,
                n_workers: int, index: int) -> None:
    """A worker process's life: the same search on the same study, no progress bar; errors as ``nas`` says them."""
    try:
        exp = Experiment(ExperimentConfig.model_validate(config), source, text, base)
        search(exp, folder=folder, storage=storage, workers=n_workers, progress=False, worker_index=index)
    except NasError as exc:
        print(f"nas: error: worker {index}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _work(run: SearchRun, n_workers: int, worker_index: int, progress: bool | None, interrupt: Interrupt) -> None:
    cfg = run.experiment.config
    storage = make_storage(run.storage_url)
    existing = len(run.study(storage).get_trials(deepcopy=False))
    shared = f"{worker_id()}" if worker_index == 0 and run.storage_url != run.folder.default_storage else None
    study = run.study(storage, session_sampler(cfg, existing, worker_index, shared))
    interrupt.study = study
    evaluator = evaluator_class(cfg.evaluator)(run.setup)
    objective = TrialObjective(run, evaluator, interrupt)
    reap_dead_workers(study)
    if objective.proxy_study is not None:
        reap_dead_workers(objective.proxy_study, retry=False)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            fail_unowned_proxy_trials(objective.proxy_study)
    if budget_met(study.get_trials(deepcopy=False), cfg.budget.trials) and not wait_for_others(study):
        return
    bar = ProgressBar(run, cfg.budget.trials, counted(study.get_trials(deepcopy=False)), progress)
    try:
        _optimize(run, study, objective, n_workers, bar, interrupt)
    finally:
        bar.close()
        evaluator.close()


def _optimize(run: SearchRun, study: optuna.Study, objective: TrialObjective, n_workers: int, bar: ProgressBar,
              interrupt: Interrupt) -> None:
    """``study.optimize`` until the budget (trials or minutes) is used, writing the results after every trial."""
    budget = run.experiment.config.budget

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if n_workers > 1:
            reap_dead_workers(study)
        trials = study.get_trials(deepcopy=False)
        frame, hv = run.folder.write_results(trials, study.directions)
        failure = None
        if trial.state == TrialState.FAIL:
            failure = f"trial {trial.number} failed: {trial.user_attrs.get('fail_reason', '?')}"
        bar.update(counted(trials), int(frame["pareto"].sum()), hv, failure)
        if budget_met(trials, budget.trials):
            study.stop()

    deadline = None
    if budget.minutes is not None:
        deadline = time.monotonic() + max(1.0, budget.minutes * 60 - elapsed_before(study, run.experiment.config.workers))
    while interrupt.signal is None:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            break
        study.optimize(objective, n_trials=None, timeout=timeout, catch=(TrialFailed,), callbacks=[after_trial],
                       gc_after_trial=False)
        if interrupt.signal is not None or (deadline is not None and time.monotonic() >= deadline) \
                or not wait_for_others(study):
            break
