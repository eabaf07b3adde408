"""Reliability (issue #9): bad input is one clear error, faults lose no trial, artifacts are safe to load.

What other files already cover is not repeated here: NaN trials, SIGKILL/Ctrl+C of the driver and
resume, same seed same trials (tests/test_search.py); space-file errors (tests/test_space_errors.py);
truncated, altered and foreign checkpoints and containers (tests/test_checkpoint.py,
tests/test_compress_container.py); plugins listed with their distribution and switched off
(tests/test_hardware.py). This file adds: every kind of bad input through the command line
(exit 2, one line, no traceback), property-based tests over generated spaces and experiments,
a trial that raises and one that overruns its time budget, a disk that fills up while results are
written, a scan of the sources for unsafe loading, and a load test of 8 workers on one study.
"""

from __future__ import annotations

import ast
import errno
import gzip
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nas
from nas.checkpoint import save_checkpoint
from nas.cli import main
from nas.errors import NasError
from nas.experiment import parse_experiment
from nas.search import search

from _runs import without_warnings

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "space": "mobilenetv2-tiny", "dataset": "synthetic", "objectives": ["accuracy", "madds"],
        "budget": {"trials": 3}, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 128}, "seed": 0}
CHEAP = {"name": "cheap", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
         "budget": {"trials": 6}, "sampler": "random", "seed": 1}
GOOD_SPACE = yaml.safe_load((nas.space.BUILTIN_DIR / "mobilenetv2-tiny.yaml").read_text())


