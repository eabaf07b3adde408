"""Low-rank factorization of linear and conv layers, rebuilt as sequences of smaller layers.

- Linear ``cout x cin``: truncated SVD ``W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``, two
  linear layers ``cin -> r -> cout`` (:class:`LowRankLinear`).
- Conv ``k x k`` (groups 1): Jaderberg et al.'s two-component scheme, a ``k x 1`` conv
  to ``r`` channels followed by a ``1 x k`` conv, with the closed-form optimal
  filters of Tai et al. (SVD of the ``(cin*k) x (cout*k)`` unfolding)
  (:class:`TwoComponentConv`). A 1x1 conv is the same scheme with k = 1, an SVD.
- Conv, CP option: a rank-``R`` CP decomposition of the 4-d kernel by tensorly's
  ``parafac`` (ALS), rebuilt as 1x1 -> depthwise k x 1 -> depthwise 1 x k -> 1x1
  (Lebedev et al.) (:class:`CPConv`).

The rank follows :func:`nas.cost.lowrank_rank` exactly:
``r = max(1, ceil(ratio * k * min(cin, cout)))``, and a layer is left dense when
factorizing would not save weights, or when it is grouped/depthwise. The CP option
uses the same rank rule; the cost model prices the two-component scheme only.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import nn

from nas.errors import CompressError
from nas.factoring import Method, factorizable, rank_for, unfold

__all__ = ["FACTORED", "CPConv", "LowRankLinear", "Method", "TwoComponentConv", "apply_lowrank", "factorize", "rank_for",
           "shaped_like"]


class LowRankLinear(nn.Sequential):
    """``cin -> rank -> cout``: the truncated-SVD factors of a linear layer (bias on the second)."""

    def __init__(self, cin: int, cout: int, rank: int, bias: bool) -> None:
        super().__init__(nn.Linear(cin, rank, bias=False), nn.Linear(rank, cout, bias=bias))
        self.rank = rank

    @classmethod
    def shaped_like(cls, module: nn.Linear, rank: int) -> LowRankLinear:
        return cls(module.in_features, module.out_features, rank, module.bias is not None)

    @classmethod
    def from_module(cls, module: nn.Linear, rank: int) -> LowRankLinear:
        out = cls.shaped_like(module, rank)
        u, s, vh = torch.linalg.svd(module.weight.detach().double(), full_matrices=False)
        root = s[:rank].sqrt()
        with torch.no_grad():
            out[0].weight.copy_((root[:, None] * vh[:rank]).float())
            out[1].weight.copy_((u[:, :rank] * root[None, :]).float())
            if module.bias is not None:
                out[1].bias.copy_(module.bias)
        return out


def _conv_geometry(module: nn.Conv2d) -> tuple[int, int, int, int, int]:
    (k, _), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding  # type: ignore[misc]
    return k, sh, sw, ph, pw


_F = TypeVar("_F", bound="_FactoredConv")


class _FactoredConv(nn.Sequential):
    """A conv replaced by a sequence of smaller convs of rank ``rank``, same input and output.
    Subclasses take ``(cin, cout, rank, k, stride, padding, bias)``."""

    @classmethod
    def shaped_like(cls: type[_F], module: nn.Conv2d, rank: int) -> _F:
        """An untrained factorization with ``module``'s channels, kernel, stride, padding and bias."""
        k, sh, sw, ph, pw = _conv_geometry(module)
        return cls(module.in_channels, module.out_channels, rank, k, (sh, sw), (ph, pw), module.bias is not None)


class TwoComponentConv(_FactoredConv):
    """``k x 1`` conv to ``rank`` channels, then ``1 x k`` conv to ``cout`` (Jaderberg's scheme 2)."""

    def __init__(self, cin: int, cout: int, rank: int, k: int, stride: tuple[int, int], padding: tuple[int, int],
                 bias: bool) -> None:
        super().__init__(
            nn.Conv2d(cin, rank, (k, 1), (stride[0], 1), (padding[0], 0), bias=False),
            nn.Conv2d(rank, cout, (1, k), (1, stride[1]), (0, padding[1]), bias=bias),
        )
        self.rank = rank

    @classmethod
    def from_module(cls, module: nn.Conv2d, rank: int) -> TwoComponentConv:
        out = cls.shaped_like(module, rank)
        w = module.weight.detach().double()  # (cout, cin, k, k)
        cout, cin, k, _ = w.shape
        u, s, vh = torch.linalg.svd(unfold(w), full_matrices=False)  # [(c, i), (n, j)]
        root = s[:rank].sqrt()
        vertical = (u[:, :rank] * root).reshape(cin, k, rank).permute(2, 0, 1).unsqueeze(-1)  # (r, cin, k, 1)
        horizontal = (vh[:rank].T * root).reshape(cout, k, rank).permute(0, 2, 1).unsqueeze(2)  # (cout, r, 1, k)
        with torch.no_grad():
            out[0].weight.copy_(vertical.float())
            out[1].weight.copy_(horizontal.float())
            if module.bias is not None:
                out[1].bias.copy_(module.bias)
        return out


