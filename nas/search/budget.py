"""How much of a search's budget is used, what waits on other workers, and the progress bar."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.optuna_compat import quiet_experimental
from nas.search.session import SearchRun
from nas.search.study import heartbeat_settings
from nas.search.workers import reap_dead_workers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counted(trials: Sequence[FrozenTrial]) -> int:
    """Trials that used up budget: complete, pruned, or failed by their own candidate. A trial failed because
    its worker died or was interrupted is not counted: its parameters are retried."""
    n = 0
    for t in trials:
        if t.state in FINISHED:
            ua = t.user_attrs
            n += t.state != TrialState.FAIL or (bool(ua.get("fail_reason")) and not ua.get("retried"))
    return n


def session_failure(trials: Sequence[FrozenTrial], first: int) -> str:
    """Empty, unless the trials a session finished (numbered ``first`` on) all failed: then a line that says
    so with one of their reasons (a search whose every trial fails has not run; its command must not succeed)."""
    mine = [t for t in trials if t.number >= first and t.state in FINISHED]
    if not mine or any(t.state != TrialState.FAIL for t in mine):
        return ""
    last = next((t for t in reversed(mine) if t.user_attrs.get("fail_reason")), mine[-1])
    return (f"every one of the {len(mine)} trials of this session failed, e.g. trial {last.number}: "
            f"{last.user_attrs.get('fail_reason') or 'no reason recorded'}")


def budget_met(trials: Sequence[FrozenTrial], budget: int | None) -> bool:
    """The trial budget is used up and no retry waits to be run."""
    return budget is not None and counted(trials) >= budget and not any(t.state == TrialState.WAITING for t in trials)


def wait_for_others(study: optuna.Study) -> bool:
    """The budget is met: wait for the trials other workers are running, at most the grace period, failing
    and retrying those whose worker went silent (a dead worker on another machine is found no other way).
    True when retries are waiting to be run."""
    interval, grace = heartbeat_settings()
    end = time.monotonic() + grace + interval
    while True:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)
        reap_dead_workers(study)
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        if not trials or time.monotonic() >= end:
            return False
        time.sleep(min(interval, 0.5))


def elapsed_before(study: optuna.Study, workers: int) -> float:
    """Wall time earlier sessions of this run spent, approximated as the summed trial durations / workers."""
    done = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.datetime_start and t.datetime_complete]
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / max(1, workers)


class ProgressBar:
    """A tqdm bar of trials with the front size and hypervolume; off with ``progress=False``, and by default
    when the output is not a terminal."""

    def __init__(self, run: SearchRun, budget: int | None, done: int, progress: bool | None) -> None:
        self.bar: Any = None
        if progress is not False:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=budget, initial=done, desc=f"search {run.study_name}", unit="trial",
                            disable=None if progress is None else not progress, dynamic_ncols=True)

    def update(self, done: int, front: int, hypervolume: float, failure: str | None = None) -> None:
        if self.bar is None:
            return
        self.bar.n = min(done, self.bar.total) if self.bar.total else done
        self.bar.set_postfix_str(f"front {front}, HV {hypervolume:.4f}", refresh=True)
        if failure is not None:
            self.bar.write(failure)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