def write(folder: Path, name: str, data: Any) -> str:
    path = folder / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``nas ARGV`` in this process: (exit code, stderr without the warnings)."""
    capsys.readouterr()
    code = main(argv)
    return code, without_warnings(capsys.readouterr().err)


# ----------------------------------------------------------------------------- 1. bad input: exit 2, one line


def _idx(path: Path, array: np.ndarray, kind: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _fashion_folder(folder: Path, images: np.ndarray, labels: np.ndarray) -> str:
    folder.mkdir()
    for prefix in ("train", "t10k"):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(folder)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], str]]:
    """name -> (nas arguments, a fragment the one-line error must hold)."""
    d = tmp_path_factory.mktemp("bad")
    exp = {**CHEAP, "budget": {"trials": 1}}
    lut = json.loads((ROOT / "hardware" / "reference-cpu.json").read_text())
    lut["entries"] = dict(list(sorted(lut["entries"].items()))[::2])  # half the operators are missing
    cand = nas.load_space("mobilenetv2-tiny").random(0)
    ckpt = d / "seed0.safetensors"
    save_checkpoint(ckpt, nas.build_model(cand.arch), cand)
    other = write(d, "other.json", nas.load_space("mobilenetv2-tiny").random(5).to_json())
    truncated = write(d, "truncated.safetensors", ckpt.read_bytes()[:-500])
    paths = {
        "lut": write(d, "half.json", json.dumps(lut)),
        "roof-yaml": write(d, "roof.yaml", "format: nas-roofline/1\nname: [x\n"),
        "roof-schema": write(d, "roof2.yaml", "format: nas-roofline/1\nname: x\ndevice: y\npeak_gmacs: fast\n"),
        "roof-tag": write(d, "roof3.yaml", "!!python/object/apply:os.system ['echo unsafe']\n"),
        "space-bad": write(d, "space.yaml", "family: mobilenetv2\nname: x\nstages: [\n"),
        "space-tag": write(d, "space2.yaml", "!!python/object/new:os.system ['echo unsafe']\n"),
        "binary": write(d, "binary.yaml", b"\xff\xfe\x00\x01 not text"),
        "binary-json": write(d, "binary.json", b"\xff\xfe\x00\x01 not text"),
        "fm-counts": _fashion_folder(d / "fm-counts", np.zeros((12, 28, 28), np.uint8), np.zeros(10, np.uint8)),
        "fm-flat": _fashion_folder(d / "fm-flat", np.zeros((12, 784), np.uint8), np.zeros(12, np.uint8)),
        "fm-ok": _fashion_folder(d / "fm-ok", np.zeros((12, 28, 28), np.uint8), np.zeros(12, np.uint8)),
    }

    def search(name: str, **changes: Any) -> list[str]:
        return ["search", write(d, f"{name}.yaml", {**exp, **changes}), "--out", str(d / f"run-{name}"), "--no-progress"]

    trained = {"objectives": ["accuracy", "madds"], "proxy": {"epochs": 1}}
    return {
        # experiment files
        "experiment: malformed YAML": (["search", write(d, "e1.yaml", "name: x\nspace: [\n")], "not valid YAML (line 3"),
        "experiment: not a mapping": (["search", write(d, "e2.yaml", "- a\n- b\n")], "must be a mapping"),
        "experiment: empty": (["search", write(d, "e3.yaml", "")], "must be a mapping"),
        "experiment: wrong type": (search("e4", budget={"trials": "many"}), "budget.trials"),
        "experiment: unknown field": (search("e5", speed=3), "speed: Extra inputs are not permitted"),
        "experiment: python tag": (["search", write(d, "e6.yaml", "!!python/object/apply:os.system ['echo x']\n")],
                                   "could not determine a constructor"),
        "experiment: not UTF-8": (["search", paths["binary"]], "not UTF-8"),
        "experiment: missing file": (["search", str(d / "nope.yaml")], "does not exist"),
        # unknown names, with the available ones listed
        "unknown space": (search("n1", space="mobilenetv9"), "built-in spaces: ['lenet'"),
        "unknown dataset": (search("n2", dataset="mnist-9", **trained), "available: ['cifar10', 'digits'"),
        "unknown profile": (search("n3", profiles=["pixel-99"]), "available: ['raspberry-pi-4'"),
        "unknown sampler": (search("n4", sampler="cmaes"), "'nsga2', 'nsga3', 'tpe' or 'random'"),
        "unknown objective": (search("n5", objectives=["speed"]), "choose from ['accuracy'"),
        # space and profile files named by an experiment
        "space file: malformed YAML": (search("s1", space=paths["space-bad"]), "not valid YAML at line 4"),
        "space file: python tag": (search("s2", space=paths["space-tag"]), "not valid YAML"),
        "profile: malformed YAML": (search("p1", profiles=[paths["roof-yaml"]]), "not valid YAML at line 3"),
        "profile: schema": (search("p2", profiles=[paths["roof-schema"]]), "peak_gmacs"),
        "profile: python tag": (search("p3", profiles=[paths["roof-tag"]]), "could not determine a constructor"),
        "profile: not UTF-8": (["sample", "mobilenetv2-tiny", "--profile", paths["binary-json"]], "cannot read latency table"),
        "profile: missing operators": (search("p4", profiles=[paths["lut"]]), "cannot price candidates of space"),
        # datasets
        "dataset: folder missing": (search("d1", dataset={"name": "fashion-mnist", "root": str(d / "none")}, **trained),
                                    "apt-get install dataset-fashion-mnist"),
        "dataset: image and label counts differ": (search("d2", dataset={"name": "fashion-mnist", "root": paths["fm-counts"]},
                                                          **trained), "differ in number"),
        "dataset: flat images": (search("d3", dataset={"name": "fashion-mnist", "root": paths["fm-flat"]}, **trained),
                                 "not an IDX file of the expected kind"),
        "dataset: wrong input shape for the checkpoint": (
            ["finetune", "--init", str(ckpt), "--dataset", "fashion-mnist", "--data-root", paths["fm-ok"],
             "-o", str(d / "x.safetensors")], "takes input 1x8x8 but dataset 'fashion-mnist' has images 1x28x28"),
        # checkpoints and candidates
        "checkpoint: another architecture": (["compress", other, "--weights", str(ckpt)], "weights of another architecture"),
        "checkpoint: truncated": (["finetune", "--init", truncated, "--dataset", "synthetic", "-o", str(d / "y.safetensors")],
                                  "not a readable safetensors file"),
        "candidate: not UTF-8": (["cost", paths["binary-json"]], "not UTF-8"),
        "candidate: malformed": (["cost", write(d, "c.json", '{"arch": {"input_shape": [1, 8')], "Candidate JSON is malformed"),
    }


BAD_INPUT_NAMES = [
    "experiment: malformed YAML", "experiment: not a mapping", "experiment: empty", "experiment: wrong type",
    "experiment: unknown field", "experiment: python tag", "experiment: not UTF-8", "experiment: missing file",
    "unknown space", "unknown dataset", "unknown profile", "unknown sampler", "unknown objective",
    "space file: malformed YAML", "space file: python tag", "profile: malformed YAML", "profile: schema",
    "profile: python tag", "profile: not UTF-8", "profile: missing operators", "dataset: folder missing",
    "dataset: image and label counts differ", "dataset: flat images", "dataset: wrong input shape for the checkpoint",
    "checkpoint: another architecture", "checkpoint: truncated", "candidate: not UTF-8", "candidate: malformed",
]


@pytest.mark.parametrize("name", BAD_INPUT_NAMES)
def test_bad_input_is_one_line_exit_2(name: str, bad_inputs: dict[str, tuple[list[str], str]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv, fragment = bad_inputs[name]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def test_bad_input_list_is_complete(bad_inputs: dict[str, tuple[list[str], str]]) -> None:
    assert sorted(bad_inputs) == sorted(BAD_INPUT_NAMES)


def test_unsafe_yaml_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML tag that would run a command under an unsafe loader is refused by every reader."""
    marker = tmp_path / "ran"
    payload = f"!!python/object/apply:os.system ['touch {marker}']\n"
    for argv in (["search", write(tmp_path, "e.yaml", payload)], ["sample", write(tmp_path, "s.yaml", payload)],
                 ["sample", "mobilenetv2-tiny", "--profile", write(tmp_path, "p.yaml", payload)]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1, err
    assert not marker.exists()


def test_a_real_subprocess_exits_2_with_one_line(bad_inputs: dict[str, tuple[list[str], str]]) -> None:
    argv, fragment = bad_inputs["profile: missing operators"]
    done = subprocess.run([sys.executable, "-m", "nas", *argv], capture_output=True, text=True, timeout=120)
    err = without_warnings(done.stderr)
    assert done.returncode == 2 and done.stdout == "" and err.count("\n") == 1 and fragment in err, done.stderr


# ----------------------------------------------------------------------------- 2. faults during a search


def _states(folder: Path, name: str) -> dict[int, str]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")
    return {t.number: t.state.name for t in study.trials}


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_search_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.train

    real, calls = nas.train.train, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected fault in training")
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.train, "train", flaky)
    out = tmp_path / "run"
    result = search(write(tmp_path, "exp.yaml", TINY), folder=out, progress=False)
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    assert list(trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE"] and result.trials == 3
    assert trials.loc[1, "fail_reason"] == "RuntimeError: injected fault in training"
    proxy = optuna.load_study(study_name="tiny:proxy", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in proxy.trials] == ["COMPLETE", "FAIL", "COMPLETE"]  # none left RUNNING


def test_a_trial_over_its_time_budget_is_failed_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = {**TINY, "budget": {"trials": 2}, "proxy": {"epochs": 3, "pruner": "none", "max_seconds": 1e-6}}
    result = search(write(tmp_path, "exp.yaml", exp), folder=out, progress=False)
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "FAIL"] and result.trials == 2  # the budget is used, the search ends
    assert all(r.startswith("time budget of 1e-06 s used up after epoch") for r in trials["fail_reason"])
    assert (trials["epochs"] < 3).all()