class CPConv(_FactoredConv):
    """Rank-``rank`` CP decomposition: 1x1 ``cin -> R``, depthwise ``k x 1``, depthwise ``1 x k``, 1x1 ``R -> cout``."""

    def __init__(self, cin: int, cout: int, rank: int, k: int, stride: tuple[int, int], padding: tuple[int, int],
                 bias: bool) -> None:
        super().__init__(
            nn.Conv2d(cin, rank, 1, bias=False),
            nn.Conv2d(rank, rank, (k, 1), (stride[0], 1), (padding[0], 0), groups=rank, bias=False),
            nn.Conv2d(rank, rank, (1, k), (1, stride[1]), (0, padding[1]), groups=rank, bias=False),
            nn.Conv2d(rank, cout, 1, bias=bias),
        )
        self.rank = rank

    @classmethod
    def from_module(cls, module: nn.Conv2d, rank: int, *, seed: int = 0, n_iter_max: int = 200) -> CPConv:
        from tensorly.decomposition import parafac

        out = cls.shaped_like(module, rank)
        w = module.weight.detach().double().numpy()
        cp = parafac(w, rank, n_iter_max=n_iter_max, init="random", random_state=seed, tol=1e-10)
        lam, (a, b, c, d) = np.asarray(cp.weights), [np.asarray(f) for f in cp.factors]
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).float()  # noqa: E731
        with torch.no_grad():
            out[0].weight.copy_(t(b.T)[:, :, None, None])  # (R, cin, 1, 1)
            out[1].weight.copy_(t(c.T)[:, None, :, None])  # (R, 1, k, 1)
            out[2].weight.copy_(t(d.T)[:, None, None, :])  # (R, 1, 1, k)
            out[3].weight.copy_(t(a * lam[None, :])[:, :, None, None])  # (cout, R, 1, 1)
            if module.bias is not None:
                out[3].bias.copy_(module.bias)
        return out


FACTORED = (LowRankLinear, TwoComponentConv, CPConv)


def factorize(module: nn.Module, rank: int, method: Method = "two_component") -> nn.Module:
    """The factored replacement of one layer at ``rank`` (convs: ``method``)."""
    if isinstance(module, nn.Linear):
        return LowRankLinear.from_module(module, rank)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise CompressError(f"low-rank: grouped/depthwise convs (groups={module.groups}) are not factorized.")
        if method == "cp":
            return CPConv.from_module(module, rank)
        if method == "two_component":
            return TwoComponentConv.from_module(module, rank)
        raise CompressError(f"low-rank: method must be 'two_component' or 'cp', but got {method!r}.")
    raise CompressError(f"low-rank: cannot factorize {type(module).__name__}.")


def shaped_like(module: nn.Module, kind: str, rank: int) -> nn.Module:
    """An untrained factored module of the given kind; the container loader fills its weights."""
    classes = {cls.__name__: cls for cls in FACTORED}
    if kind not in classes:
        raise CompressError(f"low-rank: unknown factored module {kind!r}; known: {sorted(classes)}.")
    made: nn.Module = classes[kind].shaped_like(module, rank)  # type: ignore[attr-defined]
    return made


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def apply_lowrank(model: nn.Module, ratio: float, method: Method = "two_component") -> dict[str, int]:
    """Factorize every linear and groups-1 conv layer of ``model`` in place; returns the rank per layer.

    Layers where the factored form would not hold fewer weights stay dense (and are
    not in the result), as in :func:`nas.cost.lowrank_rank`.
    """
    if not 0.0 < ratio <= 1.0:
        raise CompressError(f"low-rank: ratio must be in (0, 1], but got {ratio}.")
    if method not in ("two_component", "cp"):
        raise CompressError(f"low-rank: method must be 'two_component' or 'cp', but got {method!r}.")
    chosen: dict[str, int] = {}
    for name, module in list(model.named_modules()):
        if any(name.startswith(f + ".") for f in chosen):
            continue
        rank = factorizable(module, ratio, method)
        if rank is not None:
            chosen[name] = rank
    for name, rank in chosen.items():
        _replace(model, name, factorize(model.get_submodule(name), rank, method))
    return chosen
