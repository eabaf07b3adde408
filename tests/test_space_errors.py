"""A bad space file gets one clear error naming the file, the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import nas

GOOD = yaml.safe_load((nas.space.BUILTIN_DIR / "mobilenetv2-tiny.yaml").read_text())


def write(tmp_path: Path, data: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def variant(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    return data


def error_for(tmp_path: Path, data: object) -> str:
    path = write(tmp_path, data)
    with pytest.raises(nas.SpaceError) as info:
        nas.load_space(path)
    message = str(info.value)
    assert str(path) in message  # names the file
    assert "\n" not in message and "Traceback" not in message
    return message


def test_the_good_file_loads(tmp_path: Path) -> None:
    assert nas.load_space(write(tmp_path, GOOD)).name == "mobilenetv2-tiny"


def test_unknown_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(stages__1__kernal=[3]))
    assert "stages.1.kernal" in message and "Extra inputs are not permitted" in message


def test_wrong_type(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(stages__2__width="wide"))
    assert "stages.2.width" in message and "'wide'" in message


def test_empty_choice_list(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(stages__0__expansion=[]))
    assert "stages.0.expansion" in message and "at least 1 item" in message


def test_value_outside_allowed_set_lists_the_allowed_values(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(stages__1__conv=["depthwise", "dilated"]))
    assert "stages.1.conv.1" in message and "'depthwise', 'grouped' or 'full'" in message
    message = error_for(tmp_path, variant(stages__1__kernel=[3, 4]))
    assert "stages.1.kernel.1" in message and "1, 3, 5 or 7" in message


def test_groups_not_dividing_channels(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(stages__1__groups=[2, 5]))
    assert "stages[1].groups" in message and "[5]" in message and "do not divide the hidden width" in message


def test_grouped_conv_without_groups_and_groups_without_grouped(tmp_path: Path) -> None:
    assert "groups must list" in error_for(tmp_path, variant(stages__1__groups=[]))
    assert "has no 'grouped'" in error_for(tmp_path, variant(stages__3__groups=[2]))


def test_missing_field(tmp_path: Path) -> None:
    data = variant()
    del data["stem"]
    assert "stem: Field required" in error_for(tmp_path, data)


def test_unknown_family_lists_families(tmp_path: Path) -> None:
    message = error_for(tmp_path, variant(family="resnet"))
    assert "family" in message and "'mobilenetv2'" in message and "'lenet'" in message


def test_compression_knobs_are_validated(tmp_path: Path) -> None:
    assert "compression.sparsity" in error_for(tmp_path, variant(compression={"sparsity": [1.5]}))
    message = error_for(tmp_path, variant(compression={"quantization": ["none", "int3"]}))
    assert "'none', 'binary', 'ternary' or 'int8'" in message


def test_off_means_no_codebook(tmp_path: Path) -> None:
    text = (nas.space.BUILTIN_DIR / "mobilenetv2-tiny.yaml").read_text()
    assert "codebook_bits: [off, 4, 5, 8]" in text
    space = nas.load_space(write(tmp_path, text.replace("codebook_bits: [off, 4, 5, 8]", "codebook_bits: [off]")))
    assert space.config.compression.codebook_bits == [None]


def test_malformed_yaml_says_where(tmp_path: Path) -> None:
    message = error_for(tmp_path, "name: x\nstages: [1, 2\n")
    assert "not valid YAML" in message and "line" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a YAML mapping" in error_for(tmp_path, "- just\n- a list\n")


def test_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(nas.SpaceError, match=r"unknown search space 'mobilenet-v9'.*'mobilenetv2'"):
        nas.load_space("mobilenet-v9")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(nas.SpaceError, match="cannot read search space file"):
        nas.load_space(tmp_path / "nope.yaml")


def test_lenet_kernel_too_large_for_input(tmp_path: Path) -> None:
    data = yaml.safe_load((nas.space.BUILTIN_DIR / "lenet.yaml").read_text())
    data["input_shape"] = [1, 12, 12]
    assert "does not fit input 12x12" in error_for(tmp_path, data)


def test_spec_errors_are_clear() -> None:
    with pytest.raises(nas.SpecError, match=r"CompressionSpec.sparsity_conv must satisfy 0 <= value < 1, but got 1.2"):
        nas.CompressionSpec(sparsity_conv=1.2)
    with pytest.raises(nas.SpecError, match=r"unknown layer type 'attention'"):
        nas.Candidate.from_dict({"arch": {"input_shape": [3, 8, 8], "layers": [{"type": "attention"}]}})
    with pytest.raises(nas.SpecError, match=r"groups=3 must divide both in_channels=8"):
        nas.ops(nas.ArchSpec((8, 4, 4), (nas.Conv(6, groups=3), nas.GlobalAvgPool(), nas.Linear(2))))
    with pytest.raises(nas.SpecError, match="needs a flat input"):
        nas.ops(nas.ArchSpec((3, 4, 4), (nas.Linear(2),)))


def ssdlite() -> dict:
    return yaml.safe_load((nas.space.BUILTIN_DIR / "ssdlite-mobilenetv2.yaml").read_text())


def test_detector_needs_one_anchor_count_per_feature_map(tmp_path: Path) -> None:
    data = ssdlite()
    data["detector"]["anchors"] = [3, 6, 6]
    message = error_for(tmp_path, data)
    assert "detector" in message and "2 sources + 4 extras = 6" in message and "has 3" in message


def test_detector_source_must_exist_in_every_choice(tmp_path: Path) -> None:
    data = ssdlite()
    data["detector"]["sources"][0] = {"at": "expansion", "stage": 9}
    assert "detector.sources.0.stage must be in [0, 7), got 9" in error_for(tmp_path, data)
    data["detector"]["sources"][0] = {"at": "output", "stage": 6, "block": 1}
    assert "block 1 does not exist" in error_for(tmp_path, data)
    data["detector"]["sources"][0] = {"at": "expansion", "stage": 0}
    assert "expansion allows 1" in error_for(tmp_path, data)


def test_detector_and_classifier_exclude_each_other(tmp_path: Path) -> None:
    data = ssdlite()
    data["classifier"] = True
    assert "either 'classifier: true' or a 'detector'" in error_for(tmp_path, data)


def test_names_with_dots_resolve_to_builtins() -> None:
    assert nas.load_space("mobilenetv2-1.0-224").is_fixed
    with pytest.raises(nas.SpaceError, match="unknown search space 'mobilenetv2-9.0-224'"):
        nas.load_space("mobilenetv2-9.0-224")


def test_detector_spec_errors() -> None:
    with pytest.raises(nas.SpecError, match="one entry per feature map"):
        nas.spec.Detector(81, (3, 6), ("layers.0",), (512,) * 2)
    arch = nas.ArchSpec((3, 32, 32), (nas.Conv(8, stride=2), nas.Conv(16, stride=2)),
                        detector=nas.spec.Detector(5, (3,), ("layers.7",)))
    with pytest.raises(nas.SpecError, match="no op named 'layers.7'"):
        nas.ops(arch)
