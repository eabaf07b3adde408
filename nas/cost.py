"""Exact MAdd/parameter counts and Deep-Compression storage estimates from the op list.

Conventions (the tests hold them against torch and fvcore):

- **MAdds** count one fused multiply-add as 1, for convolutions and linear
  layers only: ``cout * (cin / groups) * k * k * out_h * out_w`` per conv and
  ``cin * cout`` per linear layer, batch of one. This is the MobileNet papers'
  convention and equals fvcore's ``FlopCountAnalysis`` restricted to its
  ``aten::_convolution``, ``aten::linear``, ``aten::addmm`` and ``aten::matmul``
  handles. Batch norm (folded into the conv at inference), pooling, activations
  and residual adds are not multiply-adds; ``Cost.norm_flops`` and
  ``Cost.pool_flops`` carry what fvcore's *default* handles add for them
  (``aten::batch_norm`` = 2 x elements in eval mode, ``aten::adaptive_avg_pool2d``
  = input elements), so ``Cost.fvcore_default`` equals fvcore's default total.
- **Parameters** are every trainable tensor: weights, biases, batch-norm scale
  and shift (not the running statistics).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from nas.compressed import compressed
from nas.graph import Op, factorize_ops, layer_ops, lowrank_rank, ops
from nas.spec import ArchSpec, CompressionSpec, Layer

__all__ = ["Cost", "FvcoreCount", "LayerSize", "StageCost", "count", "count_ops", "fvcore_count", "lowrank_rank",
           "size_bits", "size_report", "stage_costs"]

FLOAT_BITS = 32
LLOYD_STEPS = 300  # converged to 0.01 bits on the reference cases
#: Deep Compression's relative-index widths: 8 bits for conv layers, 5 for fully connected.
INDEX_BITS = {"conv": 8, "linear": 5}


class Cost(NamedTuple):
    madds: int
    params: int
    norm_flops: int = 0
    pool_flops: int = 0
    norm_params: int = 0  # batch-norm scale and shift, included in ``params``

    @property
    def params_without_norm(self) -> int:
        """Conv and linear weights and biases only: the count of the MobileNet papers'
        reference implementations, which leave batch norm out."""
        return self.params - self.norm_params

    @property
    def fvcore_default(self) -> int:
        """What fvcore's ``FlopCountAnalysis(...).total()`` reports with its default handles."""
        return self.madds + self.norm_flops + self.pool_flops


def count_ops(op_list: list[Op]) -> Cost:
    madds = params = norm = pool = norm_params = 0
    for op in op_list:
        madds += op.madds
        params += op.params
        if op.kind == "bn":
            norm += 2 * op.cout * op.h * op.w
            norm_params += op.params
        elif op.kind == "gap":
            pool += op.cin * op.h * op.w
    return Cost(madds, params, norm, pool, norm_params)


def running_layer_ops(layer: Layer, shape: tuple[int, ...], lowrank: float | None) -> tuple[list[Op], tuple[int, ...]]:
    """:func:`nas.graph.layer_ops` of one layer as it runs: factorized when ``lowrank`` is set."""
    op_list, out_shape = layer_ops(layer, "", shape)
    return (op_list if lowrank is None else factorize_ops(op_list, lowrank)), out_shape


@lru_cache(maxsize=1 << 16)
def _layer_cost(layer: Layer, shape: tuple[int, ...], lowrank: float | None) -> tuple[Cost, tuple[int, ...]]:
    op_list, out_shape = running_layer_ops(layer, shape, lowrank)
    return count_ops(op_list), out_shape


def count(arch: ArchSpec) -> Cost:
    """Exact MAdds and parameters of ``arch`` (see the module docstring for the convention).

    The sum over layers of :func:`count_ops` on each layer's ops, memoized per
    (layer, input shape, low rank): candidates of one space share most of their blocks,
    so a search costs each distinct block once. ``count(arch) == count_ops(ops(arch))``.
    A candidate's costs are those of the network as it runs: ``count(nas.compressed(arch, compression))``.
    """
    if arch.detector is not None:  # heads read feature maps across layers: cost the whole op list
        return count_ops(ops(arch))
    costs = []
    shape = arch.input_shape
    for layer in arch.layers:
        cost, shape = _layer_cost(layer, shape, arch.lowrank)
        costs.append(cost)
    return Cost(*map(sum, zip(*costs)))


class FvcoreCount(NamedTuple):
    madds: int  # conv + linear counts: the convention of :func:`count`
    total: int  # fvcore's default total: equals ``Cost.fvcore_default``


