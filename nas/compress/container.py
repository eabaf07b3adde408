"""The compressed-model container: a documented binary file that really is small.

Layout (all integers little-endian; ``u8/u16/u32`` unsigned)::

    magic        4 bytes  b"NASZ"
    version      u16      2
    header_len   u32      then header_len bytes of zlib-compressed UTF-8 JSON:
                          {"arch": ArchSpec.to_dict(), "factored": {module: {"kind", "rank"}}, "huffman": bool,
                           "versions": {"nas": ..., "torch": ...}}  (the versions that wrote it; read_header)
    n_records    u32      then n_records records, one per tensor in the order of ``_tensors`` of the model
                          the header describes (the reader rebuilds it, so records carry no names or shapes):
      raw (biases, batch-norm tensors): numel float32 values
      coded (conv/linear weights):
             index_bits u8     relative-index width (0: stored dense, every position in order)
             value_kind u8     0 float32, 1 k-means codebook, 2 binary, 3 ternary, 4 int8
             value_bits u8     bits per value code (32 for float32)
             coding u8         bit 0: index stream Huffman-coded, bit 1: value stream Huffman-coded
             table_len u32, table_len float32   codebook, or the scale s of binary (-s, s) / ternary (-s, 0, s),
                                    or int8's scale per output channel (codes 0..254 are q + 127)
             kept u32          values stored (kept weights)
             entries u32       relative-index symbols (kept + fillers); only when index_bits > 0
             [index stream]    only when index_bits > 0
             value stream      float32 * kept when value_kind = 0, else a coded stream
      coded stream: fixed width: ceil(count * width / 8) bytes;
                    Huffman: used-symbol bitmap ceil(2**width / 8) bytes, one code length u8 per used
                             symbol (the canonical table), nbits u32, ceil(nbits / 8) bytes
    crc32        u32      zlib.crc32 of every byte before it

Relative indices (Deep Compression, section 2; the rule is :mod:`nas.storage`'s): with
``b`` index bits the gap ``d`` (1 <= d <= 2**b - 1) from the previous kept weight in
the flattened (row-major) tensor is stored as symbol ``d - 1``; a gap of ``2**b`` or
more first emits *filler* symbols ``2**b - 1``, each advancing ``2**b - 1`` positions
over zeros, whose zero is implied by the symbol (the value stream carries kept weights
only). Conv layers use 8-bit and linear layers 5-bit indices
(:data:`nas.storage.INDEX_BITS`), or a 1-bit index (a keep-bitmap) where that is
smaller; each stream is Huffman-coded where that is smaller than fixed width.

Everything a loader needs is in the file: :func:`load` rebuilds the network with
:func:`nas.build_model` from the header's arch, swaps in the low-rank factored
modules named in ``factored``, and fills every tensor; the result computes the same
function as the saved model in eval mode (same float32 weights, bit for bit).
Anything truncated, altered or inconsistent raises :class:`~nas.errors.CompressError`.

Agreement with :func:`nas.size_bits`: the cost model prices this layout (same index
choice, same tables, same fixed fields, the header by the same function) for random
kept positions and Gaussian weights; ``benchmarks/size_estimate.py`` measures it
(within ±3% of the file for random candidates and trained winners, see
``results/bench/compression_costs.json``, section ``size``).
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from nas.compress._streams import Stream, encode_stream, positions_from_indices, read_stream, relative_indices
from nas.compress.binary import QuantizedWeight
from nas.compress.int8 import QMAX, Int8Weight
from nas.compress.lowrank import FACTORED, shaped_like
from nas.compress.sharing import SharedWeight
from nas.device import on_cpu
from nas.errors import CompressError, SpecError
from nas.graph import ops
from nas.models import Network, build_model
from nas.spec import ArchSpec
from nas.storage import BITMAP_BITS, FILE_FIXED_BYTES, INDEX_BITS, header_blob

MAGIC = b"NASZ"
VERSION = 2
FLOAT, CODEBOOK, BINARY, TERNARY, INT8 = 0, 1, 2, 3, 4
VALUE_KINDS = {FLOAT: "float32", CODEBOOK: "codebook", BINARY: "binary", TERNARY: "ternary", INT8: "int8"}


class LayerStorage(NamedTuple):
    """Measured storage of one weight op in the file, in bits (Deep Compression's table columns).

    ``bits_pq`` prices the same streams at fixed width (pruning + quantization, no
    Huffman); ``bits_file`` is what the layer's records really take, Huffman tables,
    names and shapes included. ``other_bits`` are biases and batch-norm tensors.
    """

    name: str
    kind: str
    weights: int  # dense weight count of the original op
    stored: int  # weights after low-rank factorization
    kept: int  # values in the file
    entries: int  # relative-index symbols (kept + fillers); 0 when stored dense
    value_bits: int
    index_bits: int
    table_bits: int
    other_bits: int
    value_stream_bits: int  # bits of the value streams as written (Huffman or fixed)
    index_stream_bits: int
    bits_file: int

    @property
    def bits_pq(self) -> int:
        return self.kept * self.value_bits + self.entries * self.index_bits + self.table_bits + self.other_bits

    @property
    def dense_bits(self) -> int:
        return 32 * self.weights + self.other_bits


@dataclass(frozen=True)
class ContainerReport:
    """What :func:`save` wrote: per-layer storage and the file size in bytes."""

    layers: list[LayerStorage]
    file_bytes: int
    dense_bits: int
    header_bytes: int = 0  # magic, version, JSON header, record count, checksum (in no layer's bits_file)

    @property
    def rate(self) -> float:
        """Compression rate: 32-bit dense parameters over the file size."""
        return self.dense_bits / (8 * self.file_bytes)


# --------------------------------------------------------------------------- encoding


class _Coded(NamedTuple):
    mask: np.ndarray | None  # flat keep-mask, None when every position is stored
    codes: np.ndarray  # one code per kept value (empty for float32)
    values: np.ndarray  # float32 kept values (float32 kind only)
    kind: int
    bits: int
    table: np.ndarray


def _coded_weight(module: nn.Module) -> _Coded:
    """Codes, table and keep-mask of a conv/linear weight as its quantizer holds it."""
    if parametrize.is_parametrized(module, "weight"):
        param = module.parametrizations.weight[0]
        if isinstance(param, SharedWeight):
            codes = param.codes.flatten().numpy()
            keep = codes >= 0
            table = param.centroids.detach().float().numpy()
            return _Coded(None if keep.all() else keep, codes[keep], np.zeros(0, np.float32), CODEBOOK,
                          param.bits, table)
        if isinstance(param, QuantizedWeight):
            was = param.training
            param.eval()
            b, scale = param.levels(module.parametrizations.weight.original)
            param.train(was)
            keep = (param.mask if param.mask is not None else torch.ones_like(b, dtype=torch.bool)).flatten().numpy()
            b_flat = b.flatten().numpy()[keep]
            s = float(scale)
            if param.mode == "binary":
                return _Coded(None if keep.all() else keep, (b_flat > 0).astype(np.int64), np.zeros(0, np.float32),
                              BINARY, 1, np.array([s], np.float32))
            return _Coded(None if keep.all() else keep, (b_flat + 1).astype(np.int64), np.zeros(0, np.float32),
                          TERNARY, 2, np.array([s], np.float32))
        if isinstance(param, Int8Weight):  # codes q + 127 in 0..254, one float32 scale per output channel
            q, scales = param.levels(module.parametrizations.weight.original)
            keep = (param.mask if param.mask is not None else torch.ones_like(q, dtype=torch.bool)).flatten().numpy()
            return _Coded(None if keep.all() else keep, q.flatten().numpy().astype(np.int64)[keep] + QMAX,
                          np.zeros(0, np.float32), INT8, 8, scales.numpy().astype(np.float32))
        raise CompressError(f"container: unknown weight parametrization {type(param).__name__}.")
    weight = module.weight.detach().float().flatten().numpy()
    if prune.is_pruned(module) and hasattr(module, "weight_mask"):
        keep = module.weight_mask.detach().flatten().numpy() != 0
    else:
        keep = weight != 0
    return _Coded(None if keep.all() else keep, np.zeros(0, np.int64), weight[keep], FLOAT, 32,
                  np.zeros(0, np.float32))


def _write_weight(out: BinaryIO, coded: _Coded, index_bits: int, use_huffman: bool) -> tuple[int, int, int, int]:
    """Write a coded weight body; returns (index width used, entries, index stream bits, value stream bits).

    A sparse weight takes the layer kind's index width or a keep-bitmap, whichever is smaller, and each
    stream is Huffman-coded only where that is smaller than fixed width (the rules of :mod:`nas.storage`).
    """
    kept = coded.values.size if coded.kind == FLOAT else coded.codes.size
    index: tuple[int, int, Stream] | None = None
    if coded.mask is not None:
        options = []
        for width in (index_bits, BITMAP_BITS):
            symbols = relative_indices(coded.mask, width)
            options.append((width, symbols.size, encode_stream(symbols, width, use_huffman)))
        index = min(options, key=lambda option: len(option[2].data))
    values = None if coded.kind == FLOAT else encode_stream(coded.codes, coded.bits, use_huffman)
    flags = int(index is not None and index[2].huffman) | int(values is not None and values.huffman) << 1
    out.write(struct.pack("<BBBB", index[0] if index else 0, coded.kind, coded.bits, flags))
    out.write(struct.pack("<I", coded.table.size))
    out.write(coded.table.astype("<f4").tobytes())
    out.write(struct.pack("<I", kept))
    if index is not None:
        out.write(struct.pack("<I", index[1]) + index[2].data)
    if values is None:
        out.write(coded.values.astype("<f4").tobytes())
    else:
        out.write(values.data)
    return (index[0] if index else 0, index[1] if index else 0, 8 * len(index[2].data) if index else 0,
            8 * len(values.data) if values is not None else 32 * kept)


def _tensors(model: nn.Module) -> list[tuple[str, nn.Module | None, torch.Tensor | None]]:
    """(state key, weight layer or None, raw tensor or None) in a fixed order: the effective model."""
    items: list[tuple[str, nn.Module | None, torch.Tensor | None]] = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            items.append((f"{prefix}weight", module, None))
            if module.bias is not None:
                items.append((f"{prefix}bias", None, module.bias.detach()))
            continue
        if mod_name.endswith("parametrizations.weight") or ".parametrizations." in mod_name:
            continue
        for pname, p in module.named_parameters(recurse=False):
            items.append((f"{prefix}{pname}", None, p.detach()))
        for bname, b in module.named_buffers(recurse=False):
            if b is not None and b.is_floating_point():
                items.append((f"{prefix}{bname}", None, b.detach()))
    return items


def _owners(arch: ArchSpec) -> dict[str, str]:
    """Module path -> the weight op it is accounted to (batch norms go to the conv before them)."""
    owner: dict[str, str] = {}
    last = ""
    for op in ops(arch):
        if op.kind in INDEX_BITS:
            last = op.name
            owner[op.name] = op.name
        elif op.kind == "bn":
            owner[op.name] = last
    return owner


def _owner(owners: dict[str, str], key: str) -> str:
    parts = key.split(".")[:-1]
    while parts:
        name = ".".join(parts)
        if name in owners:
            return owners[name]
        parts.pop()
    raise CompressError(f"container: tensor {key!r} belongs to no conv/linear/batch-norm op of the arch.")


def encode(model: nn.Module, *, huffman_coding: bool = True) -> tuple[bytes, ContainerReport]:
    """The container bytes of ``model`` (a :class:`nas.models.Network`, possibly compressed, on any device)
    and its report."""
    model = on_cpu(model)
    arch = getattr(model, "spec", None)
    if not isinstance(arch, ArchSpec):
        raise CompressError("container: the model must be a nas Network (built by nas.build_model), "
                            f"but got {type(model).__name__} without an ArchSpec.")
    factored = {name: {"kind": type(m).__name__, "rank": int(m.rank)}
                for name, m in model.named_modules() if isinstance(m, FACTORED)}
    from nas import __version__

    versions = {"nas": __version__, "torch": torch.__version__}
    header = header_blob(arch.to_dict(), factored, huffman_coding, versions)
    body = io.BytesIO()
    body.write(MAGIC + struct.pack("<HI", VERSION, len(header)) + header)
    items = _tensors(model)
    body.write(struct.pack("<I", len(items)))
    owners = _owners(arch)
    dense_ops = {op.name: op for op in ops(arch) if op.kind in INDEX_BITS}
    acc: dict[str, dict[str, int]] = {name: dict(stored=0, kept=0, entries=0, value_bits=0, index_bits=0,
                                                 table_bits=0, other_bits=0, vs=0, is_=0, file=0)
                                      for name in dense_ops}
    for key, module, raw in items:
        start = body.tell()
        owner = _owner(owners, key)
        a = acc[owner]
        tensor = module.weight if module is not None else raw
        assert tensor is not None
        if module is None:
            body.write(tensor.detach().float().contiguous().numpy().astype("<f4").tobytes())
            a["other_bits"] += 32 * tensor.numel()
        else:
            coded = _coded_weight(module)
            width, entries, index_stream, value_stream = _write_weight(body, coded, INDEX_BITS[dense_ops[owner].kind],
                                                                       huffman_coding)
            a["stored"] += tensor.numel()
            a["kept"] += coded.values.size if coded.kind == FLOAT else coded.codes.size
            a["entries"] += entries
            a["value_bits"] = coded.bits
            a["index_bits"] = width or a["index_bits"]
            a["table_bits"] += 32 * coded.table.size
            a["vs"] += value_stream
            a["is_"] += index_stream
        a["file"] += 8 * (body.tell() - start)
    payload = body.getvalue()
    data = payload + struct.pack("<I", zlib.crc32(payload))
    fixed = 8 * (len(data) - sum(a["file"] for a in acc.values()) // 8)
    assert fixed == 8 * (FILE_FIXED_BYTES + len(header))
    layers = [LayerStorage(name, op.kind, op.weight_count, a["stored"], a["kept"], a["entries"], a["value_bits"],
                           a["index_bits"], a["table_bits"], a["other_bits"], a["vs"], a["is_"], a["file"])
              for (name, op), a in zip(dense_ops.items(), acc.values())]
    dense_bits = sum(layer.dense_bits for layer in layers)
    return data, ContainerReport(layers, len(data), dense_bits, fixed // 8)


def save(model: nn.Module, path: str | Path, *, huffman_coding: bool = True) -> ContainerReport:
    """Write ``model`` to ``path`` in the container format; returns the measured per-layer storage."""
    from nas.files import write_atomic

    data, report = encode(model, huffman_coding=huffman_coding)
    write_atomic(path, data)  # a full disk or a kill never leaves half a container
    return report


# --------------------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CompressError(f"container is truncated: needs {n} bytes at offset {self.pos}, "
                                f"but only {len(self.data) - self.pos} remain.")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


class _Decoded(NamedTuple):
    weight: torch.Tensor
    mask: torch.Tensor | None  # keep-mask when stored sparse
    codes: torch.Tensor | None  # codebook layers: code per position, -1 where pruned
    table: torch.Tensor | None
    bits: int
    kind: int = 0  # FLOAT; INT8 gets its parametrization back
    index_bits: int = 0  # relative-index width as stored (0: dense)


def _read_weight(r: _Reader, key: str, shape: tuple[int, ...]) -> _Decoded:
    numel = math.prod(shape)
    index_bits, kind, bits, flags = r.unpack("<BBBB")
    if kind not in VALUE_KINDS or not 1 <= bits <= 32 or index_bits > 16 or flags > 3:
        raise CompressError(f"{key}: unknown coding (value kind {kind}, {bits} value bits, {index_bits} index bits).")
    (table_len,) = r.unpack("<I")
    table = np.frombuffer(r.take(4 * table_len), dtype="<f4")
    (kept,) = r.unpack("<I")
    if kept > numel:
        raise CompressError(f"{key}: {kept} values declared for a tensor of {numel} weights.")
    if index_bits:
        (entries,) = r.unpack("<I")
        positions = positions_from_indices(read_stream(r.take, entries, index_bits, bool(flags & 1)), index_bits, numel)
        if positions.size != kept:
            raise CompressError(f"{key}: relative indices give {positions.size} kept weights, but {kept} are declared.")
    else:
        if kept != numel:
            raise CompressError(f"{key}: dense storage needs {numel} values, but {kept} are declared.")
        positions = np.arange(numel)
    if kind == FLOAT:
        values = np.frombuffer(r.take(4 * kept), dtype="<f4")
    else:
        codes = read_stream(r.take, kept, bits, bool(flags & 2))
        if kind == INT8:  # one scale per output channel: value = (code - 127) * scale of the position's channel
            if table.size != shape[0] or (codes.size and codes.max() > 2 * QMAX):
                raise CompressError(f"{key}: an int8 weight needs {shape[0]} scales and codes <= {2 * QMAX}, but has "
                                    f"{table.size} scales and codes up to {int(codes.max()) if codes.size else 0}.")
            values = (codes.astype(np.float32) - QMAX) * table[positions // (numel // shape[0])]
        else:
            if kind != CODEBOOK:  # binary and ternary store their scale only
                if table.size != 1:
                    raise CompressError(f"{key}: a {VALUE_KINDS[kind]} weight stores one scale, but {table.size} "
                                        "are given.")
                s = float(table[0])
                table = np.array([-s, s] if kind == BINARY else [-s, 0.0, s], dtype=np.float32)
            if codes.size and codes.max() >= table.size:
                raise CompressError(f"{key}: a code {int(codes.max())} is outside its {table.size}-entry table.")
            values = table[codes]
    flat = np.zeros(numel, dtype=np.float32)
    flat[positions] = values
    mask = None
    if index_bits:
        keep = np.zeros(numel, dtype=bool)
        keep[positions] = True
        mask = torch.from_numpy(keep.reshape(shape))
    if kind != CODEBOOK:
        return _Decoded(torch.from_numpy(flat.reshape(shape)), mask, None, None, bits, kind, index_bits)
    full = np.full(numel, -1, dtype=np.int64)
    full[positions] = codes
    return _Decoded(torch.from_numpy(flat.reshape(shape)), mask, torch.from_numpy(full.reshape(shape)),
                    torch.from_numpy(table.astype(np.float32)), bits, kind, index_bits)


def read_header(data: bytes) -> dict[str, Any]:
    """The JSON description of container ``data`` (arch, factored modules, coding, versions), checksum verified."""
    _verify(data)
    r = _Reader(data[:-4])
    r.take(4)
    _, header_len = r.unpack("<HI")
    try:
        header = json.loads(zlib.decompress(r.take(header_len)).decode())
    except (ValueError, zlib.error) as exc:
        raise CompressError(f"container header is malformed: {exc}") from None
    if not isinstance(header, dict):
        raise CompressError("container header is malformed: not a JSON object.")
    return header


def _verify(data: bytes) -> None:
    if len(data) < 4 or data[:4] != MAGIC:
        raise CompressError(f"not a nas compressed container: expected magic {MAGIC!r}, but got {bytes(data[:4])!r}.")
    if len(data) < 14:
        raise CompressError(f"container is truncated: {len(data)} bytes is shorter than the fixed header.")
    (stored_crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != stored_crc:
        raise CompressError("container checksum mismatch: the file is truncated or altered "
                            f"(crc32 {zlib.crc32(data[:-4]):#010x}, stored {stored_crc:#010x}).")


class Record(NamedTuple):
    """One tensor's record in a container, as :func:`describe` reads it."""

    key: str  # the state-dict name, from the arch the header describes
    shape: tuple[int, ...]
    coding: str  # "raw" (biases, batch norm) or a value kind: float32, codebook, binary, ternary, int8
    value_bits: int
    index_bits: int  # 0: every position stored in order
    kept: int  # values stored
    bytes: int  # what the record takes in the file


@dataclass(frozen=True)
class ContainerInfo:
    """What :func:`describe` reads from a container: the format version, the JSON header, every
    record and the file's fixed parts; the checksum (``crc32``) was verified."""

    version: int
    header: dict[str, Any]
    records: list[Record]
    file_bytes: int
    header_bytes: int  # magic, version, JSON header, record count and checksum
    crc32: int

    @property
    def dense_bytes(self) -> int:
        """The same tensors as dense float32."""
        return sum(4 * math.prod(r.shape) for r in self.records)


def decode(data: bytes) -> Network:
    """The network stored in container ``data`` (see the module docstring)."""
    return _decode(data)[0]


def describe(data: bytes) -> ContainerInfo:
    """Header, records and sizes of container ``data``, read as :func:`decode` reads it (so the
    checksum, every record and the arch they must fit are checked)."""
    return _decode(data)[1]


def _decode(data: bytes) -> tuple[Network, ContainerInfo]:
    _verify(data)
    r = _Reader(data[:-4])
    r.take(4)
    version, header_len = r.unpack("<HI")
    if version != VERSION:
        raise CompressError(f"container version {version} is not supported; this nas reads version {VERSION}.")
    try:
        header = json.loads(zlib.decompress(r.take(header_len)).decode())
        arch = ArchSpec.from_dict(header["arch"])
        model = build_model(arch)
        for name, info in header["factored"].items():
            original = model.get_submodule(name)
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf,
                    shaped_like(original, info["kind"], int(info["rank"])))
    except (ValueError, KeyError, TypeError, AttributeError, SpecError, zlib.error) as exc:
        raise CompressError(f"container header is malformed: {exc}") from None
    items = _tensors(model)  # records come in this order, so the file names no tensor and no shape
    (count,) = r.unpack("<I")
    if count != len(items):
        raise CompressError(f"container holds {count} tensors, but its arch has {len(items)}.")
    state: dict[str, torch.Tensor] = {}
    coded: dict[str, _Decoded] = {}
    records: list[Record] = []
    for key, module, raw in items:
        start = r.pos
        if module is None:
            assert raw is not None
            state[key] = torch.from_numpy(np.frombuffer(r.take(4 * raw.numel()), dtype="<f4").astype(np.float32)
                                          .reshape(tuple(raw.shape)))
            records.append(Record(key, tuple(raw.shape), "raw", 32, 0, raw.numel(), r.pos - start))
        else:
            shape = tuple(module.weight.shape)
            dec = coded[key] = _read_weight(r, key, shape)
            state[key] = dec.weight
            kept = int(dec.mask.sum()) if dec.mask is not None else math.prod(shape)
            records.append(Record(key, shape, VALUE_KINDS[dec.kind], dec.bits, dec.index_bits, kept, r.pos - start))
    if r.pos != len(r.data):
        raise CompressError(f"container has {len(r.data) - r.pos} unread bytes after its records.")
    model.load_state_dict(state, strict=False)
    _restore_compression(model, coded)
    model.eval()
    info = ContainerInfo(version, header, records, len(data), len(data) - sum(rec.bytes for rec in records),
                         struct.unpack("<I", data[-4:])[0])
    return model, info


