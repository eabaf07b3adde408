"""Binary (BinaryConnect) and ternary (TWN-style) weights with a per-layer scale.

The real-valued weight stays as the trainable latent variable; the layer's
``weight`` becomes a :mod:`torch.nn.utils.parametrize` parametrization returning
``scale * b`` with ``b`` in ``{-1, +1}`` (binary) or ``{-1, 0, +1}`` (ternary).

- Sign binarization: ``b = sign(w)`` (``sign(0) = +1``).
- Stochastic binarization (BinaryConnect, Courbariaux et al. 2015): the layer's
  weights are ``+-H`` with a fixed per-layer scale ``H``, the mean ``|w|`` of the
  kept weights when the layer is quantized (so right after quantizing, the eval-mode
  network is the sign one's); the latent weights are clipped to ``[-H, H]`` before
  every training forward pass (BinaryConnect clips after every update; the clipped
  value is what the next step sees either way), and ``b = +1`` with probability
  ``hard_sigmoid(w / H) = clip((w / H + 1) / 2, 0, 1)``, else ``-1``, so
  ``E[H * b] = w``. Used in training mode; sign in eval mode (BinaryConnect's
  test-time rule, for a deterministic file). Without the clip and the scale,
  ``hard_sigmoid(w)`` of weights of size 0.01-0.05 is about 0.5 for all of them: every
  sign is a coin flip, and a trained digits net fine-tuned that way fell to chance.
- Ternary: ``b = sign(w)`` where ``|w| > threshold * mean|w|`` (0.7 in TWN), else 0.

Gradients use the straight-through estimator through ``Htanh(x) = clip(x, -1, 1)``:
the forward value is ``scale * b`` exactly, the backward is that of ``scale * Htanh(w)``,
i.e. ``scale * 1[|w| <= 1]``. The scale is ``mean |w|`` over kept weights (binary,
XNOR-Net) or over the weights kept non-zero (ternary), treated as a constant. The
stochastic rule's backward is that of ``H * Htanh(w / H)``, i.e. ``1[|w| <= H]``: the
gradient of the expected weight, as BinaryConnect propagates ``dC/dw_b`` to ``w``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from nas.compress.sharing import quantizable_layers
from nas.errors import CompressError

Mode = Literal["binary", "ternary"]


def htanh(x: torch.Tensor) -> torch.Tensor:
    """Hard tanh ``clip(x, -1, 1)``."""
    return x.clamp(-1.0, 1.0)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``clip((x + 1) / 2, 0, 1)``: BinaryConnect's probability of +1."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def straight_through(values: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """``values`` in the forward pass, the gradient of ``Htanh(latent)`` in the backward pass.

    ``h - h.detach()`` is exactly zero, so the forward value is ``values`` bit for bit.
    """
    h = htanh(latent)
    return values + (h - h.detach())


class QuantizedWeight(nn.Module):
    """Parametrization ``weight = scale * b * mask`` with an STE through Htanh (see the module docstring)."""

    def __init__(self, mode: Mode, mask: torch.Tensor | None, *, stochastic: bool = False,
                 threshold: float = 0.7, latent: torch.Tensor | None = None) -> None:
        super().__init__()
        if mode not in ("binary", "ternary"):
            raise CompressError(f"quantization mode must be 'binary' or 'ternary', but got {mode!r}.")
        if stochastic and mode != "binary":
            raise CompressError("stochastic rounding is defined for binary weights only (hard sigmoid).")
        if not threshold > 0:
            raise CompressError(f"ternary threshold must be > 0, but got {threshold}.")
        if stochastic and latent is None:
            raise CompressError("stochastic binarization takes its fixed per-layer scale from the layer's weights: "
                                "pass latent= (quantize_weights does).")
        self.mode, self.stochastic, self.threshold = mode, stochastic, threshold
        self.register_buffer("mask", mask.bool().clone() if mask is not None else None)
        #: BinaryConnect's fixed per-layer scale H (stochastic only): mean |w| of the kept weights.
        self.register_buffer("bound", self._mean_abs(latent.detach()) if stochastic and latent is not None else None)

    def _mean_abs(self, w: torch.Tensor) -> torch.Tensor:
        mags = w.abs()[self.mask] if self.mask is not None else w.abs().flatten()
        return mags.mean() if mags.numel() else w.new_zeros(())

    def levels(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``b`` in {-1, 0, +1}, scale), both without gradient."""
        w = latent.detach()
        keep = self.mask if self.mask is not None else torch.ones_like(w, dtype=torch.bool)
        mags = w.abs()[keep]
        if self.mode == "binary":
            if self.stochastic and self.training:
                b = torch.where(torch.rand_like(w) < hard_sigmoid(w / self._h()), 1.0, -1.0)
            else:
                b = torch.where(w >= 0, 1.0, -1.0)
            if self.stochastic:
                scale = self.bound
            else:
                scale = mags.mean() if mags.numel() else w.new_zeros(())
        else:
            delta = self.threshold * (mags.mean() if mags.numel() else w.new_zeros(()))
            b = torch.where(w > delta, 1.0, torch.where(w < -delta, -1.0, 0.0))
            big = mags[mags > delta]
            scale = big.mean() if big.numel() else w.new_zeros(())
        b = torch.where(keep, b, b.new_zeros(()))
        return b.to(w.dtype), scale.to(w.dtype)

    def _h(self) -> torch.Tensor:
        return self.bound.clamp_min(torch.finfo(self.bound.dtype).tiny)  # an all-zero layer keeps +-0

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.stochastic:
            if self.training:
                with torch.no_grad():
                    latent.clamp_(-self.bound, self.bound)  # BinaryConnect's clip of the latent weights
            b, scale = self.levels(latent)
            out = straight_through(b, latent / self._h()) * scale
        else:
            b, scale = self.levels(latent)
            out = straight_through(b, latent) * scale
        if self.mask is not None:
            out = out * self.mask
        return out


def quantize_weights(model: nn.Module, mode: Mode, *, stochastic: bool = False, threshold: float = 0.7,
                     layers: list[str] | None = None) -> dict[str, QuantizedWeight]:
    """Make every conv/linear weight (or those in ``layers``) binary or ternary, in place.

    Pruned layers keep their mask: pruned weights stay zero and do not count in the scale.
    ``stochastic``: BinaryConnect's stochastic rule while training (see the module docstring).
    """
    out: dict[str, QuantizedWeight] = {}
    for name, module, mask in quantizable_layers(model, layers, f"{mode} weights"):
        quant = QuantizedWeight(mode, mask, stochastic=stochastic, threshold=threshold, latent=module.weight)
        parametrize.register_parametrization(module, "weight", quant)
        out[name] = quant
    return out
