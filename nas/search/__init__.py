"""The search driver: an Optuna study over architectures and compression settings.

``nas search EXPERIMENT.yaml`` runs one experiment (:mod:`nas.experiment`) into a run folder
(:mod:`nas.run`, docs/run-folder.md) and can be stopped and started again at will. The package
follows the search's seams:

- :mod:`~nas.search.study`: storage (SQLite in the run folder, or a shared database URL) with
  Optuna's heartbeat, samplers, pruners, per-session seeds;
- :mod:`~nas.search.setup`: the space, dataset and profiles, prepared once per worker and injected;
- :mod:`~nas.search.scoring`: cheap costs and constraint violations, no training;
- :mod:`~nas.search.evaluator`: the :class:`Evaluator` seam (accuracy of one candidate), with
  :mod:`~nas.search.proxy`'s ``train`` evaluator as the default and :mod:`~nas.search.supernet`'s
  ``supernet`` evaluator (a trained weight-sharing supernet);
- :mod:`~nas.search.record`: one :class:`Outcome` type and one :func:`record` for both backends;
- :mod:`~nas.search.workers`: worker identity, the dead-worker reaper, retries;
- :mod:`~nas.search.budget`: budget accounting and progress;
- :mod:`~nas.search.local`: the local backend (worker processes on this machine);
  :mod:`nas.search.ray`: the Ray Tune backend.
"""

from __future__ import annotations

from nas.search.evaluator import (
    Checkpoint,
    Evaluator,
    Progress,
    ReportError,
    available_evaluators,
    evaluator_class,
    register_evaluator,
)
from nas.search.local import SearchResult, search
from nas.search.proxy import TrainEvaluator, proxy_setup, proxy_train
from nas.search.supernet import SupernetEvaluator
from nas.search.record import Outcome, record
from nas.search.scoring import cheap_costs, reference_point, short_label
from nas.search.session import SearchRun, open_run
from nas.search.setup import Setup, prepare
from nas.search.study import driver_url, make_storage, redact

__all__ = [
    "Checkpoint",
    "Evaluator",
    "Outcome",
    "Progress",
    "ReportError",
    "SearchResult",
    "SearchRun",
    "Setup",
    "SupernetEvaluator",
    "TrainEvaluator",
    "available_evaluators",
    "cheap_costs",
    "driver_url",
    "evaluator_class",
    "make_storage",
    "open_run",
    "prepare",
    "proxy_setup",
    "proxy_train",
    "record",
    "redact",
    "reference_point",
    "register_evaluator",
    "search",
    "short_label",
]