RESULTS = ("trials.csv", "trials.parquet", "front.csv", "hypervolume.csv")


def test_a_full_disk_while_writing_results_keeps_earlier_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    exp = write(tmp_path, "exp.yaml", CHEAP)
    assert run_cli(["search", exp, "--out", str(out), "--trials", "3", "--no-progress"], capsys)[0] == 0
    before = {name: (out / name).read_bytes() for name in RESULTS}

    real_fsync, writes = os.fsync, []

    def filling_up(fd: int) -> None:  # RUN/experiment.yaml (rewritten on resume) and the first results file
        writes.append(fd)             # of the session are written, then the disk is full
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", filling_up)
    code, err = run_cli(["search", exp, "--out", str(out), "--no-progress"], capsys)
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "resume" in err, err
    # Every file is whole: the new trials.csv, or the files of the first session, never half a file.
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == [0, 1, 2, 3] and set(table["state"]) == {"COMPLETE"}
    for name in RESULTS[1:]:
        assert (out / name).read_bytes() == before[name]
    assert list(pd.read_parquet(out / "trials.parquet")["number"]) == [0, 1, 2]
    # Space is freed: the same command resumes; the trial finished while the disk was full is not lost.
    assert run_cli(["search", exp, "--out", str(out), "--no-progress"], capsys)[0] == 0
    table = pd.read_csv(out / "trials.csv")
    assert list(table["number"]) == list(range(6)) and set(table["state"]) == {"COMPLETE"}
    assert list(pd.read_parquet(out / "trials.parquet")["number"]) == list(range(6))
    assert _states(out, "cheap") == {n: "COMPLETE" for n in range(6)}


