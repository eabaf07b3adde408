"""Hardware profiles: tables built and resumed, clear errors, roofline models, real plugins."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import nas
from nas.errors import HardwareError
from nas.hardware import LutProfile, RooflineProfile, get_profile
from nas.hardware.lut import _Measured, layer_groups, layer_key
from nas.hardware.measure import build_table
from nas.hardware.testing import check_profile

TINY_SPACE = {
    "name": "hw-test", "family": "mobilenetv2", "input_shape": [1, 8, 8], "num_classes": 4,
    "width_multiplier": [1.0], "stem": {"channels": 8},
    "stages": [{"depth": [1, 2], "width": [8, 16], "expansion": [2], "kernel": [3, 5], "stride": 2}],
    "head": {"channels": [16]},
}


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> nas.Space:
    path = tmp_path_factory.mktemp("space") / "hw-test.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return nas.load_space(path)


@pytest.fixture(scope="module")
def table(tiny_space: nas.Space, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hw") / "tiny-cpu.json"
    build_table(tiny_space, "tiny-cpu", path, rounds=2, target_ms=0.2, log=lambda _: None)
    return path


def test_table_covers_every_layer_of_the_space(table: Path, tiny_space: nas.Space) -> None:
    profile = LutProfile.load(table)
    keys = {layer_key(nas.graph.layer_ops(layer, "layers.0", shape)[0]) for layer, shape in tiny_space.layer_inputs()}
    assert set(profile.data.entries) == keys
    assert profile.data.spaces == {"hw-test": [1, 8, 8]}
    assert profile.data.threads == 1 and profile.data.framework == "torch"
    for seed in range(20):
        prediction = profile.predict(tiny_space.random(seed).arch)
        assert prediction.ms > 0 and not prediction.interpolated
        assert prediction.ms == pytest.approx(sum(ms for _, ms in prediction.layers))  # not calibrated yet
        assert [name for name, _ in prediction.layers] == list(layer_groups(nas.ops(tiny_space.random(seed).arch)))


def test_build_resumes_and_keeps_measured_entries(table: Path, tiny_space: nas.Space, tmp_path: Path) -> None:
    data = json.loads(table.read_text())
    kept = dict(list(data["entries"].items())[: len(data["entries"]) // 2])
    data["entries"] = kept
    partial = tmp_path / "tiny-cpu.json"
    partial.write_text(json.dumps(data))
    messages: list[str] = []
    profile = build_table(tiny_space, "tiny-cpu", partial, rounds=2, target_ms=0.2, log=messages.append)
    total = len(json.loads(table.read_text())["entries"])
    assert f"measuring {total - len(kept)} layer signatures" in messages[0]
    assert re.search(r"about \d+ s\b|about [\d.]+ min\b", messages[0])  # says how long before it starts
    assert len(profile.data.entries) == total
    assert all(profile.data.entries[k].model_dump() == v for k, v in kept.items())  # untouched


def test_build_refuses_other_settings(table: Path, tiny_space: nas.Space) -> None:
    with pytest.raises(HardwareError, match="measured with threads=1, batch=1"):
        build_table(tiny_space, "tiny-cpu", table, batch=2, rounds=2, log=lambda _: None)


def test_missing_layer_names_signature_and_command(table: Path) -> None:
    profile = LutProfile.load(table)
    other = nas.load_space("mobilenetv2-tiny").random(0).arch
    with pytest.raises(HardwareError, match=r"no entry for \d+ layer\(s\).*nas hardware build --space SPACE --name tiny-cpu"):
        profile.predict(other)


def test_interpolation_is_opt_in_and_reported(table: Path, tiny_space: nas.Space) -> None:
    profile = LutProfile.load(table)
    wider = tiny_space.config.model_dump()
    wider["stages"][0]["width"] = [24]
    arch = nas.Space(type(tiny_space.config).model_validate(wider)).random(0).arch
    with pytest.raises(HardwareError):
        profile.predict(arch)
    prediction = profile.predict(arch, interpolate=True)
    assert prediction.interpolated and prediction.ms > 0
    assert set(prediction.interpolated) <= {name for name, _ in prediction.layers}


def test_calibration_is_applied(table: Path, tiny_space: nas.Space, tmp_path: Path) -> None:
    data = json.loads(table.read_text())
    data["calibrations"] = {"1x8x8": {"intercept_ms": 0.5, "slope": 2.0, "networks": 10, "space": "hw-test"}}
    path = tmp_path / "calibrated.json"
    path.write_text(json.dumps(data))
    profile = get_profile(path)
    arch = tiny_space.random(1).arch
    p = profile.predict(arch)
    assert p.ms == pytest.approx(0.5 + 2.0 * p.naive_ms)
    assert profile.latency_ms(arch) == p.ms
    other = nas.ArchSpec((1, 16, 16), arch.layers)  # no calibration at this input shape: the plain sum
    assert profile.calibration_for(other) is None

@pytest.mark.slow
def test_calibrate_and_validate_on_measured_networks(table: Path, tiny_space: nas.Space, tmp_path: Path) -> None:
    from nas.hardware.measure import calibrate, validate

    profile = LutProfile.load(table)
    profile.path = str(tmp_path / "copy.json")
    fits = calibrate(profile, tiny_space, n=6, rounds=2)
    assert fits["1x8x8"].networks == 6 and LutProfile.load(tmp_path / "copy.json").data.calibrations == fits
    result = validate(profile, tiny_space, n=6, rounds=2)
    assert set(result["calibrated"]) == {"within_10pct", "mape", "spearman"}
    assert len(result["measured_ms"]) == 6 and all(m > 0 for m in result["measured_ms"])
    assert result["noise_floor_median_pct"] >= 0


def test_bad_profile_files_are_clear(tmp_path: Path, table: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nas-lut/0"}')
    with pytest.raises(HardwareError, match="format must be 'nas-lut/1', but got 'nas-lut/0'"):
        get_profile(bad)
    data = json.loads(table.read_text())
    data["threads"] = 0
    bad.write_text(json.dumps(data))
    with pytest.raises(HardwareError, match="threads: Input should be greater than or equal to 1"):
        get_profile(bad)
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="cannot read latency table"):
        get_profile(bad)
    roof = tmp_path / "roof.yaml"
    roof.write_text("format: nas-roofline/1\nname: x\ndevice: y\npeak_gmacs: -1\nbandwidth_gbps: 1\nsources: [a]\n")
    with pytest.raises(HardwareError, match="peak_gmacs: Input should be greater than 0"):
        get_profile(roof)


def test_unknown_profile_lists_available() -> None:
    with pytest.raises(HardwareError, match=r"unknown hardware profile 'pixel-99'; available: \[.*'raspberry-pi-4'"):
        get_profile("pixel-99")


@pytest.mark.parametrize("name", ["raspberry-pi-4", "stm32h743-int8"])
def test_roofline_profiles_conform_and_cite_sources(name: str) -> None:
    profile = get_profile(name)
    assert isinstance(profile, RooflineProfile) and profile.kind == "model-based"
    assert profile.provenance()["sources"]
    check_profile(profile)
    # Compute-bound at the published MobileNetV2 size: MAdds / peak is a lower bound.
    arch = nas.load_space("mobilenetv2-1.0-224").random(0).arch
    assert profile.latency_ms(arch) >= nas.count(arch).madds / (profile.spec.peak_gmacs * 1e9) * 1e3


def test_measured_table_conforms(table: Path, tiny_space: nas.Space) -> None:
    profile = LutProfile.load(table)
    check_profile(profile, spaces=(tiny_space.source,), scaling=False)
    assert profile.kind == "measured" and profile.provenance()["entries"] == len(profile.data.entries)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin really installed (pip, into a folder put on PYTHONPATH), entry points and all."""
    target = tmp_path_factory.mktemp("site")
    source = Path(__file__).parent / "plugins" / "nas-hw-example"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, timeout=300)
    return target


