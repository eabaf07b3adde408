"""Canonical Huffman coding of small integer alphabets, and fixed-width bit packing.

Deep Compression's last stage Huffman-codes the quantized weight indices and the
relative position indices. The alphabets are tiny (at most ``2**16`` symbols) and
the streams are a few hundred thousand symbols, so a ``heapq`` construction of
the code lengths plus a *canonical* code is enough: a canonical code is fully
described by one code length per symbol, which is all the container stores as
the table. No well-kept PyPI package offers canonical tables with numpy streams,
hence this small module.

Bit order everywhere is most-significant bit first; streams are padded with zero
bits to a whole byte.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import numpy as np

from nas.errors import CompressError

#: Longest code the decoder's look-up table accepts; the container rejects longer ones.
MAX_CODE_LENGTH = 24


def code_lengths(freqs: Sequence[int] | np.ndarray) -> list[int]:
    """Huffman code length (bits) of each symbol; 0 for symbols that never occur.

    A lone symbol gets length 1, so every occurring symbol costs at least one bit.
    Ties are broken by symbol order, so the result is deterministic.
    """
    counts = [int(f) for f in freqs]
    lengths = [0] * len(counts)
    live = [s for s, f in enumerate(counts) if f > 0]
    if len(live) == 1:
        lengths[live[0]] = 1
        return lengths
    order = itertools.count()
    heap: list[tuple[int, int, list[int]]] = [(counts[s], next(order), [s]) for s in live]
    heapq.heapify(heap)
    while len(heap) > 1:
        fa, _, a = heapq.heappop(heap)
        fb, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (fa + fb, next(order), a + b))
    return lengths


def canonical_codes(lengths: Sequence[int]) -> list[int]:
    """The canonical code of each symbol (shorter codes first, then by symbol)."""
    codes = [0] * len(lengths)
    code, prev = 0, 0
    for length, symbol in sorted((n, s) for s, n in enumerate(lengths) if n > 0):
        code <<= length - prev
        codes[symbol] = code
        code += 1
        prev = length
    return codes


def pack(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate ``values[i]`` written in ``widths[i]`` bits (MSB first), zero-padded to bytes."""
    values = np.asarray(values, dtype=np.uint64)
    widths = np.asarray(widths, dtype=np.int64)
    total = int(widths.sum())
    if total == 0:
        return b""
    starts = np.concatenate(([0], np.cumsum(widths)[:-1]))
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(widths.max())):
        sel = widths > j
        shift = (widths[sel] - 1 - j).astype(np.uint64)
        bits[starts[sel] + j] = ((values[sel] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


def unpack_fixed(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack` for ``count`` values of ``width`` bits each."""
    need = (count * width + 7) // 8
    if len(data) < need:
        raise CompressError(f"fixed-width stream needs {need} bytes for {count} values of {width} bits, "
                            f"but has {len(data)}.")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need))[: count * width]
    weights = (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits.reshape(count, width).astype(np.int64) @ weights


def encode(symbols: np.ndarray, lengths: Sequence[int]) -> tuple[bytes, int]:
    """Huffman-code ``symbols`` with the canonical code of ``lengths``; returns (bytes, bit count)."""
    lens = np.asarray(lengths, dtype=np.int64)
    codes = np.asarray(canonical_codes(lengths), dtype=np.uint64)
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and lens[symbols].min() == 0:
        raise CompressError("Huffman encode: a symbol has no code (its frequency was counted as 0).")
    widths = lens[symbols]
    return pack(codes[symbols], widths), int(widths.sum())


def decode(data: bytes, nbits: int, count: int, lengths: Sequence[int]) -> np.ndarray:
    """Decode ``count`` symbols from the first ``nbits`` bits of ``data``.

    Uses a look-up table indexed by the next ``max(lengths)`` bits. Raises
    :class:`CompressError` when the stream is shorter than declared, a bit pattern
    is not a code, or the symbols do not use exactly ``nbits`` bits.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    live = [n for n in lengths if n > 0]
    if not live:
        raise CompressError(f"Huffman table is empty but {count} symbols are declared.")
    longest = max(live)
    if longest > MAX_CODE_LENGTH:
        raise CompressError(f"Huffman code length {longest} exceeds the limit {MAX_CODE_LENGTH}.")
    kraft = sum(2 ** (longest - n) for n in live)
    if kraft > 2**longest:
        raise CompressError("Huffman table is not a prefix code (Kraft sum > 1); the file is altered.")
    if len(data) * 8 < nbits:
        raise CompressError(f"Huffman stream declares {nbits} bits but has {len(data) * 8}.")
    table_sym = np.full(2**longest, -1, dtype=np.int64)
    table_len = np.zeros(2**longest, dtype=np.int64)
    for symbol, (code, n) in enumerate(zip(canonical_codes(lengths), lengths)):
        if n > 0:
            lo = code << (longest - n)
            table_sym[lo: lo + (1 << (longest - n))] = symbol
            table_len[lo: lo + (1 << (longest - n))] = n
    sym_list, len_list = table_sym.tolist(), table_len.tolist()
    padded = bytes(data) + b"\0\0\0\0"
    out = [0] * count
    pos = 0
    mask = (1 << longest) - 1
    for i in range(count):
        byte = pos >> 3
        window = (int.from_bytes(padded[byte: byte + 4], "big") >> (32 - longest - (pos & 7))) & mask
        symbol = sym_list[window]
        if symbol < 0:
            raise CompressError(f"Huffman stream has an invalid code at bit {pos}; the file is altered.")
        out[i] = symbol
        pos += len_list[window]
    if pos != nbits:
        raise CompressError(f"Huffman stream used {pos} bits for {count} symbols, but declares {nbits}.")
    return np.asarray(out, dtype=np.int64)
