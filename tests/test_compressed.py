"""The network as it runs after its compression: every cost reads nas.compressed(), and it is what
the compression stages really build (fvcore on the compressed model, with no tolerance)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import nas
from nas.compress import apply_compression
from nas.cost import fvcore_count
from nas.search.scoring import cheap_costs
from nas.space import builtin_spaces
from _runs import write

SEARCHABLE = [name for name in builtin_spaces() if not nas.load_space(name).is_fixed]


def structural(compression: nas.CompressionSpec) -> nas.CompressionSpec:
    """The knobs that change what runs (channels, low rank); the others only change stored bits."""
    return nas.CompressionSpec(lowrank_ratio=compression.lowrank_ratio, channel_ratio=compression.channel_ratio,
                               channel_importance=compression.channel_importance)


def check_against_fvcore(candidate: nas.Candidate) -> None:
    compression = structural(candidate.compression)
    running = nas.compressed(candidate.arch, compression)
    model = apply_compression(nas.build_model(candidate.arch), compression).eval()
    fv = fvcore_count(model, candidate.arch.input_shape)
    cost = nas.count(running)
    assert (cost.madds, cost.fvcore_default) == (fv.madds, fv.total)
    assert cost.params == sum(p.numel() for p in model.parameters())
    built = nas.build_model(running)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("space_name", SEARCHABLE)
def test_costs_equal_fvcore_on_the_compressed_model(space_name: str) -> None:
    space = nas.load_space(space_name)
    for seed in range(3):
        candidate = space.random(seed)
        ratio = candidate.compression.lowrank_ratio or 0.25  # every candidate here factorized
        check_against_fvcore(dataclasses.replace(
            candidate, compression=dataclasses.replace(candidate.compression, lowrank_ratio=ratio)))


@pytest.mark.slow
@pytest.mark.parametrize("space_name", SEARCHABLE)
def test_costs_equal_fvcore_on_many_compressed_models(space_name: str) -> None:
    space = nas.load_space(space_name)
    for seed in range(100, 120):
        check_against_fvcore(space.random(seed))


def test_low_rank_shows_in_madds_params_and_latency(tmp_path: Path) -> None:
    """The search's cheap costs are those of the factorized network: fewer MAdds, parameters and
    predicted milliseconds than the same architecture dense."""
    from nas.experiment import load_experiment
    from nas.search.setup import prepare

    path = write(tmp_path, {"name": "lowrank", "space": "mobilenetv2-tiny", "dataset": "digits",
                            "objectives": ["accuracy", "latency_ms", "size_kb"], "profiles": ["reference-cpu"]})
    setup = prepare(load_experiment(path), data=False)
    candidate = setup.space.random(3)
    dense = dataclasses.replace(candidate, compression=nas.CompressionSpec())
    factored = dataclasses.replace(candidate, compression=nas.CompressionSpec(lowrank_ratio=0.25))
    a, b = cheap_costs(setup, dense), cheap_costs(setup, factored)
    assert b["madds"] < a["madds"] and b["params"] < a["params"] and b["latency_ms"] < a["latency_ms"]
    assert b["madds"] == nas.count(nas.compressed(candidate.arch, factored.compression)).madds


def test_compressed_is_the_identity_without_structural_knobs() -> None:
    candidate = nas.load_space("mobilenetv2").random(4)
    spec = nas.CompressionSpec(sparsity_conv=0.5, codebook_bits=4)
    assert nas.compressed(candidate.arch, spec) is candidate.arch
    int8 = nas.compressed(candidate.arch, nas.CompressionSpec(quantization="int8"))
    assert int8.precision == "int8" and int8.layers == candidate.arch.layers
    assert nas.ArchSpec.from_dict(int8.to_dict()) == int8
    assert "precision" not in candidate.arch.to_dict() and "lowrank" not in candidate.arch.to_dict()


def test_student_width_is_gone_but_old_run_folders_still_load(tmp_path: Path) -> None:
    """student_width was a knob nothing read: old candidates drop it, a space that lists it is told why."""
    old = nas.CompressionSpec.from_dict({"sparsity_conv": 0.5, "student_width": 0.5})
    assert old == nas.CompressionSpec(sparsity_conv=0.5)
    config = nas.load_space("mobilenetv2-tiny").config.model_dump(mode="json")
    config["compression"]["student_width"] = [0.5, 1.0]
    with pytest.raises(nas.SpaceError, match="student_width was removed.*width_multiplier"):
        nas.load_space(write(tmp_path, config, "space.yaml"))
