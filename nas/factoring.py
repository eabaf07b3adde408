"""Which layers low-rank factorization touches, the matrix it takes the SVD of, and the penalty that prepares them.

A ground floor (torch and :mod:`nas.graph` only) shared by :mod:`nas.compress.lowrank`, which factorizes
trained layers, and :mod:`nas.train`, which can train with :class:`LowRankPenalty` so that the later
factorization is nearly lossless:

- :func:`rank_for`: the rank :func:`nas.graph.lowrank_rank` gives a layer at a ratio;
- :func:`factorizable`: that rank, or None where the layer stays dense (grouped, non-square, or no saving);
- :func:`unfold`: the matrix whose truncated SVD is the factorization (a linear layer's weight; a conv's
  ``(cin*k) x (cout*k)`` unfolding of Jaderberg's two-component scheme, an SVD for 1x1);
- :class:`LowRankPenalty`: the truncated nuclear norm of each such matrix (the sum of its singular values
  beyond the rank, Hu et al.'s TNNR), in units of its largest singular value, summed over the layers.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from nas.errors import CompressError
from nas.graph import Op, lowrank_rank

Method = Literal["two_component", "cp"]


def as_op(module: nn.Module) -> Op:
    """``module`` as the op list's :class:`~nas.graph.Op` (channels, kernel, groups), for the rank rule."""
    if isinstance(module, nn.Linear):
        return Op("linear", "", module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        if kh != kw:
            raise CompressError(f"low-rank: only square kernels are factorized, but got {module.kernel_size}.")
        return Op("conv", "", module.in_channels, module.out_channels, kernel=kh, groups=module.groups,
                  bias=module.bias is not None)
    raise CompressError(f"low-rank: only nn.Linear and nn.Conv2d are factorized, but got {type(module).__name__}.")


def rank_for(module: nn.Module, ratio: float) -> int:
    """The rank ``nas.cost`` assigns to ``module`` at ``ratio`` (full rank ``k * min(cin, cout)``)."""
    op = as_op(module)
    return lowrank_rank(ratio, op.kernel, op.cin, op.cout)


def factored_weights(module: nn.Module, rank: int, method: Method = "two_component") -> int:
    """Weights of ``module`` factorized at ``rank`` (convs: ``method``)."""
    op = as_op(module)
    if method == "cp":
        return rank * (op.cin + op.cout + 2 * op.kernel)
    return rank * op.kernel * (op.cin + op.cout)


def factorizable(module: nn.Module, ratio: float, method: Method = "two_component") -> int | None:
    """The rank ``module`` is factorized to at ``ratio``, or None where it stays dense: not a linear or
    groups-1 square conv, or the factors would not hold fewer weights (as :func:`nas.graph.lowrank_rank`)."""
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return None
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.kernel_size[0] != module.kernel_size[1]):
        return None
    rank = rank_for(module, ratio)
    conv_method: Method = method if isinstance(module, nn.Conv2d) else "two_component"
    return rank if factored_weights(module, rank, conv_method) < module.weight.numel() else None


def unfold(weight: torch.Tensor) -> torch.Tensor:
    """The matrix factorization takes the SVD of: a linear weight as it is, a conv weight ``(cout, cin, k, k)``
    as its ``(cin*k) x (cout*k)`` unfolding ``[(c, i), (n, j)]`` (Tai et al.'s closed form of Jaderberg's scheme)."""
    if weight.ndim == 2:
        return weight
    cout, cin, k, _ = weight.shape
    return weight.permute(1, 2, 0, 3).reshape(cin * k, cout * k)


def lowrank_settings(ratio: float | None, weight: float) -> dict[str, float]:
    """The :class:`nas.train.TrainConfig` settings of low-rank regularization at ``weight`` aimed at a
    candidate's ``compression.lowrank_ratio``: none when it has no ratio or ``weight`` is 0."""
    return {} if ratio is None or not weight else {"lowrank_penalty": weight, "lowrank_ratio": ratio}


class LowRankPenalty:
    """``penalty()``: the sum over the layers factorization will touch at ``ratio`` of
    ``sum(s[rank:]) / s[0]``, ``s`` the singular values of the layer's :func:`unfold` (0 when the weights
    already have that rank), i.e. exactly what truncating to ``rank`` drops. Its gradient moves every
    dropped singular value towards 0 at the same rate (``s[0]`` is held constant, so scaling the weights, as
    batch norm allows, gains nothing) while the kept ones train freely. Differentiable (through
    ``torch.linalg.svdvals``), one SVD per layer per call; the layers are found once, on the model as it is
    when constructed (dense)."""

    def __init__(self, model: nn.Module, ratio: float) -> None:
        if not 0.0 < ratio <= 1.0:
            raise CompressError(f"low-rank penalty: ratio must be in (0, 1], but got {ratio}.")
        self.layers = [(m, rank) for m in model.modules() if (rank := factorizable(m, ratio)) is not None]

    def __call__(self) -> torch.Tensor:
        if not self.layers:
            return torch.zeros(())
        terms = []
        for module, rank in self.layers:
            s = torch.linalg.svdvals(unfold(module.weight))
            terms.append(s[rank:].sum() / (s[0].detach() + 1e-12))
        return torch.stack(terms).sum()
