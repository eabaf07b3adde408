"""Who runs a trial, and what happens when that worker dies.

Trials record their worker (``host:pid``) and node (host name, boot and pid namespace). On one
machine a dead worker is noticed at once: a RUNNING trial whose pid no longer exists on this node
is failed and its parameters retried (:func:`reap_dead_workers`). Across machines only Optuna's
heartbeat can tell (:func:`retry_trial` is its stale-trial callback). ``NAS_WORKER_HOST`` sets the
host name a worker records.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.optuna_compat import quiet_experimental, storage_of, trial_id

#: A RUNNING trial this old without a worker attribute (set first thing in every trial) lost its worker.
ORPHAN_S = 10
#: How many times a killed trial's parameters are retried.
MAX_RETRY = 3
#: User attributes that name a trial's worker; a retry leaves them out.
IDENTITY = ("worker", "node", "fail_reason", "retried")


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


def worker_id() -> str:
    """This process as trials record it: ``host:pid``."""
    return f"{worker_host()}:{os.getpid()}"


def claim(trial: optuna.Trial) -> None:
    """Mark ``trial`` as run by this process (node before worker: a trial with a worker always has its node);
    a retry starts with a copy of the failed trial's attributes, whose failure is cleared."""
    trial.set_user_attr("node", NODE)
    trial.set_user_attr("worker", worker_id())
    if trial.user_attrs.get("fail_reason"):
        trial.set_user_attr("fail_reason", "")
        trial.set_user_attr("retried", False)


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (a WAITING copy), as Optuna's RetryHeartbeatStaleTrialCallback
    does, at most MAX_RETRY times; the copy leaves out the dead worker's identity (so that no reaper takes
    the retry for the dead trial before it starts), and the trial's companion proxy trial is failed too."""
    fail_proxy_trials(study, {trial.number})
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY or not trial.params:
        return
    system = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
              "retry_history": history}
    user = {k: v for k, v in trial.user_attrs.items() if k not in IDENTITY}
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                        distributions=trial.distributions, user_attrs=user, system_attrs=system))


def retry_interrupted(trial: optuna.Trial) -> None:
    """Fail-and-retry bookkeeping of a trial this process was interrupted in (Ctrl+C, SIGTERM)."""
    trial.set_user_attr("fail_reason", "interrupted (Ctrl+C); retried on resume")
    trial.set_user_attr("retried", True)
    with quiet_experimental():
        trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def proxy_study_name(study_name: str) -> str:
    """The companion single-objective study that carries per-epoch reports for Optuna's pruners."""
    return f"{study_name}:proxy"


def fail_proxy_trials(study: optuna.Study, numbers: set[int]) -> None:
    """Fail the RUNNING proxy-training trials (companion study) of the given main trials."""
    storage = storage_of(study)
    try:
        proxy_id = storage.get_study_id_from_name(proxy_study_name(study.study_name))
    except KeyError:
        return
    for t in storage.get_all_trials(proxy_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("trial") in numbers:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL)


def fail_unowned_proxy_trials(proxy_study: optuna.Study) -> None:
    """Fail RUNNING proxy trials that never got their owner's attributes (a worker killed between asking
    for one and labelling it). Call only when no search trial is RUNNING: every live proxy trial
    belongs to a RUNNING search trial, so none of these can be live."""
    storage = storage_of(proxy_study)
    for t in proxy_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not t.user_attrs.get("worker"):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _death(t: FrozenTrial, now: datetime) -> str | None:
    """Why a RUNNING trial's worker is known dead, or None."""
    worker = t.user_attrs.get("worker", "")
    pid = worker.rpartition(":")[2]
    if not worker and t.datetime_start and (now - t.datetime_start).total_seconds() > ORPHAN_S:
        return "its worker died before the trial began; nothing to retry"  # killed between ask and objective
    if t.user_attrs.get("node") == NODE and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
        return f"worker {worker} died mid-trial; retried"
    return None


def reap_dead_workers(study: optuna.Study, retry: bool = True) -> list[int]:
    """Fail RUNNING trials whose worker process on this node is gone, and retry their parameters.

    Heartbeats find dead workers on any machine, but only after the grace period; this finds the
    ones on this machine at once (pid check). Returns the trial numbers failed.
    """
    storage = storage_of(study)
    failed = []
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _death(t, now)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial_id(t), "fail_reason", reason)
            storage.set_trial_user_attr(trial_id(t), "retried", True)
            if not storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        if retry:
            retry_trial(study, storage.get_trial(trial_id(t)))
    return failed
