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
from nas.spec import ArchSpec, CompressionSpec, Layer, layer_index, layer_to_dict
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
    """What a storage setting means for one kind of weight op; computed once per (sparsity, values, kind)."""

    sparsity: float
    value_bits: int
    table_bits: int
    widths: tuple[int, ...]  # index widths a pruned op may take (the kind's, then the keep-bitmap); () unpruned
    index_stats: tuple[tuple[float, float, np.ndarray], ...]  # _index_stats of each width
    value_entropy: np.ndarray  # by bit length of the stored weight count (NaN until needed)
    used: tuple[dict[float, float], ...]  # expected_used of each width's index symbols, by entry count


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


def _index_layout(plan: _Plan, kept: int, huffman: bool) -> tuple[int, int, float, float]:
    """(width, entries, Huffman bits per symbol, stream bits) of the index layout the container picks:
    of the plan's widths, the one whose stream (coded as the file codes it) is smallest; the first on ties."""
    best = (0, 0, 0.0, math.inf)
    for width, (fillers, length, probs), memo in zip(plan.widths, plan.index_stats, plan.used):
        entries = kept + round(kept * fillers)
        bits = huffman_stream_bits(entries, width, length, _used(memo, probs, entries)) if huffman else \
            entries * width
        if bits < best[3]:
            best = (width, entries, length, bits)
    return best


def _used(memo: dict[int, float], probs: np.ndarray, count: int) -> float:
    """:func:`nas.storage.expected_used` through a memo: the exact figure (a sum over up to 257 symbols)
    is the costliest step of pricing a row."""
    used = memo.get(count)
    if used is None:
        used = memo[count] = float(expected_used(probs, np.array([count]))[0])
    return used


#: Columns of a weight-op table: one row per conv/linear op, float64 (exact for these integers).
_CONV, _CIN, _COUT, _KERNEL, _GROUPS, _WEIGHTS, _OTHER = range(7)


def _rows(weight_ops: list[_WeightOp]) -> tuple[tuple[float, ...], ...]:
    return tuple((float(w.kind == "conv"), float(w.cin), float(w.cout), float(w.kernel), float(w.groups),
                  float(w.weight_count), float(w.other_bits)) for w in weight_ops)


class _RowSize(NamedTuple):
    """The storage of one weight-op row: the fields of :class:`LayerSize` a row determines."""

    stored: int
    kept: int
    entries: int
    value_bits: int
    index_bits: int
    value_entropy: float
    index_entropy: float
    table_bits: int
    other_bits: int
    record_bits: float
    index_stream: float
    value_stream: float

    @property
    def bits_pq(self) -> float:
        return (self.kept * self.value_bits + self.entries * self.index_bits + self.table_bits + self.other_bits
                + self.record_bits)

    @property
    def bits_pqh(self) -> float:
        return self.index_stream + self.value_stream + self.table_bits + self.other_bits + self.record_bits


#: What a size reads of a CompressionSpec (low rank and channels are already in the rows).
_Setting = tuple[float, float, str, "int | None", bool]


def _setting(c: CompressionSpec) -> _Setting:
    return (c.sparsity_conv, c.sparsity_linear, c.quantization, c.codebook_bits, c.huffman)


def _layer_settings(c: CompressionSpec) -> dict[int | None, _Setting]:
    """The storage setting of each layer a spec overrides (the key None: every other layer's)."""
    out: dict[int | None, _Setting] = {None: _setting(c)}
    for index, _ in c.layers:
        out[index] = (c.sparsity_of(index, "conv"), c.sparsity_of(index, "linear"), c.quantization,
                      c.bits_of(index), c.huffman)
    return out


@lru_cache(maxsize=1 << 18)
def _row_size(row: tuple[float, ...], setting: _Setting) -> _RowSize:
    """The storage accounting of :func:`size_report` for one row, memoized per (row, storage setting):
    the same layers recur across candidates, so a fresh candidate's size is mostly rows already priced."""
    sparsity_conv, sparsity_linear, quantization, codebook_bits, huffman = setting
    conv = row[_CONV] == 1
    return _priced_row(conv, round(sparsity_conv if conv else sparsity_linear, 4), quantization, codebook_bits,
                       huffman, int(row[_WEIGHTS]), int(row[_COUT]) if quantization == "int8" else 0, int(row[_OTHER]))


