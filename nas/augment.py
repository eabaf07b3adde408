"""Train-time augmentation of image batches, with plain torch ops (torchvision does not import with the
pinned torch).

Set in the experiment file under ``dataset: {augment: {...}}`` (any dataset of images, an image folder
or a built-in one) and applied by :func:`nas.train.train` to every training batch, never to validation
or test. The batch arrives standardised (``(pixel - mean) / std``, :class:`nas.data.Splits`); the
geometric and photometric changes are made in pixel space ([0, 1]) and the batch is standardised again,
so padding is black and brightness scales the pixels, as torchvision's transforms do:

- ``crop: P``: pad each image with ``P`` black pixels on every side, then cut a random window of the
  original size (the translation of Krizhevsky et al. 2012 and of every CIFAR recipe since).
- ``flip: true``: mirror left-right with probability 1/2; ``vflip: true``: upside down with 1/2.
- ``brightness: b``: multiply each image by a factor drawn from ``[1 - b, 1 + b]``.
- ``contrast: c``: blend each image with its mean grey by a factor drawn from ``[1 - c, 1 + c]``.
- ``cutout: S``: one random ``S x S`` square per image set to the training mean (DeVries & Taylor 2017).

Random draws come from the training loop's seeded generator, so a run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field


class Augment(BaseModel):
    """The augmentation of training batches (see the module docstring); all off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: int = Field(default=0, ge=0)
    flip: bool = False
    vflip: bool = False
    brightness: float = Field(default=0.0, ge=0, lt=1)
    contrast: float = Field(default=0.0, ge=0, lt=1)
    cutout: int = Field(default=0, ge=0)

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.vflip or self.brightness or self.contrast or self.cutout)


def _uniform(n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` factors from ``[1 - spread, 1 + spread]``, shaped to scale a batch."""
    return (1 + spread * (2 * torch.rand(n, generator=generator) - 1)).view(n, 1, 1, 1)


def _crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``pad`` pixels each way, the uncovered border black (zero)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    return padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def _flip(x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(len(x), generator=generator) < 0.5).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(dim), x)


def _cutout(z: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One ``size x size`` square per image (centred anywhere, clipped at the border) set to 0: the mean."""
    n, _, h, w = z.shape
    cy = torch.randint(0, h, (n, 1), generator=generator)
    cx = torch.randint(0, w, (n, 1), generator=generator)
    half = size // 2
    inside_y = ((torch.arange(h) >= cy - half) & (torch.arange(h) < cy - half + size))[:, None, :, None]
    inside_x = ((torch.arange(w) >= cx - half) & (torch.arange(w) < cx - half + size))[:, None, None, :]
    return z.masked_fill(inside_y & inside_x, 0.0)


def augment_batch(x: torch.Tensor, augment: Augment, mean: Sequence[float], std: Sequence[float],
                  generator: torch.Generator) -> torch.Tensor:
    """The standardised batch ``x`` ``(N, C, H, W)`` augmented by ``augment`` (a new tensor; ``x`` is kept).
    ``mean``/``std``: the per-channel statistics ``x`` was standardised with (empty: none)."""
    if x.ndim != 4 or not augment.active:
        return x
    m = torch.tensor(mean or [0.0], dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std or [1.0], dtype=x.dtype).view(1, -1, 1, 1)
    p = x * s + m
    if augment.crop:
        p = _crop(p, augment.crop, generator)
    if augment.flip:
        p = _flip(p, 3, generator)
    if augment.vflip:
        p = _flip(p, 2, generator)
    if augment.brightness:
        p = p * _uniform(len(p), augment.brightness, generator)
    if augment.contrast:
        grey = p.mean(dim=(1, 2, 3), keepdim=True)
        p = grey + (p - grey) * _uniform(len(p), augment.contrast, generator)
    if augment.brightness or augment.contrast:
        p = p.clamp(0.0, 1.0)
    z = (p - m) / s
    return _cutout(z, augment.cutout, generator) if augment.cutout else z
