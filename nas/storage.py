"""The storage rules of a compressed weight: written by the container, priced by the cost model.

One definition each, read by :mod:`nas.compress.container` (the real file) and by
:func:`nas.size_bits` (its estimate), so the two cannot drift apart.

**Relative indices with fillers** (Deep Compression, Han et al. 2016, section 2 and
Fig. 2). A ``b``-bit index stores the gap ``d`` from the previous kept weight of the
flattened tensor. Symbols ``0 .. 2**b - 2`` are the gaps ``1 .. 2**b - 1``; the last
symbol, ``2**b - 1``, is the *filler*: it advances ``2**b - 1`` positions over zeros
and carries no value. So a gap of ``2**b`` or more gets ``(d - 1) // (2**b - 1)``
fillers (:func:`fillers`). The paper's figure instead stores the filler as an
ordinary entry whose *value* is zero, which lets an index reach ``2**b`` (with 3
bits, a gap larger than 8 gets a filler); that needs a zero among the value codes,
which binary codes and ``2**k``-centroid codebooks do not have, and costs a value
per filler, so here the filler is a reserved index symbol and costs index bits only.

**Index width per layer.** A pruned layer is stored with the paper's width
(:data:`INDEX_BITS`: 8 bits for conv, 5 for linear) or with ``b = 1``, whichever is
smaller: a 1-bit relative index is a keep-bitmap (symbol 0 = kept, 1 = skip one
zero), i.e. dense positions at one bit per weight, which wins at the moderate
sparsities (25-75%) where 8-bit gaps cost more than the weights they locate.

**Huffman streams** store a code-length table as a bitmap of the symbols used
(``ceil(2**b / 8)`` bytes) and one byte per used symbol, then the bit count (u32)
and the code; a stream is Huffman-coded only when that is smaller than fixed width
(:func:`huffman_stream_bits`).
"""

from __future__ import annotations

import heapq
import itertools
import json
import zlib
from typing import Any

import numpy as np

#: Deep Compression's relative-index widths: 8 bits for conv layers, 5 for fully connected.
INDEX_BITS = {"conv": 8, "linear": 5}
#: The other width a pruned layer may take: a keep-bitmap.
BITMAP_BITS = 1
#: magic (4), version (u16), header length (u32), record count (u32), crc32 (u32)
FILE_FIXED_BYTES = 4 + 2 + 4 + 4 + 4
#: a coded weight's fixed fields: index bits, value kind, value bits, coding (u8 each), table length, kept (u32)
CODED_FIXED_BYTES = 4 + 4 + 4
ENTRIES_BYTES = 4  # u32 symbol count, present when the weight is stored sparse
NBITS_BYTES = 4  # u32 bit count of a Huffman stream


def max_gap(index_bits: int) -> int:
    """Largest gap one ``index_bits``-bit symbol holds; also the filler symbol and the filler's advance."""
    return 2**index_bits - 1


def fillers(gaps: np.ndarray, index_bits: int) -> np.ndarray:
    """Filler symbols needed before each gap (gap = distance from the previous kept position)."""
    return (np.asarray(gaps) - 1) // max_gap(index_bits)


def index_frequencies(sparsity: float, index_bits: int) -> np.ndarray:
    """Expected count of each index symbol per kept weight, for kept positions drawn at random.

    With density ``p = 1 - q`` the gap is geometric, ``P(d) = p q**(d-1)``; writing
    ``g = max_gap(b)``, the last symbol of a gap is ``(d - 1) % g`` with probability
    ``p q**r / (1 - q**g)``, and ``E[fillers] = q**g / (1 - q**g)`` (the last entry).
    """
    q, g = float(sparsity), max_gap(index_bits)
    r = np.arange(g, dtype=np.float64)
    tail = 1.0 - q**g
    return np.concatenate([(1.0 - q) * q**r / tail, [q**g / tail]])


def huffman_length(freqs: np.ndarray) -> float:
    """Mean code length (bits per symbol) of a Huffman code for these symbol frequencies.

    The same construction as :func:`nas.compress.huffman.code_lengths` (``heapq``, a lone
    symbol costs one bit), on expected rather than counted frequencies.
    """
    live = [float(f) for f in np.asarray(freqs, dtype=np.float64).ravel() if f > 0]
    if len(live) <= 1:
        return 1.0
    order = itertools.count()
    heap = [(f, next(order)) for f in live]
    heapq.heapify(heap)
    cost = 0.0
    while len(heap) > 1:  # each merge adds one bit to every symbol below it: sum of merged weights
        fa, _ = heapq.heappop(heap)
        fb, _ = heapq.heappop(heap)
        cost += fa + fb
        heapq.heappush(heap, (fa + fb, next(order)))
    return cost / sum(live)


def expected_used(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Expected number of distinct symbols among ``counts`` draws (one figure per count)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0] / p.sum()
    n = np.asarray(counts, dtype=np.float64).reshape(-1, 1)
    return (-np.expm1(n * np.log1p(-np.minimum(p, 1 - 1e-16)))).sum(axis=1)


def huffman_table_bytes(width: int, used: int | np.ndarray) -> Any:
    """Bytes of a Huffman stream besides its code: used-symbol bitmap, one length byte per used symbol, bit count."""
    return (2**width + 7) // 8 + used + NBITS_BYTES


def huffman_stream_bits(count: int, width: int, mean_length: float, used: float) -> float:
    """Bits of a coded stream of ``count`` symbols: Huffman (with its table) or fixed width, the smaller."""
    if count <= 0:
        return 0.0
    return float(min(count * width, count * mean_length + 8 * huffman_table_bytes(width, used)))


def header_json(arch: dict[str, Any], factored: dict[str, Any], huffman: bool, versions: dict[str, str]) -> str:
    """The container header's JSON text: sorted keys, no spaces."""
    return json.dumps({"arch": arch, "factored": factored, "huffman": huffman, "versions": versions},
                      sort_keys=True, separators=(",", ":"))


def header_blob(arch: dict[str, Any], factored: dict[str, Any], huffman: bool, versions: dict[str, str]) -> bytes:
    """The container's zlib-compressed JSON header (the cost model sizes it with the same functions)."""
    return compress_header(header_json(arch, factored, huffman, versions))


def compress_header(text: str) -> bytes:
    return zlib.compress(text.encode(), 9)