# ----------------------------------------------------------------------------- 1b. generated files (hypothesis)

#: Values a mutated field may take: plausible ones (so that many files still load) and wrong ones.
VALUES = st.one_of(
    st.integers(-2, 64), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.25, math.nan]), st.none(), st.booleans(),
    st.sampled_from(["", "x", "depthwise", "grouped", "full", "none", "binary", "ternary", "off", "lenet-5"]),
    st.lists(st.integers(-1, 48), min_size=0, max_size=3),
    st.sampled_from([[1], [2, 4], [3, 5], [0.5, 1.0], [8, 16], ["depthwise"], ["grouped"], ["full", "depthwise"],
                     [[20, 50]], [[300, 100]], [1, 8, 8], [3, 8, 8], [1, 12, 12], ["off", 4], [0.0, 0.5]]),
    st.dictionaries(st.sampled_from(["conv", "linear", "channels", "depth", "x"]), st.integers(0, 32), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a YAML tree (mapping keys and list indices)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(base: dict[str, Any], edits: list[tuple[int, str, Any]]) -> dict[str, Any]:
    data = json.loads(json.dumps(base))
    for pick, action, value in edits:
        paths = _paths(data)
        if not paths:
            break
        *parents, leaf = paths[pick % len(paths)]
        node = data
        for part in parents:
            node = node[part]
        current = node[leaf]
        if action == "narrow":  # a smaller choice list or value of the same type: often still a valid file
            if isinstance(current, list) and current:
                node[leaf] = current[pick % len(current):][:2]
            elif isinstance(current, int) and not isinstance(current, bool):
                node[leaf] = current // 2
            elif isinstance(current, float):
                node[leaf] = round(current * 0.5, 3)
        elif action == "delete":
            del node[leaf]
        elif action == "extra" and isinstance(node, dict):
            node["extra_field"] = value
        else:
            node[leaf] = value
    return data


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["narrow", "narrow", "narrow", "set", "delete", "extra"]),
                           VALUES), min_size=1, max_size=3)
BASES = {name: yaml.safe_load((nas.space.BUILTIN_DIR / f"{name}.yaml").read_text()) for name in ("mobilenetv2-tiny", "lenet")}
PROPERTY = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated")


def _clear(exc: NasError, source: str) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message
    assert source in message, message  # names the file


def _check_candidate(space: nas.Space, cand: nas.Candidate) -> None:
    model = nas.build_model(cand.arch).eval()
    with torch.no_grad():
        y = model(torch.zeros(1, *cand.arch.input_shape))
    assert tuple(y.shape) == (1, cand.arch.num_classes)
    cost = nas.count(cand.arch)
    assert cost.madds > 0 and cost.params > 0
    assert nas.size_bits(cand.arch, cand.compression) > 0
    assert 0 < nas.get_profile("raspberry-pi-4").latency_ms(cand.arch) < math.inf


@PROPERTY
@given(base=st.sampled_from(sorted(BASES)), edits=EDITS)
def test_generated_space_loads_and_every_candidate_builds_or_is_rejected(
        scratch: Path, base: str, edits: list[tuple[int, str, Any]]) -> None:
    path = scratch / "space.yaml"
    path.write_text(yaml.safe_dump(_mutate(BASES[base], edits)))
    try:
        space = nas.load_space(path)
    except nas.SpaceError as exc:
        _clear(exc, str(path))
        event("rejected")
        return
    event("loaded")
    for seed in range(2):
        _check_candidate(space, space.random(seed))


