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

import dataclasses
import json
import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from nas.compressed import compressed
from nas.graph import Op, factorize_ops, layer_ops, lowrank_rank, ops
from nas._values import value_huffman_bits
from nas.spec import ArchSpec, CompressionSpec, Layer, layer_to_dict
from nas.storage import (BITMAP_BITS, CODED_FIXED_BYTES, ENTRIES_BYTES, FILE_FIXED_BYTES, INDEX_BITS, expected_used,
                         compress_header, header_json, huffman_length, huffman_stream_bits, index_frequencies)

__all__ = ["Cost", "FvcoreCount", "LayerSize", "StageCost", "count", "count_ops", "fvcore_count", "lowrank_rank",
           "size_bits", "size_report", "stage_costs"]

FLOAT_BITS = 32


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


class _LayerFacts(NamedTuple):
    """What the cheap costs need of one layer as it runs, worked out from its ops once."""

    cost: Cost
    rows: tuple[tuple[float, ...], ...]  # its weight ops, as rows of the storage table
    factored: int  # weight ops that low rank added
    out_shape: tuple[int, ...]


@lru_cache(maxsize=1 << 16)
def _layer_facts(layer: Layer, shape: tuple[int, ...], lowrank: float | None) -> _LayerFacts:
    dense, out_shape = layer_ops(layer, "", shape)
    op_list = dense if lowrank is None else factorize_ops(dense, lowrank)
    rows = _rows(_weight_ops(op_list))
    return _LayerFacts(count_ops(op_list), rows, len(rows) - len(_weight_ops(dense)), out_shape)


@lru_cache(maxsize=256)  # a candidate's MAdds and params objectives both ask for it
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
        facts = _layer_facts(layer, shape, arch.lowrank)
        costs.append(facts.cost)
        shape = facts.out_shape
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
    """Storage of one weight-carrying op under a :class:`CompressionSpec`, in bits: its records in the file.

    P = pruning (sparse storage with relative indices), Q = quantization
    (codebook indices, binary/ternary codes or 32-bit floats), H = Huffman coding
    of the stored values and indices (the expected Huffman code length of the
    modelled distributions, with the code tables). The index width (:data:`INDEX_BITS`
    or a 1-bit keep-bitmap) is the one the container would choose under the spec's
    ``huffman`` setting (:mod:`nas.storage`); ``bits_pq`` prices that layout at fixed width.
    """

    name: str
    kind: str
    weights: int  # dense weight count of the original op
    stored: int  # weight count after low-rank factorization
    kept: int  # weights surviving pruning
    entries: int  # index symbols: kept + fillers (relative index overflow); 0 when stored dense
    value_bits: int  # bits per stored value (codebook index, 1/2-bit code or 32-bit float)
    index_bits: int  # bits per relative index (8/5, or 1 for a keep-bitmap); 0 when stored dense
    value_entropy: float  # Huffman estimate of bits per value
    index_entropy: float  # Huffman estimate of bits per index
    table_bits: int  # codebooks (32 bits per centroid) or per-layer scales
    other_bits: int  # biases and batch-norm tensors (scale, shift, running mean and variance) at 32 bits
    record_bits: float = 0.0  # the coded record's fixed fields and the streams' byte padding
    index_stream_bits: float = 0.0  # the index stream as the file codes it (Huffman with its table, or fixed)
    value_stream_bits: float = 0.0

    @property
    def bits_pq(self) -> float:
        return (self.kept * self.value_bits + self.entries * self.index_bits + self.table_bits + self.other_bits
                + self.record_bits)

    @property
    def bits_pqh(self) -> float:
        return self.index_stream_bits + self.value_stream_bits + self.table_bits + self.other_bits + self.record_bits

    @property
    def dense_bits(self) -> int:
        return self.weights * FLOAT_BITS + self.other_bits


@lru_cache(maxsize=4096)
def _index_stats(sparsity: float, index_bits: int) -> tuple[float, float, np.ndarray]:
    """(filler symbols per kept weight, Huffman bits per index symbol, symbol probabilities) for random positions.

    The filler rule and the symbol distribution are :func:`nas.storage.index_frequencies`,
    the rule :mod:`nas.compress.container` writes.
    """
    freqs = index_frequencies(sparsity, index_bits)
    return float(freqs[-1]), huffman_length(freqs), freqs / freqs.sum()


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
        if op.kind == "bn" and out:  # scale and shift, and the running mean and variance the file keeps too
            out[-1] = out[-1]._replace(other_bits=out[-1].other_bits + 2 * op.params * FLOAT_BITS)
        elif op.kind in INDEX_BITS:
            out.append(_WeightOp(op.name, op.kind, op.cin, op.cout, op.kernel, op.groups, op.weight_count,
                                 (op.cout if op.bias else 0) * FLOAT_BITS))
    return out