def fvcore_count(model: Any, input_shape: tuple[int, ...]) -> FvcoreCount:
    """fvcore's counts on a built model (batch of one), the reference :func:`count` is held to.

    Imported lazily: fvcore (and its deprecated ``torch.jit.script`` call) is needed only
    to cross-check, never to score.
    """
    import logging
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fvcore's import runs torch.jit.script
        from fvcore.nn import FlopCountAnalysis
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, torch.zeros(1, *input_shape))
    by_op = analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_operator()
    return FvcoreCount(by_op["conv"] + by_op["linear"] + by_op["addmm"], analysis.total())


# --------------------------------------------------------------------------- storage


class LayerSize(NamedTuple):
    """Storage of one weight-carrying op under a :class:`CompressionSpec`, in bits.

    P = pruning (sparse storage with relative indices), Q = quantization
    (codebook indices, binary/ternary codes or 32-bit floats), H = Huffman coding
    of the stored values and indices (an entropy estimate).
    """

    name: str
    kind: str
    weights: int  # dense weight count of the original op
    stored: int  # weight count after low-rank factorization
    kept: int  # weights surviving pruning
    entries: int  # kept + filler zeros (relative index overflow)
    value_bits: int  # bits per stored value (codebook index, 1/2-bit code or 32-bit float)
    index_bits: int  # bits per relative index; 0 when stored dense
    value_entropy: float  # Huffman estimate of bits per value
    index_entropy: float  # Huffman estimate of bits per index
    table_bits: int  # codebooks (32 bits per centroid) or per-layer scales
    other_bits: int  # biases and batch-norm parameters at 32 bits

    @property
    def bits_pq(self) -> int:
        return self.entries * (self.value_bits + self.index_bits) + self.table_bits + self.other_bits

    @property
    def bits_pqh(self) -> float:
        return self.entries * (self.value_entropy + self.index_entropy) + self.table_bits + self.other_bits

    @property
    def dense_bits(self) -> int:
        return self.weights * FLOAT_BITS + self.other_bits


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _entropy(probs: list[float]) -> float:
    total = sum(probs)
    return -sum(p / total * math.log2(p / total) for p in probs if p > 0)


@lru_cache(maxsize=4096)
def _value_entropy(sparsity: float, quantization: str, bits: int | None, log2_n: int) -> float:
    """Entropy (bits) of the stored values, modelling trained weights as N(0, 1).

    Pruning removes ``|z| < t`` with ``P(|z| < t) = sparsity``. Codebooks: see
    :func:`_codebook_entropy` (``log2_n`` is the bit length of the weight count).
    Ternary codes use TWN's threshold ``0.7 * E|z|``.
    """
    t = _inv_phi((1.0 + sparsity) / 2.0) if sparsity > 0 else 0.0
    if quantization == "binary":
        return 1.0
    survivors = 2.0 * (1.0 - _phi(t))

    def mass(lo: float, hi: float) -> float:  # Gaussian mass of [lo, hi] outside (-t, t)
        a, b = max(lo, t), max(hi, t)
        pos = _phi(b) - _phi(a) if b > a else 0.0
        a, b = min(lo, -t), min(hi, -t)
        neg = _phi(b) - _phi(a) if b > a else 0.0
        return pos + neg

    if quantization == "ternary":
        # E|z| over survivors: 2 * phi_density(t) / survivors
        mean_abs = 2.0 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi) / survivors
        delta = 0.7 * mean_abs
        return _entropy([mass(-math.inf, -delta), mass(-delta, delta), mass(delta, math.inf)])
    assert bits is not None
    return min(float(bits), _stored_codebook_entropy(t, bits, 2**log2_n))


_ENTROPIES: dict[str, float] | None = None


def _stored_codebook_entropy(t: float, bits: int, n: int) -> float:
    """:func:`_codebook_entropy`, kept on disk (``nas.files.cache_dir()``): each value costs tens of
    milliseconds and a search needs hundreds, in every worker process. Unreadable caches are ignored."""
    global _ENTROPIES
    import json

    from nas.files import cache_dir, write_atomic

    path = cache_dir() / f"codebook-entropy-{LLOYD_STEPS}.json"
    if _ENTROPIES is None:
        try:
            _ENTROPIES = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            _ENTROPIES = {}
    key = f"{t!r}|{bits}|{n}"
    if key not in _ENTROPIES:
        _ENTROPIES[key] = _codebook_entropy(t, bits, n)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # merge what other processes stored meanwhile
                _ENTROPIES = {**json.loads(path.read_text()), **_ENTROPIES}
            except (OSError, ValueError, TypeError):
                pass
            write_atomic(path, json.dumps(_ENTROPIES, sort_keys=True))
        except OSError:
            pass  # a read-only home: compute again next time
    return _ENTROPIES[key]


