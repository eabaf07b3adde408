"""The Ray Tune backend of ``nas search``: ``nas search EXP --backend ray [--address HOST:PORT | auto]``.

The same trials as the local backend, run as Ray Tune trials on a local Ray instance or a cluster, into
the same run folder: the driver side (sampling, recording, ASHA, resume) is :mod:`nas.search.ray.driver`,
a trial's side (runs in a Ray worker) :mod:`nas.search.ray.trial`, the Ray instance and its token
authentication :mod:`nas.search.ray.session`.
"""

from __future__ import annotations

import time
from pathlib import Path

from nas.experiment import Experiment, load_experiment
from nas.search.budget import counted, session_failure
from nas.search.local import SearchResult
from nas.search.ray.driver import Driver, check_gpus
from nas.search.ray.session import ray_session
from nas.search.session import open_run


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
    if exp.needs_training:
        check_gpus(exp)
    run = open_run(exp, folder, storage, command, data=False)
    if exp.needs_training:  # each trial resolves the setting on its node (its device attribute)
        run.folder.record_device(exp.config.device)
    first = len(run.study().get_trials(deepcopy=False))  # the number of this session's first trial
    started = time.perf_counter()
    interrupted = False
    try:
        with ray_session(address, num_cpus):
            interrupted = Driver(run, progress).drive()
    finally:
        study = run.study()
        trials = study.get_trials(deepcopy=False)
        frame, hv = run.folder.write_results(trials, study.directions)
    if interrupted:
        raise KeyboardInterrupt
    return SearchResult(run, frame, hv, counted(trials), int(frame["pareto"].sum()) if len(frame) else 0,
                        time.perf_counter() - started, session_failure(trials, first))


__all__ = ["ray_session", "search"]
