"""The ``supernet`` evaluator: a candidate's accuracy read off a trained weight-sharing supernet, in seconds.

A trial extracts the candidate from the supernet (:meth:`nas.supernet.Supernet.extract`), applies its
compression (:func:`nas.compress.apply_compression`, the same stages as the proxy and the winners:
channel pruning, low rank, magnitude pruning, codebooks or binary/ternary/int8 weights), recalibrates
its batch norm on a few training batches and scores it on the validation split. Nothing is trained,
so a trial's result depends only on the candidate and the supernet file.
"""

from __future__ import annotations

import time

import torch

from nas.compress import apply_compression, stages
from nas.data import head
from nas.search.evaluator import Evaluator, Progress, register_evaluator
from nas.search.record import Outcome
from nas.search.setup import Setup
from nas.spec import Candidate
from nas.device import resolve_device
from nas.supernet import SupernetTraining, calibration_images, load_supernet, recalibrate
from nas.train import evaluate


@register_evaluator
class SupernetEvaluator(Evaluator):
    """``evaluator: supernet``: the supernet at ``supernet.checkpoint`` (relative to the experiment file),
    loaded once per worker; each trial costs one extraction, one compression and one validation pass."""

    name = "supernet"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        if setup.splits is None:
            raise ValueError("the supernet evaluator needs the dataset's splits (prepare(experiment, data=True))")
        self.config = SupernetTraining.of(self.experiment)
        self.net, self.state = load_supernet(self.experiment.supernet_checkpoint, setup.space)
        self.device = resolve_device(self.config.device, f"{self.experiment.source}: device")
        self.net.to(self.device)  # children are extracted, recalibrated and scored there
        self.calibration = calibration_images(setup.splits, self.config.recalibration_batches,
                                              self.config.batch_size, self.config.seed)

    def evaluate(self, candidate: Candidate, number: int, progress: Progress) -> Outcome:
        splits = self.setup.splits
        assert splits is not None  # checked in __init__
        start = time.perf_counter()
        saved = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            model = self.net.extract(candidate.arch)
            if stages(candidate.compression):
                model = apply_compression(model, candidate.compression, inplace=True, seed=number,
                                          data=self.calibration[:256])
            recalibrate(model, self.calibration, self.config.recalibration_batches, self.config.batch_size)
            accuracy = evaluate(model, head(splits.val, self.experiment.config.supernet.eval_samples))
        finally:
            torch.set_num_threads(saved)
        progress.report(1, accuracy, model, last=True)
        return Outcome("COMPLETE", accuracy=float(accuracy), trained=True, epochs=0, history=(float(accuracy),),
                       seconds=time.perf_counter() - start, attrs={"device": str(self.device)})
