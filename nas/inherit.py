"""Where a run's winners and their teacher start: the run's supernet, when its search scored with one.

With ``evaluator: supernet`` a candidate's search accuracy is that of its weights inside the trained
supernet, so each winner starts from them (:meth:`nas.supernet.Supernet.extract`, batch norm
recalibrated) instead of a fresh initialisation, and the teacher is the supernet's largest child
(:func:`nas.supernet.extreme`): it learnt from the labels at every step of the sandwich rule and taught
the other children in place, so it needs no training of its own (``--teacher-epochs N`` fine-tunes it
N epochs). Otherwise everything starts from a fresh initialisation, as for ``evaluator: train``.

A supernet file that is missing or does not fit the run (another space setting) is one warning line and
the same fresh start: the search has finished and its front stands, winners from scratch are the
pipeline every ``evaluator: train`` run uses, and a run folder copied to another machine often comes
without the supernet; the line names the file and how to get it back, and ``init`` in
``winners/summary.csv`` says which start each winner had.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from nas.data import Splits
from nas.experiment import Experiment
from nas.models import build_model
from nas.space import load_space
from nas.spec import Candidate, CompressionSpec
from nas.supernet import Supernet, SupernetError, extreme, load_supernet
from nas.train import recalibrate

log = logging.getLogger("nas.winners")

#: ``init`` of a winner (summary.csv, its checkpoint): the supernet's weights or a fresh initialisation.
SUPERNET, SCRATCH = "supernet", "scratch"


def run_supernet(experiment: Experiment, splits: Splits) -> Supernet | None:
    """The trained supernet the run's search scored with (``evaluator: supernet``), on the CPU; None for
    another evaluator, or (with a warning line) when its checkpoint cannot be read."""
    if experiment.config.evaluator != "supernet":
        return None
    # at the dataset's input and classes, as the search's setup fits it
    space = load_space(experiment.resolve(experiment.config.space)).with_input(splits.input_shape, splits.num_classes)
    try:
        net, _ = load_supernet(experiment.supernet_checkpoint, space)
    except SupernetError as exc:
        log.warning(f"{str(exc).rstrip('.')}; so the winners start from scratch and the teacher is trained "
                    f"(winners.teacher_epochs), as for evaluator: train.")
        return None
    return net


def start(net: Supernet | None, arch: Any, seed: int, calibration: torch.Tensor | None,
          batch_size: int) -> tuple[nn.Module, str]:
    """A winner's network before it trains and where its weights came from (:data:`SUPERNET` or
    :data:`SCRATCH`): extracted from ``net`` with batch norm recalibrated on ``calibration``, or built
    fresh under ``seed``."""
    torch.manual_seed(seed)
    if net is None:
        return build_model(arch), SCRATCH
    model = net.extract(arch)
    if calibration is not None:
        recalibrate(model, calibration, None, batch_size)
    return model, SUPERNET


def largest_child(net: Supernet, calibration: torch.Tensor | None, batch_size: int) -> tuple[nn.Module, Candidate]:
    """The supernet's largest child, uncompressed, as the winners' teacher."""
    cand = Candidate(extreme(net.space, largest=True), CompressionSpec())
    model, _ = start(net, cand.arch, 0, calibration, batch_size)
    return model, cand
