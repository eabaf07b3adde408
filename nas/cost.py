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
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from nas.compressed import compressed
from nas.graph import Op, layer_op_lists, lowrank_rank, ops
from nas._values import value_huffman_bits
from nas.spec import ArchSpec, CompressionSpec, Layer, layer_index, layer_to_dict
from nas.storage import (BITMAP_BITS, CODED_FIXED_BYTES, ENTRIES_BYTES, FILE_FIXED_BYTES, INDEX_BITS,
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


def count_ops(op_list: Sequence[Op]) -> Cost:
    return Cost(*map(sum, zip(*map(_op_cost, op_list)))) if op_list else Cost(0, 0)


@lru_cache(maxsize=1 << 15)  # layers share most of their ops, and Op's derived counts are chains of properties
def _op_cost(op: Op) -> Cost:
    if op.kind == "bn":
        return Cost(op.madds, op.params, 2 * op.cout * op.h * op.w, 0, op.params)
    if op.kind == "gap":
        return Cost(op.madds, op.params, 0, op.cin * op.h * op.w)
    return Cost(op.madds, op.params)


class _LayerFacts(NamedTuple):
    """What the cheap costs need of one layer as it runs, worked out from its ops once."""

    cost: Cost
    rows: tuple[_Row, ...]  # its weight ops, as rows of the storage table
    factored: int  # weight ops that low rank added
    out_shape: tuple[int, ...]


@lru_cache(maxsize=1 << 16)
def _layer_facts(layer: Layer, shape: tuple[int, ...], lowrank: float | None) -> _LayerFacts:
    dense, running, out_shape = layer_op_lists(layer, shape, lowrank)
    rows = _rows(_weight_ops(running))
    factored = len(rows) - sum(op.kind in INDEX_BITS for op in dense)
    return _LayerFacts(count_ops(running), rows, factored, out_shape)


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
    return Cost(*map(sum, zip(*(facts.cost for facts in _arch_facts(arch)))))


@lru_cache(maxsize=256)  # a candidate's counts and its size both read them
def _arch_facts(arch: ArchSpec) -> tuple[_LayerFacts, ...]:
    """:func:`_layer_facts` of each layer of ``arch`` (without a detector), in order."""
    out = []
    shape = arch.input_shape
    for layer in arch.layers:
        facts = _layer_facts(layer, shape, arch.lowrank)
        out.append(facts)
        shape = facts.out_shape
    return tuple(out)


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
    """Storage of one weight-carrying op under a :class:`CompressionSpec`, in bits: its records in the file
    (:func:`size_bits` sums the same records, each priced once per storage setting).

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


def _weight_ops(op_list: Sequence[Op]) -> list[_WeightOp]:
    weight_ops: list[Op] = []
    other: list[int] = []
    for op in op_list:
        if op.kind == "bn" and weight_ops:  # scale and shift, and the running mean and variance the file keeps too
            other[-1] += 2 * op.params * FLOAT_BITS
        elif op.kind in INDEX_BITS:
            weight_ops.append(op)
            other.append((op.cout if op.bias else 0) * FLOAT_BITS)
    return [_WeightOp(op.name, op.kind, op.cin, op.cout, op.kernel, op.groups, op.weight_count, bits)
            for op, bits in zip(weight_ops, other)]


class _Plan(NamedTuple):
    """What a storage setting means for one kind of weight op; computed once per (sparsity, values, kind)."""

    sparsity: float
    value_bits: int
    table_bits: int
    widths: tuple[int, ...]  # index widths a pruned op may take (the kind's, then the keep-bitmap); () unpruned
    index_stats: tuple[tuple[float, float, np.ndarray], ...]  # _index_stats of each width
    value_entropy: np.ndarray  # by bit length of the stored weight count (NaN until needed)
    used: tuple[_SymbolsUsed, ...]  # of each width's index symbols


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
    return _Plan(sparsity, value_bits, table, widths, stats, np.full(65, np.nan),
                 tuple(_SymbolsUsed(probs) for _, _, probs in stats))


def _index_layout(plan: _Plan, kept: int, huffman: bool) -> tuple[int, int, float, float]:
    """(width, entries, Huffman bits per symbol, stream bits) of the index layout the container picks:
    of the plan's widths, the one whose stream (coded as the file codes it) is smallest; the first on ties."""
    best = (0, 0, 0.0, math.inf)
    for width, (fillers, length, _), used in zip(plan.widths, plan.index_stats, plan.used):
        entries = kept + round(kept * fillers)
        bits = _stream_bits(entries, width, length, used) if huffman else entries * width
        if bits < best[3]:
            best = (width, entries, length, bits)
    return best


class _SymbolsUsed:
    """:func:`nas.storage.expected_used` of one symbol distribution, count by count and memoized: the exact
    figure (a sum over up to 256 symbols) was the costliest step of pricing a fresh row. The same numpy
    operations in the same order as ``expected_used`` (its result to the last bit, held by the tests), with
    the logarithms, which depend on the distribution only, taken once."""

    def __init__(self, probs: np.ndarray) -> None:
        p = np.asarray(probs, dtype=np.float64)
        p = p[p > 0] / p.sum()
        self._log_q = np.log1p(-np.minimum(p, 1 - 1e-16)).reshape(1, -1)
        self._memo: dict[int, float] = {}

    def __call__(self, count: int) -> float:
        used = self._memo.get(count)
        if used is None:
            n = np.asarray([count], dtype=np.float64).reshape(-1, 1)
            used = self._memo[count] = float((-np.expm1(n * self._log_q)).sum(axis=1)[0])
        return used


def _stream_bits(count: int, width: int, mean_length: float, used: _SymbolsUsed) -> float:
    """``huffman_stream_bits(count, width, mean_length, used(count))``, asking ``used`` only where it can
    change the result: the table grows with the symbols used, so where fixed width wins against a table of
    none, it wins whatever the count (as for a keep-bitmap, whose code cannot beat one bit a symbol)."""
    bits = huffman_stream_bits(count, width, mean_length, 0.0)
    if bits == count * width:
        return bits
    return huffman_stream_bits(count, width, mean_length, used(count))


class _Row(NamedTuple):
    """What the storage of one weight op depends on: a row of the storage table."""

    conv: bool  # else linear
    weights: int  # stored (factorized layers are already their two factors' rows)
    cout: int
    other_bits: int  # its bias and the batch norm after it, at 32 bits


def _rows(weight_ops: list[_WeightOp]) -> tuple[_Row, ...]:
    return tuple(_Row(w.kind == "conv", w.weight_count, w.cout, w.other_bits) for w in weight_ops)


#: What the storage of one kind of weight op reads of a CompressionSpec (low rank and channels are already in
#: the rows): sparsity, quantization, codebook bits (None where the quantization replaces them), Huffman.
_Setting = tuple[float, str, "int | None", bool]
#: A layer's settings, indexed by ``_Row.conv``: (its linear ops', its conv ops').
_Settings = tuple[_Setting, _Setting]


def _settings(sparsity_linear: float, sparsity_conv: float, c: CompressionSpec, bits: int | None) -> _Settings:
    # Only what changes the records goes into the memo key of a row, so that rows are priced once per
    # setting that differs for them (a conv row does not depend on sparsity_linear).
    bits = bits if c.quantization == "none" else None
    return ((round(sparsity_linear, 4), c.quantization, bits, c.huffman),
            (round(sparsity_conv, 4), c.quantization, bits, c.huffman))


def _layer_settings(c: CompressionSpec) -> dict[int | None, _Settings]:
    """The storage settings of each layer a spec overrides (the key None: every other layer's)."""
    out = {None: _settings(c.sparsity_linear, c.sparsity_conv, c, c.codebook_bits)}
    for index, _ in c.layers:
        out[index] = _settings(c.sparsity_of(index, "linear"), c.sparsity_of(index, "conv"), c, c.bits_of(index))
    return out


@lru_cache(maxsize=1 << 18)
def _row_size(row: _Row, setting: _Setting) -> LayerSize:
    """The storage accounting of :func:`size_report` for one row (unnamed), memoized per (row, storage setting):
    the same layers recur across candidates, so a fresh candidate's size is mostly rows already priced.
    Its weights' records are :func:`_weight_records`; int8 adds a 32-bit scale per output channel."""
    sparsity, quantization, codebook_bits, huffman = setting
    w = _weight_records(row.conv, sparsity, quantization, codebook_bits, huffman, row.weights)
    table_bits = row.cout * FLOAT_BITS if quantization == "int8" else w.table_bits
    return LayerSize(w.name, w.kind, w.weights, w.stored, w.kept, w.entries, w.value_bits, w.index_bits,
                     w.value_entropy, w.index_entropy, table_bits, row.other_bits, w.record_bits,
                     w.index_stream_bits, w.value_stream_bits)  # w._replace(...), at a third of its cost


@lru_cache(maxsize=1 << 18)  # by what the weights' storage depends on: rows of other shapes and biases share it
def _weight_records(conv: bool, sparsity: float, quantization: str, codebook_bits: int | None, huffman: bool,
                    stored: int) -> LayerSize:
    """The records of one row's ``stored`` weights (factorized layers are already their two factors' rows),
    without the other tensors beside them, and with the codebook or scale of the layer only.

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
            value_stream = _stream_bits(kept, value_bits, value_h, _uniform_used(value_bits))
    streams = int(sparse) + int(value_bits != FLOAT_BITS)  # each pays half a byte of padding on average
    record = 8.0 * (CODED_FIXED_BYTES + ENTRIES_BYTES * sparse) + 4.0 * streams
    return LayerSize("", "conv" if conv else "linear", stored, stored, kept, entries, value_bits, index_bits, value_h,
                     index_h, plan.table_bits, 0, record, index_stream, value_stream)


@lru_cache(maxsize=64)
def _uniform_used(value_bits: int) -> _SymbolsUsed:
    """Symbols used among ``2**value_bits`` equally likely value codes."""
    return _SymbolsUsed(np.ones(2**value_bits))


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
    return [_row_size(row, settings.get(layer_index(w.name), settings[None])[row.conv])._replace(name=w.name)
            for w, row in zip(weight_ops, _rows(weight_ops))]


#: The versions a container's header names (their length, not their value, matters to its size).
_VERSIONS = {"nas": "0.1.0", "torch": "2.13.0+cpu"}
#: What one factorized layer adds to the compressed header (its module name, kind and rank), measured.
FACTORED_HEADER_BYTES = 14


@lru_cache(maxsize=4096)
def _header_bytes(arch: ArchSpec, huffman: bool) -> int:
    """``len(header_blob(arch.to_dict(), {}, huffman, _VERSIONS))`` plus the fixed fields, from memoized
    pieces: the header's text less the layers (per value of every other field) and each layer's JSON.
    Serializing was a third of a fresh candidate's size estimate; what is left is zlib's own work."""
    layers = ",".join(map(_layer_json, arch.layers))
    text = _header_outline(tuple(getattr(arch, f) for f in _OUTLINE_FIELDS), huffman, arch)
    return FILE_FIXED_BYTES + len(compress_header(text.replace('"layers":[]', f'"layers":[{layers}]', 1)))


#: The ArchSpec fields the header holds besides its layers.
_OUTLINE_FIELDS = tuple(f.name for f in dataclasses.fields(ArchSpec) if f.name != "layers")
_OUTLINES: dict[tuple[Any, ...], str] = {}


def _header_outline(values: tuple[Any, ...], huffman: bool, arch: ArchSpec) -> str:
    """The header's JSON with ``"layers":[]``, for ``arch`` whose fields besides its layers are ``values``."""
    found = _OUTLINES.get((values, huffman))
    if found is None:
        outline = dataclasses.replace(arch, layers=arch.layers[:1]).to_dict()
        outline["layers"] = []
        found = _OUTLINES[values, huffman] = header_json(outline, {}, huffman, _VERSIONS)
    return found


@lru_cache(maxsize=1 << 16)
def _layer_json(layer: Layer) -> str:
    return json.dumps(layer_to_dict(layer), sort_keys=True, separators=(",", ":"))


def file_overhead_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Bits of the container that belong to no layer: magic, version, the compressed JSON header, record
    count and checksum. ``size_bits`` is this plus the layers of :func:`size_report`."""
    return _overhead_bits(arch, compression, compressed(arch, compression))


def _overhead_bits(arch: ArchSpec, compression: CompressionSpec, running: ArchSpec, factored: int | None = None) -> int:
    if factored is None:  # each factorized layer adds a weight op (and a header entry)
        factored = _layer_rows(running)[1]
    return 8 * (_header_bytes(arch, compression.huffman) + FACTORED_HEADER_BYTES * factored)


_Rows = tuple[_Row, ...]


def _layer_rows(arch: ArchSpec) -> tuple[list[tuple[int | None, _Rows]], int]:
    """The weight-op rows of ``arch`` as it runs by layer, (layer index, its rows) in order (None for detector
    heads and extras), and how many of them its low rank added."""
    if arch.detector is not None:  # heads read feature maps across layers: use the whole op list
        dense = len(_weight_ops(ops(dataclasses.replace(arch, lowrank=None))))
        weight_ops = _weight_ops(ops(arch))
        rows = _rows(weight_ops)
        return [(layer_index(w.name), (row,)) for w, row in zip(weight_ops, rows)], len(rows) - dense
    facts = _arch_facts(arch)
    groups: list[tuple[int | None, _Rows]] = [(index, f.rows) for index, f in enumerate(facts)]
    return groups, sum(f.factored for f in facts)


def size_bits(arch: ArchSpec, compression: CompressionSpec) -> int:
    """Estimated size of the container of ``arch`` compressed by ``compression``, in bits.

    The sum of :func:`size_report` over layers (P+Q+H when ``compression.huffman`` is
    set, P+Q otherwise) plus :func:`file_overhead_bits`: what :func:`nas.compress.save`
    writes, within a few percent (``benchmarks/size_estimate.py``). Each layer's
    weight-op rows are memoized per (layer, input shape) like :func:`count`, and each
    row's storage per storage setting (a layer's override is its own setting).
    """
    running = compressed(arch, compression)
    if compression.layers:  # per-layer settings (Deep Compression's tables): each layer's rows priced by its own
        compression.check_layers(arch)
    groups, factored = _layer_rows(running)
    settings = _layer_settings(compression)
    default = settings[None]
    sizes = [_row_size(row, settings.get(index, default)[row.conv]) for index, rows in groups for row in rows]
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