@lru_cache(maxsize=1 << 18)  # by what a row's storage depends on: rows of other shapes share it
def _priced_row(conv: bool, sparsity: float, quantization: str, codebook_bits: int | None, huffman: bool,
                stored: int, cout: int, other: int) -> _RowSize:
    """One row's storage: its weights (``stored``: factorized layers are already their two factors'
    rows), its output channels where int8 keeps a scale per channel, and its 32-bit ``other`` bits.

    Python's ``round`` rounds half to even, as torch's pruning amount does. Each stream is
    Huffman-coded only where that is smaller (:func:`nas.storage.huffman_stream_bits`), and
    pays half a byte of padding on average.
    """
    plan = _kind_plan(sparsity, quantization, codebook_bits, "conv" if conv else "linear")
    kept = stored - round(stored * plan.sparsity)
    sparse = kept < stored
    index_bits, entries, index_h, index_stream = _index_layout(plan, kept, huffman) if sparse else (0, 0, 0.0, 0.0)
    value_bits = plan.value_bits
    value_h, value_stream = float(value_bits), float(kept * value_bits)
    if value_bits != FLOAT_BITS:
        value_h = _value_entropy(plan, quantization, codebook_bits, max(1, math.frexp(stored)[1]))
        if huffman:
            used = _used(_VALUE_USED.setdefault(value_bits, {}), np.ones(2**value_bits), kept)
            value_stream = huffman_stream_bits(kept, value_bits, value_h, used)
    streams = int(sparse) + int(value_bits != FLOAT_BITS)  # each pays half a byte of padding on average
    record = 8.0 * (CODED_FIXED_BYTES + ENTRIES_BYTES * sparse) + 4.0 * streams
    table_bits = cout * FLOAT_BITS if quantization == "int8" else plan.table_bits
    return _RowSize(stored, kept, entries, value_bits, index_bits, value_h, index_h, table_bits, other,
                    record, index_stream, value_stream)


#: expected_used of uniform value codes, by code width and count
_VALUE_USED: dict[int, dict[int, float]] = {}


def _value_entropy(plan: _Plan, quantization: str, codebook_bits: int | None, bit_length: int) -> float:
    """Huffman bits per stored value (by the bit length of the weight count, memoized per plan)."""
    found = plan.value_entropy[bit_length]
    if np.isnan(found):
        found = plan.value_entropy[bit_length] = value_huffman_bits(plan.sparsity, quantization, codebook_bits,
                                                                    bit_length)
    return float(found)


def size_report(arch: ArchSpec, compression: CompressionSpec) -> list[LayerSize]:
    """Per-layer storage of ``arch`` under ``compression`` (Deep Compression's accounting).

    ``arch`` is the architecture before compression; the layers reported are those
    of the network as it runs, :func:`nas.compressed` ``(arch, compression)``
    (structured-pruned widths, each factorized layer as its two factors).

    Each conv/linear weight tensor is pruned to ``1 - sparsity`` of its weights (its layer's
    ``compression.layers`` override, else ``sparsity_conv``/``sparsity_linear``)
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
    compression.check_layers(arch)
    weight_ops = _weight_ops(ops(compressed(arch, compression)))
    settings = _layer_settings(compression)
    return [LayerSize(w.name, w.kind, w.weight_count,
                      *_row_size(row, settings.get(layer_index(w.name), settings[None])))
            for w, row in zip(weight_ops, _rows(weight_ops))]


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


_Rows = tuple[tuple[float, ...], ...]


def _weight_rows(arch: ArchSpec) -> tuple[_Rows, int]:
    """The weight-op rows of ``arch`` as it runs, and how many of them its low rank added."""
    groups, factored = _layer_rows(arch)
    rows: _Rows = ()
    for _, layer_rows in groups:
        rows += layer_rows
    return rows, factored


def _layer_rows(arch: ArchSpec) -> tuple[list[tuple[int | None, _Rows]], int]:
    """:func:`_weight_rows` by layer: (layer index, its rows) in order; None for detector heads and extras."""
    if arch.detector is not None:  # heads read feature maps across layers: use the whole op list
        dense = len(_weight_ops(ops(dataclasses.replace(arch, lowrank=None))))
        weight_ops = _weight_ops(ops(arch))
        rows = _rows(weight_ops)
        return [(layer_index(w.name), (row,)) for w, row in zip(weight_ops, rows)], len(rows) - dense
    groups: list[tuple[int | None, _Rows]] = []
    factored = 0
    shape = arch.input_shape
    for index, layer in enumerate(arch.layers):
        facts = _layer_facts(layer, shape, arch.lowrank)
        groups.append((index, facts.rows))
        factored += facts.factored
        shape = facts.out_shape
    return groups, factored


def size_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Estimated size of the container of ``arch`` compressed by ``compression``, in bits.

    The sum of :func:`size_report` over layers (P+Q+H when ``compression.huffman`` is
    set, P+Q otherwise) plus :func:`file_overhead_bits`: what :func:`nas.compress.save`
    writes, within a few percent (``benchmarks/size_estimate.py``). Each layer's
    weight-op rows are memoized per (layer, input shape) like :func:`count`, and each
    row's storage per storage setting (a layer's override is its own setting).
    """
    running = compressed(arch, compression)
    if compression.layers:  # per-layer settings (Deep Compression's tables): price each layer's rows by its own
        compression.check_layers(arch)
        groups, factored = _layer_rows(running)
        settings = _layer_settings(compression)
        sizes = [_row_size(row, settings.get(index, settings[None])) for index, rows in groups for row in rows]
    else:
        rows, factored = _weight_rows(running)
        setting = _setting(compression)
        sizes = [_row_size(row, setting) for row in rows]
    bits = [r.bits_pqh for r in sizes] if compression.huffman else [r.bits_pq for r in sizes]
    return _overhead_bits(arch, compression, running, factored) + math.ceil(math.fsum(bits))


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
