"""The container's symbol streams: relative indices with fillers, and fixed-width or Huffman coding.

The rules (filler symbol, index widths, table layout) are :mod:`nas.storage`'s, which
the cost model prices too; this module only writes and reads them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from nas import storage
from nas.compress import huffman
from nas.errors import CompressError


def relative_indices(mask: np.ndarray, index_bits: int) -> np.ndarray:
    """Relative-index symbols of the kept positions of a flat ``mask`` (see :mod:`nas.storage`)."""
    span = storage.max_gap(index_bits)  # largest gap one symbol holds; symbol `span` is the filler
    positions = np.flatnonzero(mask)
    gaps = np.diff(np.concatenate(([-1], positions)))
    fill = storage.fillers(gaps, index_bits)
    total = int(fill.sum()) + positions.size
    symbols = np.full(total, span, dtype=np.int64)
    real = np.cumsum(fill + 1) - 1
    symbols[real] = gaps - fill * span - 1
    return symbols


def positions_from_indices(symbols: np.ndarray, index_bits: int, numel: int) -> np.ndarray:
    """Inverse of :func:`relative_indices`: the flat kept positions."""
    span = storage.max_gap(index_bits)
    filler = symbols == span
    advance = np.where(filler, span, symbols + 1)
    pos = np.cumsum(advance) - 1
    kept = pos[~filler]
    if kept.size and (kept[-1] >= numel or kept[0] < 0):
        raise CompressError(f"relative indices point past the tensor's {numel} weights; the file is altered.")
    return kept


class Stream(NamedTuple):
    data: bytes  # what goes into the file
    huffman: bool
    payload_bits: int  # bits of the code itself (no table, no padding)


def encode_stream(symbols: np.ndarray, width: int, allow_huffman: bool) -> Stream:
    """The smaller of the fixed-width and the Huffman coding of ``symbols`` (``width``-bit alphabet)."""
    fixed = Stream(huffman.pack(symbols, np.full(symbols.size, width)), False, int(symbols.size * width))
    if not allow_huffman or symbols.size == 0:
        return fixed
    lengths = np.asarray(huffman.code_lengths(np.bincount(symbols, minlength=2**width)), dtype=np.int64)
    if lengths.max() > huffman.MAX_CODE_LENGTH:
        return fixed
    code, nbits = huffman.encode(symbols, lengths.tolist())
    used = lengths > 0
    table = np.packbits(used).tobytes() + lengths[used].astype(np.uint8).tobytes()
    coded = Stream(table + struct.pack("<I", nbits) + code, True, nbits)
    return coded if len(coded.data) < len(fixed.data) else fixed


def read_stream(take: Callable[[int], bytes], count: int, width: int, use_huffman: bool) -> np.ndarray:
    """Read ``count`` symbols written by :func:`encode_stream`; ``take(n)`` returns the next ``n`` bytes."""
    if not use_huffman:
        return huffman.unpack_fixed(take((count * width + 7) // 8), count, width)
    alphabet = 2**width
    used = np.unpackbits(np.frombuffer(take((alphabet + 7) // 8), dtype=np.uint8))[:alphabet].astype(bool)
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[used] = np.frombuffer(take(int(used.sum())), dtype=np.uint8)
    if (lengths[used] == 0).any():
        raise CompressError("Huffman table marks a symbol used with code length 0; the file is altered.")
    (nbits,) = struct.unpack("<I", take(4))
    return huffman.decode(take((nbits + 7) // 8), nbits, count, lengths.tolist())

