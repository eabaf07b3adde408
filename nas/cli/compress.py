"""``nas compress MODEL --spec ...``: compress a model and print Deep Compression's per-layer table.

MODEL is either

- a checkpoint written by :mod:`nas.checkpoint` (one ``.safetensors`` file holding the
  weights and the candidate), or
- a candidate JSON file (``Candidate.to_json()``, e.g. a line of ``nas sample --json``),
  with ``--weights FILE.safetensors`` holding its ``state_dict`` (without it the
  freshly initialized network is compressed, which shows the storage but not a
  trained model's accuracy).

The compression spec is the candidate's own unless ``--spec`` gives one (a JSON
object or a JSON file). No retraining happens here; ``nas finetune`` trains.
All figures are measured by encoding the model into the container; ``--out``
writes that container.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from nas.checkpoint import load_checkpoint, load_weights
from nas.cli._args import (add_data_arguments, add_device_arguments, add_stage_arguments, dataset_of, read_json_arg,
                           recorded_normalization, stage_options)
from nas.compress import ContainerReport, StageOptions, apply_compression, encode
from nas.compress.container import MAGIC
from nas.compress.recovery import importance_data
from nas.data import check_fits, load_configured
from nas.device import resolve_device
from nas.cost import size_bits
from nas.errors import CompressError
from nas.models import build_model
from nas.spec import Candidate, CompressionSpec


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compress", help="compress a model (prune, share, quantize, Huffman) and print the table")
    p.add_argument("model", help="checkpoint (.safetensors from nas.checkpoint) or candidate JSON file")
    p.add_argument("--weights", help="safetensors state_dict for a candidate JSON MODEL")
    p.add_argument("--spec", help="CompressionSpec as a JSON object or a JSON file (default: the candidate's)")
    p.add_argument("--out", help="write the compressed container here")
    p.add_argument("--no-huffman", action="store_true", help="fixed-width codes (P+Q only)")
    p.add_argument("--seed", type=int, default=0, help="seed for k-means (default: %(default)s)")
    add_stage_arguments(p)
    data = p.add_argument_group("data (for channel_importance: activation)")
    add_data_arguments(data, split_seed_default=0)  # read only for channel_importance: activation
    add_device_arguments(p, "cpu; only the activation importance's pass over --dataset runs there", amp=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device, "--device")
    model, candidate = _load_model(args)
    model.to(device)  # the weight stages run on the CPU, the activation pass here (nas.compress.apply_compression)
    spec = CompressionSpec.from_dict(read_json_arg(args.spec, "--spec")) if args.spec else candidate.compression
    if args.no_huffman:
        spec = CompressionSpec(**{**spec.to_dict(), "huffman": False})
    spec.check_layers(candidate.arch)
    options = stage_options(args)
    compressed = apply_compression(model, spec, options=options, seed=args.seed,
                                   data=_importance_data(args, candidate, spec))
    compressed.eval()
    data, report = encode(compressed, huffman_coding=spec.huffman)
    print(f"compression: {json.dumps(spec.to_dict(), sort_keys=True)}")
    for line in table(report):
        print(line)
    estimate = size_bits(candidate.arch, spec) / 8
    print(f"dense {report.dense_bits // 8:,} bytes; file {report.file_bytes:,} bytes; "
          f"nas.size_bits estimate {estimate:,.0f} bytes"
          + ("" if options == StageOptions() else " (it prices layer scope, linear centroids and two-component "
                                                  "factors)"))
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"wrote {args.out}")
    return 0


def _load_model(args: argparse.Namespace) -> tuple[nn.Module, Candidate]:
    torch.manual_seed(args.seed)  # a candidate without --weights gets reproducible initial weights
    path = Path(args.model)
    if not path.exists():
        raise CompressError(f"MODEL {args.model!r} does not exist; give a checkpoint or a candidate JSON file.")
    if path.is_file() and _starts_with(path, MAGIC):
        raise CompressError(f"MODEL {args.model!r} is a compressed container (.nasz): it is compressed already, and "
                            f"`nas compress` takes a checkpoint (.safetensors) or a candidate JSON file; see what it "
                            f"holds with `nas inspect {args.model}`.")
    if path.suffix == ".safetensors":
        model, candidate, _ = load_checkpoint(path)
        return model, candidate
    candidate = Candidate.from_dict(read_json_arg(str(path), "MODEL"))
    model = build_model(candidate.arch)
    if args.weights:
        try:
            tensors = load_file(args.weights)
        except (OSError, SafetensorError) as exc:
            raise CompressError(f"cannot read --weights {args.weights!r}: {exc}.") from None
        load_weights(model, tensors, repr(args.weights))
    return model, candidate


def _importance_data(args: argparse.Namespace, candidate: Candidate, spec: CompressionSpec) -> torch.Tensor | None:
    """The training inputs of ``--dataset`` where the spec ranks channels by activation, else None."""
    if spec.channel_ratio == 0 or spec.channel_importance != "activation":
        return None
    if args.dataset is None:
        raise CompressError("channel_importance 'activation' counts how often each channel fires on the training "
                            f"data: give the dataset the model was trained on (`nas compress {args.model} --dataset "
                            "NAME`), or use channel_importance 'l1' or 'l2'.")
    normalization = recorded_normalization(args.model, args.dataset)  # a checkpoint's: the inputs it was trained on
    splits = load_configured(dataset_of(args), candidate.arch.input_shape, normalization)
    check_fits(splits, candidate.arch.input_shape, candidate.arch.num_classes, f"MODEL {args.model}",
               "give the dataset it was trained on (`--dataset NAME`)")
    return importance_data(splits)


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(magic)) == magic


def table(report: ContainerReport) -> list[str]:
    """Deep Compression's per-layer table (Han et al. 2016, Tables 2-5) from a ContainerReport."""
    head = (f"{'layer':<16} {'weights':>10} {'kept':>7} {'w bits P+Q':>10} {'P+Q+H':>6} "
            f"{'idx bits P+Q':>12} {'P+Q+H':>6} {'bytes':>9} {'rate':>7}")
    lines = [head, "-" * len(head)]
    for layer in report.layers:
        wh = layer.value_stream_bits / max(layer.kept, 1)
        ih = layer.index_stream_bits / max(layer.entries, 1)
        lines.append(f"{layer.name:<16} {layer.weights:>10,} {100 * layer.kept / max(layer.weights, 1):>6.1f}% "
                     f"{layer.value_bits:>10} {wh:>6.2f} {layer.index_bits or '-':>12} "
                     f"{(f'{ih:.2f}' if layer.entries else '-'):>6} {layer.bits_file // 8:>9,} "
                     f"{100 * layer.bits_file / layer.dense_bits:>6.2f}%")
    lines.append(f"{'(header)':<16} {'':>10} {'':>7} {'':>10} {'':>6} {'':>12} {'':>6} {report.header_bytes:>9,}")
    weights = sum(layer.weights for layer in report.layers)
    kept = sum(layer.kept for layer in report.layers)
    lines.append("-" * len(head))
    lines.append(f"{'total':<16} {weights:>10,} {100 * kept / max(weights, 1):>6.1f}% {'':>10} {'':>6} {'':>12} "
                 f"{'':>6} {report.file_bytes:>9,} {100 / report.rate:>6.2f}%  ({report.rate:.1f}x)")
    return lines
