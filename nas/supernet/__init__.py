"""A once-for-all weight-sharing supernet for the mobilenetv2-family spaces (see :mod:`nas.supernet._net`).

- :class:`Supernet`: the largest network of a space; ``forward(x, arch)`` runs any candidate on the
  shared weights, :meth:`Supernet.extract` returns it as a plain ``nas.build_model`` network.
- :func:`train_supernet`: sandwich-rule training with in-place distillation and compression-aware
  steps, a safetensors checkpoint every epoch (``nas supernet train``).
- :func:`load_supernet` / :func:`recalibrate`: what the ``supernet`` evaluator uses.
"""

from __future__ import annotations

from nas.supernet._children import compressed_tensors, extreme
from nas.supernet._layout import Shapes, SupernetError, layout
from nas.supernet._net import Supernet
from nas.supernet._train import (SupernetTraining, TrainState, calibration_images, child_accuracy, load_supernet,
                                 read_supernet, recalibrate, save_supernet, train_supernet)

__all__ = ["Shapes", "Supernet", "SupernetError", "SupernetTraining", "TrainState", "calibration_images",
           "child_accuracy", "compressed_tensors", "extreme", "layout", "load_supernet", "read_supernet",
           "recalibrate", "save_supernet", "train_supernet"]
