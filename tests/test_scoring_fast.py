"""The cheap costs a search scores equal the straightforward computation, to the last bit.

The scoring path memoizes per layer (ops, counts, storage rows, each table's latency), per op and per row,
and assembles a candidate's costs from those pieces. Here each cost is recomputed from the whole op list of
the network as it runs (``nas.ops(nas.compressed(...))``), the container header from the whole
``arch.to_dict()``, and latency by :meth:`LutProfile.predict`, for a few hundred fresh random candidates
of every searchable space.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess

import numpy as np
import pytest

import nas
from nas import storage
from nas.cost import FACTORED_HEADER_BYTES, _stream_bits, _SymbolsUsed, count_ops
from nas.errors import HardwareError
from nas.space import builtin_spaces
from _runs import nas_cmd

SEARCHABLE = [name for name in builtin_spaces() if not nas.load_space(name).is_fixed]
SEEDS = range(700_000, 700_300)  # far from other tests' seeds: fresh candidates for the memos


def straight_size_bits(arch: nas.ArchSpec, compression: nas.CompressionSpec) -> int:
    """size_bits from the whole op list (size_report) and the whole header, without per-layer memos."""
    running = nas.compressed(arch, compression)
    report = nas.size_report(arch, compression)
    payload = math.ceil(math.fsum(r.bits_pqh if compression.huffman else r.bits_pq for r in report))
    dense = sum(op.kind in ("conv", "linear") for op in nas.ops(dataclasses.replace(running, lowrank=None)))
    header = storage.FILE_FIXED_BYTES + len(storage.header_blob(arch.to_dict(), {}, compression.huffman,
                                                                nas.cost._VERSIONS))
    return payload + 8 * (header + FACTORED_HEADER_BYTES * (len(report) - dense))


def straight_latency(profile: nas.hardware.HardwareProfile, arch: nas.ArchSpec) -> float | None:
    try:
        return profile.predict(arch, interpolate=True).ms  # type: ignore[attr-defined, no-any-return]
    except HardwareError:
        return None


@pytest.mark.parametrize("name", SEARCHABLE)
def test_fast_costs_equal_the_whole_op_list(name: str) -> None:
    space = nas.load_space(name)
    profile = nas.get_profile("reference-cpu")
    priced = 0
    for seed in SEEDS:
        cand = space.random(seed)
        running = nas.compressed(cand.arch, cand.compression)
        assert nas.count(running) == count_ops(nas.ops(running)), seed
        assert nas.size_bits(cand.arch, cand.compression) == straight_size_bits(cand.arch, cand.compression), seed
        expected = straight_latency(profile, running)
        if expected is None:  # a structure the table never measured: the fast path refuses it too
            with pytest.raises(HardwareError):
                profile.latency_ms(running)
        else:
            assert profile.latency_ms(running) == expected, seed  # the same float, not merely close
            priced += 1
    if name == "mobilenetv2-tiny":  # the space the table was built for: every candidate is priced
        assert priced == len(SEEDS)


def test_symbols_used_is_expected_used_to_the_bit() -> None:
    distributions = [storage.index_frequencies(s, w) for s in (0.25, 0.5, 0.75, 0.9, 0.92) for w in (1, 5, 8)]
    distributions += [np.ones(2**b) for b in (1, 2, 4, 8)]
    rng = np.random.default_rng(0)
    counts = [0, 1, 2, 7, 255, 256, 1000] + [int(c) for c in rng.integers(1, 2_000_000, 40)]
    for freqs in distributions:
        probs = freqs / freqs.sum()
        used = _SymbolsUsed(probs)
        for count in counts:
            assert used(count) == float(storage.expected_used(probs, np.array([count]))[0])
            length = storage.huffman_length(freqs)
            width = int(math.log2(len(freqs)))
            assert _stream_bits(count, width, length, used) == \
                storage.huffman_stream_bits(count, width, length, used(count))


def test_nas_sample_prints_the_straightforward_costs() -> None:
    # Through the command: what `nas sample` prints for fresh candidates is the whole-op-list computation.
    result = subprocess.run(nas_cmd("sample", "mobilenetv2-tiny", "-n", "12", "--seed", "800000"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = lines[lines.index(next(line for line in lines if line.startswith("---"))) + 1:]
    assert len(rows) == 12
    space = nas.load_space("mobilenetv2-tiny")
    profile = nas.get_profile("reference-cpu")
    for row, seed in zip(rows, range(800_000, 800_012)):
        cand = space.random(seed)
        running = nas.compressed(cand.arch, cand.compression)
        cost = count_ops(nas.ops(running))
        fields = row.split()
        assert fields[0] == str(seed)
        assert fields[2:5] == [f"{cost.params:,}", f"{cost.madds:,}", f"{straight_latency(profile, running):.2f}"]
        assert fields[6] == f"{straight_size_bits(cand.arch, cand.compression) / 8 / 1000:.1f}"