class _Plan(NamedTuple):
    """What a :class:`CompressionSpec` means for one kind of weight op; computed once per spec."""

    sparsity: float
    value_bits: int
    table_bits: int
    widths: tuple[int, ...]  # index widths a pruned op may take (the kind's, then the keep-bitmap); () unpruned
    index_stats: tuple[tuple[float, float, np.ndarray], ...]  # _index_stats of each width
    value_entropy: np.ndarray  # by bit length of the stored weight count (NaN until needed)
    used: tuple[dict[float, float], ...]  # expected_used of each width's index symbols, by entry count


def _plan(compression: CompressionSpec, kind: str) -> _Plan:
    sparsity = compression.sparsity_conv if kind == "conv" else compression.sparsity_linear
    return _kind_plan(round(sparsity, 4), compression.quantization, compression.codebook_bits, kind)


@lru_cache(maxsize=4096)  # keyed on what storage reads only, so that its memos serve every spec sharing it
def _kind_plan(sparsity: float, quantization: str, codebook_bits: int | None, kind: str) -> _Plan:
    if quantization == "binary":
        value_bits, table = 1, FLOAT_BITS
    elif quantization == "ternary":
        value_bits, table = 2, FLOAT_BITS
    elif quantization == "int8":
        value_bits, table = 8, 0  # + one 32-bit scale per output channel (_columns)
    elif codebook_bits is not None:
        value_bits, table = codebook_bits, FLOAT_BITS * 2**codebook_bits
    else:
        value_bits, table = FLOAT_BITS, 0
    widths = (INDEX_BITS[kind], BITMAP_BITS) if sparsity > 0 else ()
    stats = tuple(_index_stats(sparsity, w) for w in widths)
    return _Plan(sparsity, value_bits, table, widths, stats, np.full(65, np.nan), tuple({} for _ in widths))


def _index_columns(plan: _Plan, kept: np.ndarray, huffman: bool) -> tuple[np.ndarray, ...]:
    """(width, entries, Huffman bits per symbol, stream bits) of the index layout the container picks:
    of the plan's widths, the one whose stream (coded as the file codes it) is smallest; the first on ties."""
    zero = np.zeros_like(kept)
    best = (zero, zero, zero, np.full_like(kept, np.inf))
    for width, (fillers, length, probs), memo in zip(plan.widths, plan.index_stats, plan.used):
        entries = kept + np.round(kept * fillers)
        bits = huffman_stream_bits(entries, width, length, _used(memo, probs, entries)) if huffman else \
            entries * width
        better = bits < best[3]
        best = tuple(np.where(better, new, old) for new, old in zip((width, entries, length, bits), best))
    return best


