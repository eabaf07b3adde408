"""What the issue-17 reproductions share: LeNet-300-100 from the ``lenet`` space and a training subset."""

from __future__ import annotations

from dataclasses import replace

from torch.utils.data import TensorDataset

import nas
from nas.data import Splits


def lenet_300_100() -> nas.ArchSpec:
    choices = {"variant": "lenet-300-100", "mlp.hidden": "300-100"}
    return nas.load_space("lenet").config.build(lambda key, options: choices.get(key, options[0]))


def first_images(splits: Splits, n: int | None) -> Splits:
    """The same validation and test sets with the first ``n`` training images (all when ``n`` is None)."""
    x, y = splits.train.tensors
    return splits if n is None else replace(splits, train=TensorDataset(x[:n], y[:n]))