def _nas(plugin_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(plugin_path), **env}
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, env=environ,
                          timeout=120)


def test_plugin_is_listed_with_its_distribution(plugin_path: Path) -> None:
    result = _nas(plugin_path, "hardware", "list")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("example-board"))
    assert "plugin from nas-hw-example 0.1.0" in line and "nas_hw_example:ExampleBoard" in line
    assert "raspberry-pi-4" in result.stdout
    disabled = _nas(plugin_path, "hardware", "list", NAS_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "example-board" not in disabled.stdout and "raspberry-pi-4" in disabled.stdout
    flag = _nas(plugin_path, "hardware", "list", "--no-plugins")
    assert "example-board" not in flag.stdout


def test_plugin_profile_loads_and_conforms(plugin_path: Path) -> None:
    code = ("import nas; from nas.hardware import get_profile; from nas.hardware.testing import check_profile;"
            "p = get_profile('example-board'); check_profile(p);"
            "print(type(p).__module__, p.latency_ms(nas.load_space('mobilenetv2-tiny').random(0).arch))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(plugin_path)})
    assert result.returncode == 0, result.stderr
    module, ms = result.stdout.split()
    assert module == "nas_hw_example" and float(ms) > 0
    broken = subprocess.run([sys.executable, "-c", "from nas.hardware import get_profile; get_profile('broken-board')"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(plugin_path)})
    assert "plugin 'broken-board'" in broken.stderr and "from nas-hw-example 0.1.0" in broken.stderr
    assert "must provide a nas.hardware.HardwareProfile" in broken.stderr
    off = subprocess.run([sys.executable, "-c", "from nas.hardware import get_profile; get_profile('example-board')"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(plugin_path), "NAS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "plugins are disabled" in off.stderr


@pytest.mark.parametrize("profile_name", [p.name for p in nas.available_profiles(plugins=False) if p.kind == "measured"])
def test_every_shipped_table_covers_every_builtin_classifier_space(profile_name: str) -> None:
    """Registry test: each shipped measured table prices every built-in space's networks
    (detector heads are priced by the roofline profiles only), calibrated at their input shape."""
    profile = get_profile(profile_name)
    assert isinstance(profile, LutProfile)
    for name in nas.builtin_spaces():
        space = nas.load_space(name)
        for seed in range(1 if space.is_fixed else 5):
            arch = space.random(seed).arch
            if arch.detector is not None:
                continue
            assert profile.missing(arch) == [], (name, seed)
            assert profile.calibration_for(arch) is not None, (name, arch.input_shape)
            assert profile.latency_ms(arch) > 0


def test_factorized_layers_are_measured_and_derived(tiny_space: nas.Space, tmp_path: Path) -> None:
    """A space that samples low rank gets its factorized layers measured; a table without them
    prices a factorized layer from its dense one, reported as interpolated, and cheaper."""
    config = {**TINY_SPACE, "name": "hw-lowrank", "compression": {"lowrank_ratio": [None, 0.25]}}
    (tmp_path / "hw-lowrank.yaml").write_text(yaml.safe_dump(config))
    space = nas.load_space(tmp_path / "hw-lowrank.yaml")
    path = tmp_path / "lowrank-cpu.json"
    profile = build_table(space, "lowrank-cpu", path, rounds=2, target_ms=0.2, log=lambda _: None)
    arch = nas.compressed(space.random(0).arch, nas.CompressionSpec(lowrank_ratio=0.25))
    assert any(":k3x1:" in key for key in profile.data.entries) and any(":k1x3:" in key for key in profile.data.entries)
    exact = profile.predict(arch)  # strict: every factorized layer was measured
    assert not exact.interpolated and exact.ms > 0
    dense_only = LutProfile.load(path)
    factorized = re.compile(r":k\d+x\d+:")  # a k x 1 or 1 x k conv
    dense_only.data.entries = {k: v for k, v in dense_only.data.entries.items() if not factorized.search(k)}
    with pytest.raises(HardwareError):
        dense_only.predict(arch)
    derived = dense_only.predict(arch, interpolate=True)
    assert derived.interpolated and dense_only.latency_ms(arch) == derived.ms
    dense = dict(dense_only.predict(space.random(0).arch).layers)
    assert all(ms < dense[name] for name, ms in derived.layers if name in derived.interpolated)  # fewer MAdds


def test_memoized_latency_is_the_prediction() -> None:
    """latency_ms memoizes per layer; it prices exactly as predict(interpolate=True), pruned pooling included."""
    profile = get_profile("reference-cpu")
    space = nas.load_space("mobilenetv2-tiny")
    pruned = 0
    for seed in range(40):
        running = nas.compressed(space.random(seed).arch, space.random(seed).compression)
        pruned += space.random(seed).compression.channel_ratio > 0
        for _ in range(2):  # the second call reads the memo
            assert profile.latency_ms(running) == profile.predict(running, interpolate=True).ms
    assert pruned > 0
    assert {space.random(seed).compression.channel_ratio for seed in range(40)} == {0.0, 0.25, 0.5}


def test_interpolation_finds_the_entry_a_linear_scan_finds() -> None:
    """The bisection over a structure's measured layers picks what ``min`` over all of them picks: the
    nearest in log-work, the first in table order among equally near ones (repeated works included)."""
    import math
    import random

    rng = random.Random(0)
    entries = [(rng.choice([0, 5, 96, 96, 1000, 4096, 10**5, 3 * 10**6]) + rng.randint(0, 3), rng.random())
               for _ in range(40)]
    measured = _Measured(entries)
    for work in [0, 1, 6, 95, 97, 1001, 2048, 4099, 10**5 + 1, 10**7, *(rng.randint(0, 10**7) for _ in range(300))]:
        expected = min(entries, key=lambda e: abs(math.log((e[0] + 1) / (work + 1))))
        assert measured.nearest(work) == expected, work
