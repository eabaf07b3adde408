"""int8 latency: table entries measured with onnxruntime, picked by ``arch.precision``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

import nas
from nas.errors import HardwareError
from nas.hardware import LutProfile, get_profile
from nas.hardware.lut import layer_key
from nas.hardware.measure import build_table, calibrate
from nas.hardware.ort import check_runtime
from nas.search.setup import check_coverage

TINY_SPACE = {
    "name": "int8-test", "family": "mobilenetv2", "input_shape": [1, 8, 8], "num_classes": 4,
    "width_multiplier": [1.0], "stem": {"channels": 8},
    "stages": [{"depth": [1], "width": [8, 16], "expansion": [2], "kernel": [3], "stride": 2}],
    "head": {"channels": [16]},
    "compression": {"quantization": ["none", "int8"]},
}


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> nas.Space:
    path = tmp_path_factory.mktemp("space") / "int8-test.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return nas.load_space(path)


@pytest.fixture(scope="module")
def tables(space: nas.Space, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a float32 torch table, the same table with int8 entries measured in onnxruntime)."""
    tmp = tmp_path_factory.mktemp("hw")
    fp32 = tmp / "tiny.json"
    build_table(space, "tiny", fp32, rounds=2, target_ms=0.2, log=lambda _: None)
    both = tmp / "tiny-int8.json"
    shutil.copy(fp32, both)
    build_table(space, "tiny", both, rounds=2, target_ms=0.2, log=lambda _: None, runtime="onnxruntime",
                precision="int8")
    return fp32, both


@pytest.mark.slow
def test_int8_entries_sit_beside_the_float32_ones(tables: tuple[Path, Path], space: nas.Space) -> None:
    fp32, both = tables
    profile = LutProfile.load(both)
    before = LutProfile.load(fp32)
    assert profile.data.entries == before.data.entries and profile.data.framework == "torch"
    section = profile.data.precisions["int8"]
    assert section.framework == "onnxruntime" and set(section.entries) == set(before.data.entries)
    assert "InferenceSession" in section.method.context
    arch = space.random(0).arch
    int8 = dataclasses.replace(arch, precision="int8")
    assert profile.latency_ms(arch) == before.latency_ms(arch)
    expected = sum(section.entries[layer_key(g)].min_ms for g in nas.hardware.lut.layer_groups(nas.ops(int8)).values())
    assert profile.latency_ms(int8) == pytest.approx(expected)
    assert profile.latency_ms(int8) != profile.latency_ms(arch)
    assert profile.provenance()["precisions"]["int8"]["entries"] == len(section.entries)


@pytest.mark.slow
def test_a_table_without_int8_says_how_to_build_it(tables: tuple[Path, Path], space: nas.Space) -> None:
    fp32, both = tables
    int8 = dataclasses.replace(space.random(0).arch, precision="int8")
    with pytest.raises(HardwareError, match="--runtime onnxruntime --precision int8") as info:
        LutProfile.load(fp32).latency_ms(int8)
    assert "\n" not in str(info.value)
    with pytest.raises(HardwareError, match="cannot price candidates of space 'int8-test'.*no int8 entries"):
        check_coverage(space, {"tiny": LutProfile.load(fp32)})
    check_coverage(space, {"tiny": LutProfile.load(both)})  # int8 entries: covered


@pytest.mark.slow
def test_int8_calibration_is_fitted_on_int8_networks(tables: tuple[Path, Path], space: nas.Space,
                                                     tmp_path: Path) -> None:
    _, both = tables
    path = tmp_path / "cal.json"
    shutil.copy(both, path)
    profile = LutProfile.load(path)
    fits = calibrate(profile, space, n=2, rounds=2, precision="int8")
    assert set(fits) == {"1x8x8"}
    data = json.loads(path.read_text())
    assert data["precisions"]["int8"]["calibrations"]["1x8x8"]["networks"] == 2
    assert data["calibrations"] == {}  # the float32 entries keep theirs (none)


def test_runtime_and_precision_are_checked() -> None:
    with pytest.raises(HardwareError, match="runtime 'torch' runs \\['float32'\\], not 'int8'"):
        check_runtime("torch", "int8")
    with pytest.raises(HardwareError, match="runtime must be one of"):
        check_runtime("tflite", "int8")


def test_shipped_tables_are_float32_and_load_unchanged() -> None:
    profile = get_profile("reference-cpu")
    assert isinstance(profile, LutProfile) and profile.data.precisions == {}
    arch = nas.load_space("mobilenetv2").random(0).arch
    assert profile.latency_ms(arch) > 0
    with pytest.raises(HardwareError, match="no int8 entries"):
        profile.latency_ms(dataclasses.replace(arch, precision="int8"))


def test_rooflines_price_int8_bytes_and_stated_int8_throughput() -> None:
    from nas.hardware import RooflineProfile
    from nas.hardware.roofline import RooflineFile

    arch = nas.load_space("mobilenetv2").random(0).arch
    int8 = dataclasses.replace(arch, precision="int8")
    pi = get_profile("raspberry-pi-4")
    assert pi.latency_ms(int8) < pi.latency_ms(arch)  # a quarter of the bytes, the same MAC rate (none stated)
    spec = pi.spec.model_copy(update={"int8_peak_gmacs": 4 * pi.spec.peak_gmacs})
    faster = RooflineProfile(RooflineFile.model_validate(spec.model_dump()))
    assert faster.latency_ms(int8) < pi.latency_ms(int8) and faster.latency_ms(arch) == pi.latency_ms(arch)
    mcu = get_profile("stm32h743-int8")  # already int8: both precisions priced alike
    assert mcu.latency_ms(int8) == mcu.latency_ms(arch)