def _codebook_entropy(t: float, bits: int, n: int) -> float:
    """Entropy of k-means codebook indices over N(0, 1) weights with ``|z| >= t``.

    Linear initialization over ``[-zmax, zmax]``, ``zmax`` the expected extreme of
    ``n`` weights, then Lloyd's steps on the survivors' density (as the real
    k-means does: centroids stranded in the pruned band move out, spreading the
    indices). Vectorized; called once per (sparsity, bits, size bucket).
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    def density(z: np.ndarray) -> np.ndarray:
        finite = np.isfinite(z)
        return np.where(finite, np.exp(-np.where(finite, z, 0.0) ** 2 / 2) / math.sqrt(2 * math.pi), 0.0)

    def cells(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # mass and first moment per cell
        edges = np.concatenate([[-np.inf], (centers[1:] + centers[:-1]) / 2, [np.inf]])
        mass = np.zeros(len(centers))
        moment = np.zeros(len(centers))
        for a, b in ((np.maximum(edges[:-1], t), np.maximum(edges[1:], t)),
                     (np.minimum(edges[:-1], -t), np.minimum(edges[1:], -t))):
            inside = b > a
            mass += np.where(inside, ndtr(b) - ndtr(a), 0.0)
            moment += np.where(inside, density(a) - density(b), 0.0)
        return mass, moment

    zmax = float(ndtri(1.0 - 1.0 / (2.0 * n)))
    centers = np.linspace(-zmax, zmax, 2**bits)
    for _ in range(LLOYD_STEPS):
        mass, moment = cells(centers)
        centers = np.sort(np.where(mass > 1e-12, moment / np.maximum(mass, 1e-300), centers))
    mass, _ = cells(centers)
    p = mass[mass > 0] / mass.sum()
    return float(-(p * np.log2(p)).sum())


def _inv_phi(p: float) -> float:
    """Inverse of the standard normal CDF by bisection (exact to 1e-10, no scipy import)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _phi(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@lru_cache(maxsize=4096)
def _index_stats(sparsity: float, index_bits: int) -> tuple[float, float]:
    """(filler zeros per kept weight, entropy of the relative indices) for random positions.

    With density ``p`` the distance ``D`` between kept weights is geometric; a
    span of ``M = 2**index_bits`` positions overflows into a filler zero, so
    ``E[fillers per kept] = q**M / (1 - q**M)`` with ``q = 1 - p``, and the stored
    index ``d`` has frequency ``p q**(d-1)`` for ``d < M`` and ``q**(M-1)`` for ``d = M``.
    """
    q, span = sparsity, 2**index_bits
    fillers = q**span / (1.0 - q**span)
    probs = [(1.0 - q) * q ** (d - 1) for d in range(1, span)] + [q ** (span - 1)]
    return fillers, min(float(index_bits), _entropy(probs))


class _WeightOp(NamedTuple):
    """A conv/linear op with the 32-bit parameters stored beside it (its bias, the BN after it)."""

    name: str
    kind: str
    cin: int
    cout: int
    kernel: int
    groups: int
    weight_count: int
    other_bits: int


def _weight_ops(op_list: list[Op]) -> list[_WeightOp]:
    out: list[_WeightOp] = []
    for op in op_list:
        if op.kind == "bn" and out:
            out[-1] = out[-1]._replace(other_bits=out[-1].other_bits + op.params * FLOAT_BITS)
        elif op.kind in INDEX_BITS:
            out.append(_WeightOp(op.name, op.kind, op.cin, op.cout, op.kernel, op.groups, op.weight_count,
                                 (op.cout if op.bias else 0) * FLOAT_BITS))
    return out


class _Plan(NamedTuple):
    """What a :class:`CompressionSpec` means for one kind of weight op; computed once per spec."""

    sparsity: float
    value_bits: int
    table_bits: int
    index_bits: int  # 0: stored dense
    fillers: float  # expected filler zeros per kept weight
    index_entropy: float
    value_entropy: np.ndarray  # by bit length of the stored weight count (NaN until needed)


@lru_cache(maxsize=4096)
def _plan(compression: CompressionSpec, kind: str) -> _Plan:
    sparsity = round(compression.sparsity_conv if kind == "conv" else compression.sparsity_linear, 4)
    if compression.quantization == "binary":
        value_bits, table = 1, FLOAT_BITS
    elif compression.quantization == "ternary":
        value_bits, table = 2, FLOAT_BITS
    elif compression.codebook_bits is not None:
        value_bits, table = compression.codebook_bits, FLOAT_BITS * 2**compression.codebook_bits
    else:
        value_bits, table = FLOAT_BITS, 0
    entropy = np.full(65, np.nan)
    if sparsity > 0:
        fillers, index_h = _index_stats(sparsity, INDEX_BITS[kind])
        return _Plan(sparsity, value_bits, table, INDEX_BITS[kind], fillers, index_h, entropy)
    return _Plan(sparsity, value_bits, table, 0, 0.0, 0.0, entropy)


#: Columns of a weight-op table: one row per conv/linear op, float64 (exact for these integers).
_CONV, _CIN, _COUT, _KERNEL, _GROUPS, _WEIGHTS, _OTHER = range(7)


def _table(weight_ops: list[_WeightOp] | tuple[_WeightOp, ...]) -> np.ndarray:
    return np.array([(w.kind == "conv", w.cin, w.cout, w.kernel, w.groups, w.weight_count, w.other_bits)
                     for w in weight_ops], dtype=np.float64).reshape(-1, 7)


class _Columns(NamedTuple):
    """Per-op storage figures for a weight-op table (the fields of :class:`LayerSize`)."""

    stored: np.ndarray
    kept: np.ndarray
    entries: np.ndarray
    value_bits: float  # the same for every op of a spec
    index_bits: np.ndarray
    value_entropy: np.ndarray | float
    index_entropy: np.ndarray
    table_bits: float  # the same for every op of a spec
    other_bits: np.ndarray

    @property
    def bits_pq(self) -> np.ndarray:
        return self.entries * (self.value_bits + self.index_bits) + self.table_bits + self.other_bits

    @property
    def bits_pqh(self) -> np.ndarray:
        return self.entries * (self.value_entropy + self.index_entropy) + self.table_bits + self.other_bits


def _columns(table: np.ndarray, compression: CompressionSpec) -> _Columns:
    """The storage accounting of :func:`size_report`, vectorized over a weight-op table.

    Python's ``round`` and ``np.round`` both round half to even; the low-rank step is
    :func:`lowrank_rank` on whole columns.
    """
    conv_plan, linear_plan = _plan(compression, "conv"), _plan(compression, "linear")
    conv = table[:, _CONV] == 1

    def per_kind(field: str) -> np.ndarray:
        a, b = getattr(conv_plan, field), getattr(linear_plan, field)
        return np.where(conv, a, b) if a != b else np.full(len(table), float(a))

    stored = table[:, _WEIGHTS]  # factorized layers are already their two factors' rows
    kept = stored - np.round(stored * per_kind("sparsity"))
    index_bits = per_kind("index_bits")
    entries = np.where(index_bits > 0, kept + np.round(kept * per_kind("fillers")), kept)
    value_bits = float(conv_plan.value_bits)
    value_h: np.ndarray | float = value_bits
    if value_bits != FLOAT_BITS:
        bit_length = np.maximum(1, np.frexp(stored)[1])
        lookups = []
        for plan in (conv_plan, linear_plan):
            found = plan.value_entropy[bit_length]
            missing = np.isnan(found)
            if missing.any():
                for b in np.unique(bit_length[missing]):
                    plan.value_entropy[b] = _value_entropy(plan.sparsity, compression.quantization,
                                                           compression.codebook_bits, int(b))
                found = plan.value_entropy[bit_length]
            lookups.append(found)
        value_h = np.where(conv, *lookups)
    return _Columns(stored, kept, entries, value_bits, index_bits, value_h, per_kind("index_entropy"),
                    float(conv_plan.table_bits), table[:, _OTHER])


def size_report(arch: ArchSpec, compression: CompressionSpec) -> list[LayerSize]:
    """Per-layer storage of ``arch`` under ``compression`` (Deep Compression's accounting).

    ``arch`` is the architecture before compression; the layers reported are those
    of the network as it runs, :func:`nas.compressed` ``(arch, compression)``
    (structured-pruned widths, each factorized layer as its two factors).

    Each conv/linear weight tensor is pruned to ``1 - sparsity`` of its weights
    and stored in relative-index sparse format (8-bit indices for conv, 5-bit for
    linear, a filler zero whenever a gap overflows) when pruned, dense otherwise.
    Values take ``codebook_bits`` (plus a codebook of ``2**bits`` 32-bit
    centroids per layer), 1 or 2 bits for binary/ternary (plus a 32-bit scale),
    or 32 bits. Biases and batch-norm parameters are stored as 32-bit floats.
    Huffman coding is estimated by the entropy of values and indices (see
    ``_value_entropy`` and ``_index_stats``): an estimate, not a measured file.
    """
    weight_ops = _weight_ops(ops(compressed(arch, compression)))
    c = _columns(_table(weight_ops), compression)
    value_h = np.broadcast_to(c.value_entropy, c.stored.shape)
    return [LayerSize(w.name, w.kind, w.weight_count, int(c.stored[i]), int(c.kept[i]), int(c.entries[i]),
                      int(c.value_bits), int(c.index_bits[i]), float(value_h[i]), float(c.index_entropy[i]),
                      int(c.table_bits), w.other_bits)
            for i, w in enumerate(weight_ops)]


@lru_cache(maxsize=1 << 16)
def _layer_table(layer: Layer, shape: tuple[int, ...], lowrank: float | None) -> tuple[np.ndarray, tuple[int, ...]]:
    op_list, out_shape = running_layer_ops(layer, shape, lowrank)
    return _table(_weight_ops(op_list)), out_shape


def size_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Estimated storage of ``arch`` compressed by ``compression``, in bits.

    The sum of :func:`size_report` over layers: P+Q+H (Huffman estimate) when
    ``compression.huffman`` is set, P+Q otherwise. Each layer's weight-op table is
    memoized per (layer, input shape) like :func:`count`, and the accounting runs
    vectorized over the whole network. Dense 32-bit storage is
    ``size_bits(arch, CompressionSpec(huffman=False)) == 32 * count(arch).params``.
    """
    arch = compressed(arch, compression)
    if arch.detector is not None:  # heads read feature maps across layers: use the whole op list
        table = _table(_weight_ops(ops(arch)))
    else:
        parts = []
        shape = arch.input_shape
        for layer in arch.layers:
            part, shape = _layer_table(layer, shape, arch.lowrank)
            parts.append(part)
        table = np.concatenate(parts)
    columns = _columns(table, compression)
    if compression.huffman:
        return math.ceil(math.fsum(columns.bits_pqh.tolist()))
    return int(columns.bits_pq.sum())


class StageCost(NamedTuple):
    """One row of a per-stage table: consecutive layers that form a stage."""

    name: str
    layers: str  # the module names it covers, e.g. "layers.2-4"
    out_shape: tuple[int, ...]
    params: int
    madds: int


def _stage_key(name: str, arch: ArchSpec) -> tuple[str, str]:
    """(group key, label) of the op ``name``: IR blocks group by output width, heads by map."""
    from nas.spec import Conv, InvertedResidual, Linear

    parts = name.split(".")
    if parts[0] == "extras":
        return "extras", "extra feature maps"
    if parts[0] == "heads":
        return f"heads.{parts[1]}", f"box + class heads, map {parts[1]}"
    i = int(parts[1])
    layer = arch.layers[i]
    if isinstance(layer, InvertedResidual):
        first = i
        while first > 0 and isinstance(arch.layers[first - 1], InvertedResidual) and \
                arch.layers[first - 1].out == layer.out:
            first -= 1
        return f"ir.{first}", f"blocks -> {layer.out} ch"
    if isinstance(layer, Conv):
        stem = i == 0 and any(isinstance(x, InvertedResidual) for x in arch.layers)
        return f"conv.{i}", "stem conv" if stem else f"conv {layer.kernel}x{layer.kernel} -> {layer.out} ch"
    if isinstance(layer, Linear):
        return f"linear.{i}", "classifier" if i == len(arch.layers) - 1 else f"linear -> {layer.out}"
    return "", ""  # pooling / flatten: joins the previous stage


def stage_costs(arch: ArchSpec) -> list[StageCost]:
    """Params and MAdds per stage (stem, each run of blocks of one width, head, classifier, detector parts)."""
    rows: list[list] = []  # [key, label, first name, last name, out_shape, params, madds]
    for op in ops(arch):
        key, label = _stage_key(op.name, arch)
        module = ".".join(op.name.split(".")[:2])
        if not rows or (key and key != rows[-1][0]):
            rows.append([key, label, module, module, op.out_shape, 0, 0])
        row = rows[-1]
        row[3] = module
        if op.kind in ("conv", "linear", "maxpool", "gap", "flatten", "add"):  # not the elementwise ones
            row[4] = op.out_shape
        row[5] += op.params
        row[6] += op.madds
    return [StageCost(label, first if first == last else f"{first}-{last.split('.')[1]}", shape, params, madds)
            for _, label, first, last, shape, params, madds in rows]