def _restore_compression(model: nn.Module, coded: dict[str, _Decoded]) -> None:
    """Put codebooks and pruning masks back, so the loaded model saves to the same bytes and can be fine-tuned.

    Codebook layers get their :class:`SharedWeight` parametrization (same codes and
    centroids); other sparse layers get a :mod:`torch.nn.utils.prune` mask. Binary and
    ternary layers come back as their float values (``±scale`` and 0); int8 layers get their
    :class:`~nas.compress.int8.Int8Weight` back (the same codes and scales).
    """
    for key, dec in coded.items():
        module = model.get_submodule(key.rpartition(".")[0])
        if dec.codes is not None and dec.table is not None:
            parametrize.register_parametrization(module, "weight", SharedWeight(dec.table, dec.codes, dec.bits))
            module.parametrizations.weight.original.requires_grad_(False)
        elif dec.kind == INT8:
            parametrize.register_parametrization(module, "weight", Int8Weight(dec.mask))
        elif dec.mask is not None:
            prune.custom_from_mask(module, "weight", dec.mask.to(module.weight.dtype))


def load(path: str | Path) -> Network:
    """Read a container written by :func:`save`; the returned network is in eval mode."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CompressError(f"cannot read container {str(path)!r}: {exc.strerror}.") from None
    return decode(data)


def overhead_bits(report: ContainerReport) -> int:
    """Bits of the file that are not weights, codebooks or biases: header, names, shapes, Huffman tables."""
    payload = sum(layer.value_stream_bits + layer.index_stream_bits + layer.table_bits + layer.other_bits
                  for layer in report.layers)
    return 8 * report.file_bytes - payload