GOOD_SPACE_FILE = "good-space.yaml"


def _field(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly valid values, so that many generated files load and go on to be costed."""
    return st.sampled_from(valid * 5 + invalid)


OBJECTIVES = ["accuracy", "latency_ms", "madds", "params", "size_kb", {"latency_ms": "raspberry-pi-4"}]
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": _field(["e", "run-1.b_c"], ["a b"]),
    "space": _field(["mobilenetv2-tiny", "lenet", GOOD_SPACE_FILE], ["nope", "missing.yaml", 5]),
    "dataset": _field(["synthetic", "digits", {"name": "synthetic", "split_seed": 1}],
                      ["nope", {"name": "synthetic", "extra": 1}, 7]),
    "objectives": st.one_of(st.lists(st.sampled_from(OBJECTIVES), min_size=1, max_size=3, unique_by=str),
                            st.lists(st.sampled_from(OBJECTIVES), min_size=1, max_size=2, unique_by=str),
                            st.lists(st.sampled_from([*OBJECTIVES, "speed", {"latency_ms": "pixel-99"}, {"x": "y"}]),
                                     max_size=3), st.just("accuracy")),
    "profiles": _field([["reference-cpu"], ["raspberry-pi-4", "reference-cpu"], ["raspberry-pi-4"]],
                       [[], ["pixel-99"], "reference-cpu"]),
    "constraints": _field([{}, {"madds": {"max": 1e6}}, {"accuracy": {"min": 0.5}}, {"size_kb": {"max": 100}},
                           {"latency_ms:raspberry-pi-4": {"max": 50}}],
                          [{"madds": {"min": 1}}, {"flops": {"max": 1}}, {"latency_ms": {"max": 5, "min": 1}}]),
    "budget": _field([{"trials": 3}, {"minutes": 0.5}, {"trials": 2, "minutes": 1}],
                     [{"trials": 0}, {"trials": None}, {"minutes": -1}, "x"]),
    "sampler": _field(["nsga2", "nsga3", "tpe", "random"], ["cmaes", 3]),
    "population": _field([2, 8], [1, "x"]),
    "proxy": _field([{"epochs": 1}, {"pruner": "halving"}, {"max_seconds": 5, "threads": 1}],
                    [{"epochs": 0}, {"pruner": "x"}, {"max_seconds": 0}]),
    "seed": _field([0, 7, -5], [1.5, "x"]),
    "speed": st.sampled_from([1]),  # no such field
}
EXPERIMENTS = st.fixed_dictionaries(
    {"name": FIELDS["name"], "space": FIELDS["space"]},
    optional={k: v for k, v in FIELDS.items() if k not in ("name", "space", "speed")}) | st.fixed_dictionaries(
    {"name": FIELDS["name"], "space": FIELDS["space"], "speed": FIELDS["speed"]})


@PROPERTY
@given(data=EXPERIMENTS)
def test_generated_experiment_loads_and_every_candidate_is_costed_or_is_rejected(
        scratch: Path, data: dict[str, Any]) -> None:
    from nas.search import cheap_costs, prepare

    (scratch / GOOD_SPACE_FILE).write_text(yaml.safe_dump(BASES["mobilenetv2-tiny"]))
    source = str(scratch / "experiment.yaml")
    try:
        exp = parse_experiment(yaml.safe_dump(data), source)
    except NasError as exc:
        _clear(exc, source)
        event("rejected: experiment")
        return
    try:
        setup = prepare(exp, data=False)
    except NasError as exc:  # a name or file the experiment points to: the error names it instead
        message = str(exc)
        assert message and "\n" not in message, message
        event("rejected: what it names")
        return
    event("loaded")
    study = optuna.create_study(directions=[o.direction for o in exp.objectives],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):  # through a real Optuna trial, as the search draws them
        cand = setup.space.sample(study.ask())
        costs = cheap_costs(setup, cand)
        for name in [o.name for o in exp.objectives if o.kind != "accuracy"] + [
                c.name for c in exp.constraints if c.name != "accuracy"]:
            assert math.isfinite(costs[name]) and costs[name] >= 0, (name, costs)
        _check_candidate(setup.space, cand)


# ----------------------------------------------------------------------------- 3./4. artifacts and trust


def test_artifacts_carry_their_description_and_versions(tmp_path: Path) -> None:
    from nas.checkpoint import read_checkpoint
    from nas.compress import apply_compression, save
    from nas.compress.container import read_header

    cand = nas.Candidate(nas.ArchSpec((64,), (nas.Linear(32, act="relu"), nas.Linear(10))),
                         nas.CompressionSpec(sparsity_linear=0.5, codebook_bits=4))
    model = nas.build_model(cand.arch)
    versions = {"nas": nas.__version__, "torch": torch.__version__}
    save_checkpoint(tmp_path / "m.safetensors", model, cand)
    assert read_checkpoint(tmp_path / "m.safetensors")[1]["versions"] == versions
    save(apply_compression(model, cand.compression), tmp_path / "m.nasz")
    data = (tmp_path / "m.nasz").read_bytes()
    header = read_header(data)
    assert header["versions"] == versions and nas.ArchSpec.from_dict(header["arch"]) == cand.arch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nasz", "m.safetensors"]  # no temp files
    altered = bytearray(data)
    altered[20] ^= 0x01
    with pytest.raises(nas.errors.CompressError, match="checksum"):
        read_header(bytes(altered))


UNSAFE_CALLS = {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
                "pickle.load", "pickle.loads", "marshal.loads", "eval", "exec", "torch.jit.load", "dill.load"}


def test_the_sources_load_nothing_unsafely() -> None:
    """torch.load only with weights_only=True, numpy without pickles, YAML through safe_load, no eval/exec;
    the one unpickler (CIFAR-10 batches, nas/data.py) allows only numpy arrays and builtins."""
    problems = []
    for path in sorted([*(ROOT / "nas").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "yaml") and any(
                    a.name in ("load", "loads", "unsafe_load", "full_load") for a in node.names):
                problems.append(f"{path.name}:{node.lineno}: from {node.module} import load")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
            if name in UNSAFE_CALLS:
                problems.append(where)
            elif name == "torch.load" and keywords.get("weights_only") != "True":
                problems.append(where + " without weights_only=True")
            elif name in ("np.load", "numpy.load") and keywords.get("allow_pickle", "False") != "False":
                problems.append(where + " with allow_pickle")
            elif name.endswith("Unpickler") and name != "_CifarUnpickler":
                problems.append(where)
    assert problems == []
    text = (ROOT / "nas" / "data.py").read_text()
    assert "def find_class" in text and "refusing to unpickle" in text  # the CIFAR unpickler's allow-list


# ----------------------------------------------------------------------------- 5. determinism, 6. load


def test_workers_started_at_once_all_open_a_fresh_shared_sqlite_study(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _postgres import open_at_once

    for done in open_at_once(f"sqlite:///{tmp_path / 'shared.db'}"):
        assert done.returncode == 0, done.stderr


def test_same_seed_same_trials_and_front_with_training(tmp_path: Path) -> None:
    """One worker, the same experiment and seed: the same candidates, accuracies and front (the cheap-only
    case is in tests/test_search.py; here proxy training is part of every trial)."""
    exp = write(tmp_path, "exp.yaml", TINY)
    a = search(exp, folder=tmp_path / "a", progress=False).frame
    b = search(exp, folder=tmp_path / "b", progress=False).frame
    cols = [c for c in a.columns if c.startswith("param:")] + ["accuracy", "madds", "history", "pareto"]
    assert set(a["state"]) == {"COMPLETE"}
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.mark.slow
def test_eight_workers_two_hundred_cheap_trials_each_accounted_for_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = write(tmp_path, "load.yaml", {"name": "load", "space": "mobilenetv2-tiny", "objectives": ["latency_ms", "size_kb"],
                                        "budget": {"trials": 200}, "sampler": "nsga2", "population": 16, "seed": 0})
    done = subprocess.run([sys.executable, "-m", "nas", "search", exp, "--out", str(out), "--workers", "8", "--no-progress"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="load", storage=f"sqlite:///{out / 'study.db'}")
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and 200 <= len(numbers) <= 207  # each worker may overshoot by one
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}  # none RUNNING, WAITING or lost
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["number"]) == numbers and table["number"].is_unique
    assert table["worker"].nunique() >= 2
