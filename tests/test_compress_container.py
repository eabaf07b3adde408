"""The NASZ container: round trips, size agreement with nas.size_bits, rejection of bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.compress import apply_compression, decode, encode, load, save
from nas.compress import huffman
from nas.compress.container import overhead_bits, positions_from_indices, relative_indices
from nas.errors import CompressError

torch.set_num_threads(1)


def lenet300(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    arch = nas.ArchSpec((784,), (nas.Linear(300, act="relu"), nas.Linear(100, act="relu"), nas.Linear(10)))
    return nas.build_model(arch)


def small_conv(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = (nas.Conv(8, 3), nas.InvertedResidual(8, expansion=3), nas.GlobalAvgPool(), nas.Linear(5))
    return nas.build_model(nas.ArchSpec((3, 8, 8), layers))


def test_huffman_round_trip_and_near_entropy() -> None:
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.3, 5000) - 1, 31)
    freqs = np.bincount(symbols, minlength=32)
    lengths = huffman.code_lengths(freqs)
    data, nbits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, nbits, symbols.size, lengths), symbols)
    p = freqs[freqs > 0] / symbols.size
    entropy = float(-(p * np.log2(p)).sum())
    assert entropy <= nbits / symbols.size < entropy + 1


def test_relative_indices_with_fillers_round_trip() -> None:
    mask = np.zeros(500, dtype=bool)
    mask[[0, 3, 40, 41, 200, 499]] = True
    symbols = relative_indices(mask, 5)
    assert (symbols == 31).sum() == 1 + 5 + 9  # gaps 37, 159 and 299 need 1, 5 and 9 fillers of 31
    assert np.array_equal(positions_from_indices(symbols, 5, 500), np.flatnonzero(mask))


@pytest.mark.parametrize("spec", [
    nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5),
    nas.CompressionSpec(sparsity_linear=0.9, codebook_bits=4, huffman=False),
    nas.CompressionSpec(sparsity_linear=0.5, quantization="ternary"),
    nas.CompressionSpec(quantization="binary"),
    nas.CompressionSpec(sparsity_linear=0.8),
])
def test_round_trip_is_bit_exact(spec: nas.CompressionSpec, tmp_path: Path) -> None:
    model = apply_compression(lenet300(), spec)
    model.eval()
    report = save(model, tmp_path / "m.nasz", huffman_coding=spec.huffman)
    loaded = load(tmp_path / "m.nasz")
    x = torch.randn(5, 784)
    assert torch.equal(loaded(x), model(x))
    for name, a in model.named_modules():
        if isinstance(a, (torch.nn.Linear, torch.nn.Conv2d)):
            assert torch.equal(a.weight, loaded.get_submodule(name).weight), name
    assert report.file_bytes == (tmp_path / "m.nasz").stat().st_size
    if spec.codebook_bits is not None or spec.quantization == "none":
        assert encode(loaded, huffman_coding=spec.huffman)[0] == (tmp_path / "m.nasz").read_bytes()


def test_round_trip_conv_lowrank_and_batch_norm(tmp_path: Path) -> None:
    model = small_conv()
    model.train()
    model(torch.randn(8, 3, 8, 8))  # non-trivial running statistics
    spec = nas.CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.5, codebook_bits=3, lowrank_ratio=0.25)
    model = apply_compression(model, spec)
    model.eval()
    save(model, tmp_path / "c.nasz")
    loaded = load(tmp_path / "c.nasz")
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_file_size_agrees_with_size_bits() -> None:
    """Random masks (magnitude pruning of Gaussian weights) and Gaussian weights: what size_bits models.

    The tolerance: the file pays Huffman codes (within 1 bit of the entropy), the
    tables, names, header (``overhead_bits``); index streams agree within 3% of the
    estimate. Value streams are larger than the estimate (see the report on
    ``nas.cost._value_entropy``: it keeps linear-init centroids in place, while k-means
    moves the centroids out of the pruned band), so the payload is within +25% / -5%.
    """
    model = lenet300()
    for sparsity, bits in ((0.92, 5), (0.8, 4), (0.5, 6)):
        spec = nas.CompressionSpec(sparsity_linear=sparsity, codebook_bits=bits)
        compressed = apply_compression(model, spec)
        data, report = encode(compressed)
        predicted = nas.size_report(model.spec, spec)
        for real, est in zip(report.layers, predicted):
            assert real.kept == est.kept
            if est.entries >= 1000:  # small layers: sampling noise of a few dozen positions
                assert abs(real.index_stream_bits - est.entries * est.index_entropy) <= \
                    0.03 * est.entries * est.index_entropy
        payload = 8 * len(data) - overhead_bits(report)
        assert 0.95 * nas.size_bits(model.spec, spec) <= payload <= 1.25 * nas.size_bits(model.spec, spec)
        # fixed-width (P+Q): the cost model gives each filler zero value bits, the file does not
        data_pq, report_pq = encode(compressed, huffman_coding=False)
        pq = 8 * len(data_pq) - overhead_bits(report_pq)
        est_pq = nas.size_bits(model.spec, nas.CompressionSpec(**{**spec.to_dict(), "huffman": False}))
        fillers = sum(r.entries - r.kept for r in report_pq.layers)
        assert abs(pq + fillers * bits - est_pq) <= 0.01 * est_pq


def test_compressed_file_is_really_smaller(tmp_path: Path) -> None:
    model = lenet300()
    dense = save(model, tmp_path / "dense.nasz")
    small = save(apply_compression(model, nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5)),
                 tmp_path / "small.nasz")
    assert dense.file_bytes >= 4 * nas.count(model.spec).params
    assert small.rate > 30 and small.file_bytes * 30 < dense.file_bytes


def test_truncated_and_altered_files_are_rejected(tmp_path: Path) -> None:
    model = apply_compression(lenet300(), nas.CompressionSpec(sparsity_linear=0.9, codebook_bits=5))
    data, _ = encode(model)
    for cut in (3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CompressError, match="truncated|checksum|magic"):
            decode(data[:cut])
    rng = np.random.default_rng(0)
    for pos in rng.integers(4, len(data), 20):
        altered = bytearray(data)
        altered[pos] ^= 0x40
        with pytest.raises(CompressError):
            decode(bytes(altered))
    with pytest.raises(CompressError, match="magic"):
        decode(b"PK\x03\x04" + data[4:])
    with pytest.raises(CompressError, match="cannot read"):
        load(tmp_path / "missing.nasz")


def test_model_without_arch_is_a_clear_error() -> None:
    with pytest.raises(CompressError, match="nas Network"):
        encode(torch.nn.Linear(3, 3))


def test_lenet300_reference_rate_is_reported() -> None:
    report = encode(apply_compression(lenet300(), nas.CompressionSpec(sparsity_linear=0.92, codebook_bits=5)))[1]
    assert math.isclose(report.rate, report.dense_bits / (8 * report.file_bytes))
    assert sum(layer.kept for layer in report.layers) == sum(
        layer.kept for layer in nas.size_report(lenet300().spec, nas.CompressionSpec(sparsity_linear=0.92)))
