"""The accuracy seam: an :class:`Evaluator` scores one candidate; the search decides everything else.

A search asks the cheap costs first (:mod:`nas.search.scoring`) and calls the evaluator only for
candidates that pass the cheap constraints. Which evaluator runs is the experiment's ``evaluator``
(``train``, the short proxy training of :mod:`nas.search.proxy`, by default). A new evaluator, a
weight-sharing supernet for one, is a subclass registered with :func:`register_evaluator`; both
backends run it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from nas.errors import HardwareError
from nas.experiment import ExperimentError
from nas.search.record import Outcome
from nas.search.scoring import cheap_costs, cheap_violations
from nas.search.setup import Setup
from nas.spec import Candidate

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Checkpoint:
    """Where an interrupted evaluation stood: epochs done, accuracy after each, the model's tensors."""

    epoch: int
    history: list[float] = field(default_factory=list)
    tensors: dict[str, Any] = field(default_factory=dict)


class ReportError(Exception):
    """Raised by a :class:`Progress` whose own reporting failed: the backend's business, never the candidate's
    (so it is not recorded as the trial's failure). The backend's error is its ``__cause__``."""


class Progress:
    """What the backend offers an evaluation in progress: a report after each epoch (its pruner or scheduler
    may stop the trial there) and a checkpoint to resume from. This base reports nowhere and never stops."""

    def report(self, epoch: int, accuracy: float, model: nn.Module, last: bool) -> bool:
        """After epoch ``epoch`` (from 1) with validation ``accuracy``; ``last`` is the final epoch. True asks the
        evaluator to stop now: the trial is PRUNED. May save ``model`` as a checkpoint."""
        return False

    def restored(self) -> Checkpoint | None:
        """The checkpoint of this trial's earlier, interrupted evaluation, if the backend kept one."""
        return None


class Evaluator:
    """Scores the accuracy of candidates for one search, in one worker process.

    - ``__init__(setup)``: once per worker process, before its first trial, with the prepared
      :class:`~nas.search.setup.Setup` (space, dataset splits, profiles): load or build here what every
      trial needs (a supernet's weights, say).
    - :meth:`evaluate`: once per candidate that passed the cheap constraints. It reports after each
      epoch through ``progress`` (pruning; checkpoints for resume) and returns an
      :class:`~nas.search.record.Outcome` without costs: COMPLETE with ``accuracy``, PRUNED when
      ``progress`` asked to stop, or FAIL with a reason (a diverged or over-time candidate). An
      exception it raises fails that trial only, with the exception as reason.
    - :meth:`close`: once when the worker is done (also after an interruption).

    ``number`` is the trial's number in the study; use it to seed, so that a trial's result does not
    depend on which worker ran it.
    """

    #: The name experiment files use (``evaluator: <name>``).
    name: ClassVar[str] = ""
    #: Whether :func:`~nas.search.setup.prepare` must load the dataset's splits for it.
    needs_data: ClassVar[bool] = True

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.experiment = setup.experiment

    def evaluate(self, candidate: Candidate, number: int, progress: Progress) -> Outcome:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def close(self) -> None:
        """Release what ``__init__`` took; nothing by default."""


_EVALUATORS: dict[str, type[Evaluator]] = {}


def register_evaluator(cls: type[Evaluator]) -> type[Evaluator]:
    """Class decorator: make ``cls`` available as ``evaluator: <cls.name>`` in experiment files."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}.name must be set to register it as an evaluator")
    _EVALUATORS[cls.name] = cls
    return cls


def evaluator_class(name: str) -> type[Evaluator]:
    """The evaluator registered as ``name``, or an ExperimentError listing those there are."""
    if name not in _EVALUATORS:
        raise ExperimentError(f"unknown evaluator {name!r}; choose from {sorted(_EVALUATORS)}.")
    return _EVALUATORS[name]


def available_evaluators() -> list[str]:
    return sorted(_EVALUATORS)


def evaluate_candidate(setup: Setup, candidate: Candidate, evaluate: Callable[[dict[str, float]], Outcome]
                       ) -> Outcome:
    """One trial's work on either backend: cheap costs; a candidate over a cheap limit is COMPLETE with
    accuracy 0 and never trained; the rest go to ``evaluate(costs)``. An error of the candidate's own (a
    profile that cannot price it, a layer that fails) fails this trial only."""
    experiment = setup.experiment
    costs: dict[str, float] = {}
    try:
        costs = cheap_costs(setup, candidate)
        if not experiment.needs_training:
            return Outcome("COMPLETE", costs)
        if any(v > 0 for v in cheap_violations(experiment, costs).values()):
            return Outcome("COMPLETE", costs, accuracy=0.0)
        return evaluate(costs).with_costs(costs)
    except ReportError:
        raise
    except HardwareError as exc:
        return Outcome.failed(f"HardwareError: {exc}", costs=costs)
    except Exception as exc:  # any error in one candidate fails that trial, not the search
        return Outcome.failed(f"{type(exc).__name__}: {exc}", costs=costs)
