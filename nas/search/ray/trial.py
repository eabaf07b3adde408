"""A search trial as a Ray Tune trial: runs in a Ray worker process, never opens the study.

The driver samples the candidate; the trial scores it (:func:`nas.search.evaluator.evaluate_candidate`,
as the local backend does) and reports. After every epoch but the last it reports the validation
accuracy (ASHA's metric) with a safetensors checkpoint, and the outcome the trial would have if a
scheduler stopped it there (PRUNED); the last report carries the real :class:`~nas.search.record.Outcome`.
Both are JSON in the ``outcome`` metric, which the driver records (:mod:`nas.search.ray.driver`).
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from nas.experiment import Experiment, ExperimentConfig
from nas.search.evaluator import Checkpoint, Evaluator, Progress, ReportError, evaluate_candidate, evaluator_class
from nas.search.record import Outcome
from nas.search.setup import Setup, prepare
from nas.spec import Candidate

#: What this worker process prepared for the experiment it last ran (loaded once, like a local worker).
_PREPARED: dict[str, tuple[Setup, Evaluator]] = {}


def experiment_of(config: dict[str, Any], source: str) -> Experiment:
    """The experiment from its settings as the driver passes them to every trial."""
    return Experiment(ExperimentConfig.model_validate(config), source)


def trial_device(device: str) -> str:
    """The device setting inside a Ray trial: ``cuda:N`` is ``cuda``, the GPU Ray reserved for the trial
    (its ``CUDA_VISIBLE_DEVICES`` holds only that one, so it is index 0 there); others as they are."""
    return "cuda" if device.startswith("cuda") else device


def _prepared(config: dict[str, Any], source: str) -> tuple[Setup, Evaluator]:
    config = {**config, "device": trial_device(config.get("device", "cpu"))}  # the GPU Ray reserved, if any
    key = json.dumps([config, source], sort_keys=True)
    if key not in _PREPARED:
        for _, old in _PREPARED.values():
            old.close()
        _PREPARED.clear()
        setup = prepare(experiment_of(config, source))
        _PREPARED[key] = (setup, evaluator_class(setup.experiment.config.evaluator)(setup))
    return _PREPARED[key]


class TuneProgress(Progress):
    """Reports to Tune after each epoch but the last, with a checkpoint; restores from Tune's checkpoint."""

    def __init__(self, candidate: Candidate, number: int, costs: dict[str, float], attrs: dict[str, Any]) -> None:
        self.candidate, self.number, self.costs, self.attrs = candidate, number, costs, attrs
        self.history: list[float] = []

    def restored(self) -> Checkpoint | None:
        from nas.checkpoint import read_checkpoint

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            tensors, meta = read_checkpoint(Path(folder) / "model.safetensors")
        self.history = list(meta["extra"]["history"])
        return Checkpoint(int(meta["extra"]["epoch"]), list(self.history), tensors)

    def report(self, epoch: int, accuracy: float, model: Any, last: bool) -> bool:
        """Epochs before the last train the dense model (the compressed one, with ``proxy.compressed``, is
        always the last epoch): their checkpoints hold dense weights."""
        from nas.checkpoint import save_checkpoint

        self.history.append(accuracy)
        if last:
            return False
        stopped = Outcome("PRUNED", self.costs, accuracy, True, epoch, tuple(self.history), attrs=self.attrs,
                          reason=f"stopped by ASHA after epoch {epoch} (validation accuracy {accuracy:.3f})")
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / "model.safetensors", model, self.candidate,
                            extra={"epoch": epoch, "history": self.history, "trial": self.number})
            metrics = {"val_accuracy": accuracy, "epoch": epoch, "final": False, "outcome": json.dumps(stopped.to_dict())}
            try:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            except Exception as exc:
                raise ReportError() from exc
        return False


def run_trial(config: dict[str, Any], *, experiment: dict[str, Any], source: str) -> None:
    """The Tune trainable: one candidate (``config["candidate"]``, trial ``config["number"]``) scored and reported."""
    setup, evaluator = _prepared(experiment, source)
    attrs = {"ray_node": socket.gethostname()}
    number = int(config["number"])
    try:
        candidate = Candidate.from_json(config["candidate"])
        outcome = evaluate_candidate(setup, candidate, lambda costs: evaluator.evaluate(
            candidate, number, TuneProgress(candidate, number, costs, attrs)))
    except ReportError as exc:
        raise exc.__cause__ or exc from None
    except Exception as exc:  # a candidate that does not even parse fails its trial, not the search
        outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
    final: dict[str, Any] = {"final": True, "outcome": json.dumps({**outcome.to_dict(),
                                                                   "attrs": {**outcome.attrs, **attrs}})}
    if outcome.state == "COMPLETE" and outcome.trained:
        final.update(val_accuracy=outcome.accuracy, epoch=outcome.epochs)
    tune.report(final)
