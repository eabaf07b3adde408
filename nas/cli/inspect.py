"""``nas inspect FILE``: what a file nas wrote holds, its sizes, and whether it is intact.

- a compressed container (``.nasz``, :mod:`nas.compress.container`): format version, the
  header (arch, low-rank factored modules, Huffman coding, the versions that wrote it),
  one line per weight record (coding, bits, kept values, bytes), the file's fixed parts,
  and the CRC-32 checked; every record is decoded against the arch, as loading does;
- a checkpoint (``.safetensors``, :mod:`nas.checkpoint`): the candidate, its compression
  settings, what the writer recorded (role, accuracies, dataset), every tensor, and the
  SHA-256 digest of the weights checked; the candidate's network is built and loaded.

The kind is told by the file's first bytes, not its name. A damaged file is a one-line
error (exit 2); ``--json`` prints one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from nas.checkpoint import load_checkpoint, read_checkpoint
from nas.compress.container import MAGIC, ContainerInfo, describe
from nas.cost import count
from nas.errors import NasError
from nas.spec import ArchSpec, Candidate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", help="show what a .nasz container or a .safetensors checkpoint holds and check it",
                       description="Header, layers, sizes and checksum of a compressed container (.nasz) or a "
                                   "checkpoint (.safetensors) written by nas.")
    p.add_argument("file", type=Path, metavar="FILE", help="a .nasz container or a .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise NasError(f"cannot read {str(args.file)!r}: {exc.strerror}.") from None
    if data[:4] == MAGIC:
        info = describe(data)
        out = _container(info)
        lines = _container_lines(args.file, info, out)
    elif _is_safetensors(data):
        out = _checkpoint(args.file, len(data))
        lines = _checkpoint_lines(args.file, out)
    else:
        raise NasError(f"{str(args.file)!r} is neither a nas compressed container (.nasz, starts with {MAGIC!r}) nor "
                       f"a safetensors checkpoint; `nas inspect` reads those two (what `nas compress --out`, "
                       f"`nas train`, `nas finetune` write).")
    print(json.dumps(out, sort_keys=True) if args.json else "\n".join(lines))
    return 0


def _is_safetensors(data: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes) and then ``{``."""
    return len(data) > 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8


def _arch(arch: ArchSpec) -> dict[str, Any]:
    cost = count(arch)
    return {"family": arch.family, "input_shape": list(arch.input_shape), "num_classes": arch.num_classes,
            "layers": len(arch.layers), "params": cost.params, "madds": cost.madds}


def _arch_line(a: dict[str, Any]) -> str:
    return (f"arch: {a['family'] or 'custom'}, input {tuple(a['input_shape'])}, {a['num_classes']} classes, "
            f"{a['layers']} layers, {a['params']:,} parameters, {a['madds']:,} MAdds")


# --------------------------------------------------------------------------- containers


def _container(info: ContainerInfo) -> dict[str, Any]:
    h = info.header
    return {"kind": "container", "version": info.version, "file_bytes": info.file_bytes,
            "crc32": f"{info.crc32:#010x}", "checksum_ok": True, "arch": _arch(ArchSpec.from_dict(h["arch"])),
            "huffman": bool(h.get("huffman")), "factored": h.get("factored", {}), "versions": h.get("versions", {}),
            "header_bytes": info.header_bytes, "dense_bytes": info.dense_bytes,
            "rate": round(info.dense_bytes / info.file_bytes, 2),
            "records": [r._asdict() | {"shape": list(r.shape)} for r in info.records]}


def _container_lines(path: Path, info: ContainerInfo, out: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(out["versions"].items())) or "unknown versions"
    lines = [f"{path}: nas compressed container, format version {info.version}, {info.file_bytes:,} bytes; "
             f"crc32 {out['crc32']} verified, every record decodes against the arch",
             f"written by {versions}; Huffman coding {'on' if out['huffman'] else 'off'}",
             _arch_line(out["arch"])]
    if out["factored"]:
        lines.append("low-rank factored: " + ", ".join(f"{name} ({f['kind']}, rank {f['rank']})"
                                                       for name, f in sorted(out["factored"].items())))
    weights = [r for r in info.records if r.coding != "raw"]
    head = f"{'weight':<28} {'shape':<18} {'coding':<9} {'bits':>4} {'index':>5} {'kept':>8} {'bytes':>9}"
    lines += [head, "-" * len(head)]
    for r in weights:
        kept = f"{100 * r.kept / max(1, math.prod(r.shape)):.0f}%"
        lines.append(f"{r.key:<28} {'x'.join(map(str, r.shape)):<18} {r.coding:<9} {r.value_bits:>4} "
                     f"{r.index_bits or '-':>5} {kept:>8} {r.bytes:>9,}")
    raw = [r for r in info.records if r.coding == "raw"]
    lines += ["-" * len(head),
              f"{len(weights)} weights {sum(r.bytes for r in weights):,} bytes; {len(raw)} biases and batch-norm "
              f"tensors (float32) {sum(r.bytes for r in raw):,} bytes; header and checksum {info.header_bytes:,} "
              f"bytes",
              f"file {info.file_bytes:,} bytes; dense float32 {info.dense_bytes:,} bytes ({out['rate']:.1f}x)"]
    return lines


# --------------------------------------------------------------------------- checkpoints


def _checkpoint(path: Path, size: int) -> dict[str, Any]:
    tensors, meta = read_checkpoint(path)  # the digest is checked here
    model, _, _ = load_checkpoint(path)  # and the candidate's network takes every tensor
    candidate = Candidate.from_dict(meta["candidate"])
    return {"kind": "checkpoint", "format_version": meta["format_version"], "file_bytes": size,
            "sha256": meta["sha256"], "checksum_ok": True, "versions": meta.get("versions", {}),
            "arch": _arch(candidate.arch), "compression": candidate.compression.to_dict(),
            "extra": meta.get("extra", {}),
            "tensors": [{"name": k, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                         "bytes": t.numel() * t.element_size()}
                        for k, t in ((k, tensors[k]) for k in model.state_dict())]}


def _checkpoint_lines(path: Path, out: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(out["versions"].items())) or "unknown versions"
    lines = [f"{path}: nas checkpoint, format version {out['format_version']}, {out['file_bytes']:,} bytes; "
             f"sha256 {out['sha256'][:16]}... verified, loads as its candidate's network",
             f"written by {versions}", _arch_line(out["arch"]),
             f"compression: {json.dumps(out['compression'], sort_keys=True)}"]
    extra = out["extra"]
    if extra:
        lines.append("recorded: " + ", ".join(f"{k} {_short(k, v)}" for k, v in sorted(extra.items())))
    head = f"{'weight':<28} {'dtype':<8} {'shape':<18} {'bytes':>9}"
    lines += [head, "-" * len(head)]
    weights = [t for t in out["tensors"] if len(t["shape"]) >= 2]
    for t in weights:
        lines.append(f"{t['name']:<28} {t['dtype']:<8} {'x'.join(map(str, t['shape'])):<18} {t['bytes']:>9,}")
    rest = [t for t in out["tensors"] if len(t["shape"]) < 2]
    lines += ["-" * len(head),
              f"{len(weights)} weights {sum(t['bytes'] for t in weights):,} bytes; {len(rest)} biases and batch-norm "
              f"tensors {sum(t['bytes'] for t in rest):,} bytes (--json lists every tensor)"]
    return lines


def _short(key: str, value: Any) -> str:
    """A recorded value in a few characters: accuracies as %, lists and records by their length."""
    if isinstance(value, float):
        return f"{value:.2%}" if "accuracy" in key else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return f"({len(value)} entries)"
    return str(value)