def _used(memo: dict[float, float], probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`nas.storage.expected_used` through a memo: the same layers recur across candidates, and
    the exact figure (a sum over up to 257 symbols per count) is the costliest step of a size estimate."""
    keys = counts.tolist()
    out = np.array([memo.get(k, np.nan) for k in keys])
    missing = np.isnan(out)
    if missing.any():
        out[missing] = expected_used(probs, counts[missing])
        memo.update(zip(counts[missing].tolist(), out[missing].tolist()))
    return out


#: Columns of a weight-op table: one row per conv/linear op, float64 (exact for these integers).
_CONV, _CIN, _COUT, _KERNEL, _GROUPS, _WEIGHTS, _OTHER = range(7)


def _rows(weight_ops: list[_WeightOp]) -> tuple[tuple[float, ...], ...]:
    return tuple((float(w.kind == "conv"), float(w.cin), float(w.cout), float(w.kernel), float(w.groups),
                  float(w.weight_count), float(w.other_bits)) for w in weight_ops)


def _table(weight_ops: list[_WeightOp] | tuple[_WeightOp, ...]) -> np.ndarray:
    return np.array(_rows(list(weight_ops)), dtype=np.float64).reshape(-1, 7)


class _Columns(NamedTuple):
    """Per-op storage figures for a weight-op table (the fields of :class:`LayerSize`)."""

    stored: np.ndarray
    kept: np.ndarray
    entries: np.ndarray
    value_bits: float  # the same for every op of a spec
    index_bits: np.ndarray
    value_entropy: np.ndarray
    index_entropy: np.ndarray
    table_bits: np.ndarray | float  # the same for every op of a spec, but int8's scale per output channel
    other_bits: np.ndarray
    record_bits: np.ndarray
    index_stream: np.ndarray
    value_stream: np.ndarray

    @property
    def bits_pq(self) -> np.ndarray:
        return (self.kept * self.value_bits + self.entries * self.index_bits + self.table_bits + self.other_bits
                + self.record_bits)

    @property
    def bits_pqh(self) -> np.ndarray:
        return self.index_stream + self.value_stream + self.table_bits + self.other_bits + self.record_bits


def _value_huffman(table: np.ndarray, stored: np.ndarray, conv: np.ndarray, compression: CompressionSpec,
                   plans: tuple[_Plan, _Plan]) -> np.ndarray:
    """Huffman bits per stored value of each op (by the bit length of its weight count, memoized per plan)."""
    bit_length = np.maximum(1, np.frexp(stored)[1])
    lookups = []
    for plan in plans:
        found = plan.value_entropy[bit_length]
        missing = np.isnan(found)
        if missing.any():
            for b in np.unique(bit_length[missing]):
                plan.value_entropy[b] = value_huffman_bits(plan.sparsity, compression.quantization,
                                                       compression.codebook_bits, int(b))
            found = plan.value_entropy[bit_length]
        lookups.append(found)
    return np.where(conv, *lookups)


def _columns(table: np.ndarray, compression: CompressionSpec) -> _Columns:
    """The storage accounting of :func:`size_report`, vectorized over a weight-op table.

    Python's ``round`` and ``np.round`` both round half to even (torch's pruning amount
    rounds the same way). Each stream is Huffman-coded only where that is smaller
    (:func:`nas.storage.huffman_stream_bits`), and pays half a byte of padding on average.
    """
    conv_plan, linear_plan = _plan(compression, "conv"), _plan(compression, "linear")
    conv = table[:, _CONV] == 1

    def per_kind(field: str) -> np.ndarray:
        a, b = getattr(conv_plan, field), getattr(linear_plan, field)
        return np.where(conv, a, b) if a != b else np.full(len(table), float(a))

    stored = table[:, _WEIGHTS]  # factorized layers are already their two factors' rows
    kept = stored - np.round(stored * per_kind("sparsity"))
    sparse = kept < stored
    index = index_bits, entries, index_h, index_stream = tuple(np.zeros(len(table)) for _ in range(4))
    for plan, rows in ((conv_plan, sparse & conv), (linear_plan, sparse & ~conv)):
        if rows.any():
            for column, part in zip(index, _index_columns(plan, kept[rows], compression.huffman)):
                column[rows] = part
    value_bits = float(conv_plan.value_bits)
    value_h = np.full(len(table), value_bits)
    value_stream = kept * value_bits
    if value_bits != FLOAT_BITS:
        value_h = _value_huffman(table, stored, conv, compression, (conv_plan, linear_plan))
        if compression.huffman:
            used = expected_used(np.ones(2 ** int(value_bits)), kept)
            value_stream = huffman_stream_bits(kept, int(value_bits), value_h, used)
    streams = sparse + (value_bits != FLOAT_BITS)
    record = 8.0 * (CODED_FIXED_BYTES + ENTRIES_BYTES * sparse) + 4.0 * streams
    table_bits = table[:, _COUT] * FLOAT_BITS if compression.quantization == "int8" else float(conv_plan.table_bits)
    return _Columns(stored, kept, entries, value_bits, index_bits, value_h, index_h, table_bits,
                    table[:, _OTHER], record, index_stream, value_stream)


def size_report(arch: ArchSpec, compression: CompressionSpec) -> list[LayerSize]:
    """Per-layer storage of ``arch`` under ``compression`` (Deep Compression's accounting).

    ``arch`` is the architecture before compression; the layers reported are those
    of the network as it runs, :func:`nas.compressed` ``(arch, compression)``
    (structured-pruned widths, each factorized layer as its two factors).

    Each conv/linear weight tensor is pruned to ``1 - sparsity`` of its weights
    and stored with relative indices when pruned (8-bit for conv, 5-bit for linear,
    a filler symbol whenever a gap overflows, or a 1-bit keep-bitmap where that is
    smaller: :mod:`nas.storage`), dense otherwise. Values take ``codebook_bits``
    (plus a codebook of ``2**bits`` 32-bit centroids per layer), 1 or 2 bits for
    binary/ternary (plus a 32-bit scale), 8 bits for int8 (plus a 32-bit scale per output
    channel), or 32 bits. Biases and batch-norm tensors
    are stored as 32-bit floats. Huffman coding is estimated by the Huffman code of
    the modelled value and index distributions (``_value_entropy``, ``_index_stats``)
    with its tables: an estimate for random masks and Gaussian weights, not a measured file.
    """
    weight_ops = _weight_ops(ops(compressed(arch, compression)))
    c = _columns(_table(weight_ops), compression)
    value_h = np.broadcast_to(c.value_entropy, c.stored.shape)
    table_bits = np.broadcast_to(c.table_bits, c.stored.shape)
    return [LayerSize(w.name, w.kind, w.weight_count, int(c.stored[i]), int(c.kept[i]), int(c.entries[i]),
                      int(c.value_bits), int(c.index_bits[i]), float(value_h[i]), float(c.index_entropy[i]),
                      int(table_bits[i]), w.other_bits, float(c.record_bits[i]), float(c.index_stream[i]),
                      float(c.value_stream[i]))
            for i, w in enumerate(weight_ops)]


#: The versions a container's header names (their length, not their value, matters to its size).
_VERSIONS = {"nas": "0.1.0", "torch": "2.13.0+cpu"}
#: What one factorized layer adds to the compressed header (its module name, kind and rank), measured.
FACTORED_HEADER_BYTES = 14


@lru_cache(maxsize=4096)
def _header_bytes(arch: ArchSpec, huffman: bool) -> int:
    """``len(header_blob(arch.to_dict(), {}, huffman, _VERSIONS))`` plus the fixed fields, with each layer's
    JSON memoized: serializing the layers was a third of a fresh candidate's size estimate."""
    outline = arch.to_dict()
    outline["layers"] = []
    text = header_json(outline, {}, huffman, _VERSIONS)
    layers = ",".join(map(_layer_json, arch.layers))
    return FILE_FIXED_BYTES + len(compress_header(text.replace('"layers":[]', f'"layers":[{layers}]', 1)))


@lru_cache(maxsize=1 << 16)
def _layer_json(layer: Layer) -> str:
    return json.dumps(layer_to_dict(layer), sort_keys=True, separators=(",", ":"))


def file_overhead_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Bits of the container that belong to no layer: magic, version, the compressed JSON header, record
    count and checksum. ``size_bits`` is this plus the layers of :func:`size_report`."""
    return _overhead_bits(arch, compression, compressed(arch, compression))


def _overhead_bits(arch: ArchSpec, compression: CompressionSpec, running: ArchSpec, factored: int | None = None) -> int:
    if factored is None:  # each factorized layer adds a weight op (and a header entry)
        factored = _weight_rows(running)[1]
    return 8 * (_header_bytes(arch, compression.huffman) + FACTORED_HEADER_BYTES * factored)


def _weight_rows(arch: ArchSpec) -> tuple[tuple[tuple[float, ...], ...], int]:
    """The weight-op rows of ``arch`` as it runs, and how many of them its low rank added."""
    if arch.detector is not None:  # heads read feature maps across layers: use the whole op list
        dense = len(_weight_ops(ops(dataclasses.replace(arch, lowrank=None))))
        rows = _rows(_weight_ops(ops(arch)))
        return rows, len(rows) - dense
    rows: tuple[tuple[float, ...], ...] = ()
    factored = 0
    shape = arch.input_shape
    for layer in arch.layers:
        facts = _layer_facts(layer, shape, arch.lowrank)
        rows += facts.rows
        factored += facts.factored
        shape = facts.out_shape
    return rows, factored


#: Bits of one weight-op row under one storage setting, by (setting, row). The same layers recur across
#: candidates, so the size of a candidate never scored before is mostly a sum of rows already priced
#: (each row's figure does not depend on the others: :func:`_columns` is elementwise).
_ROW_BITS: dict[tuple[Any, ...], float] = {}
_ROW_BITS_MAX = 1 << 20


def _row_bits(rows: tuple[tuple[float, ...], ...], compression: CompressionSpec) -> list[float]:
    c = compression
    setting = (c.sparsity_conv, c.sparsity_linear, c.quantization, c.codebook_bits, c.huffman)
    bits = [_ROW_BITS.get((setting, row)) for row in rows]
    if None in bits:
        missing = list(dict.fromkeys(row for row, b in zip(rows, bits) if b is None))
        columns = _columns(np.array(missing, dtype=np.float64), compression)
        priced = (columns.bits_pqh if c.huffman else columns.bits_pq).tolist()
        if len(_ROW_BITS) > _ROW_BITS_MAX:
            _ROW_BITS.clear()
        _ROW_BITS.update(((setting, row), b) for row, b in zip(missing, priced))
        bits = [_ROW_BITS[setting, row] for row in rows]
    return bits  # type: ignore[return-value]


def size_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Estimated size of the container of ``arch`` compressed by ``compression``, in bits.

    The sum of :func:`size_report` over layers (P+Q+H when ``compression.huffman`` is
    set, P+Q otherwise) plus :func:`file_overhead_bits`: what :func:`nas.compress.save`
    writes, within a few percent (``benchmarks/size_estimate.py``). Each layer's
    weight-op rows are memoized per (layer, input shape) like :func:`count`, and each
    row's bits per storage setting.
    """
    running = compressed(arch, compression)
    rows, factored = _weight_rows(running)
    return _overhead_bits(arch, compression, running, factored) + math.ceil(math.fsum(_row_bits(rows, compression)))


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
