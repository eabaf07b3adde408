"""Every built-in space samples, builds, runs and agrees with its op list."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

import nas
from nas.graph import OP_KINDS


def test_builtin_spaces_are_shipped() -> None:
    assert {"mobilenetv2", "mobilenetv2-tiny", "lenet", "mobilenetv2-imagenet"} <= set(nas.builtin_spaces())


def distinct_seed(space: nas.Space, seed: int) -> nas.Candidate:
    """The candidate for ``seed``; a fixed space (one point) is exercised once, not per seed."""
    if space.is_fixed and seed > 0:
        pytest.skip("fixed architecture: one candidate")
    return space.random(seed)


@pytest.mark.parametrize("seed", range(4))
def test_random_candidate_builds_runs_and_backprops(runnable_space: nas.Space, seed: int) -> None:
    cand = distinct_seed(runnable_space, seed)
    model = nas.build_model(cand.arch)
    x = torch.randn(2, *cand.arch.input_shape)
    y = model(x)
    if cand.arch.detector is None:
        assert y.shape == (2, cand.arch.num_classes)
    else:  # (boxes, scores): every anchor of every feature map, 4 box offsets and num_classes scores each
        heads = [op for op in nas.ops(cand.arch)  # the last conv of each head (not the depthwise one)
                 if op.name.startswith("heads.") and op.kind == "conv" and op.groups == 1]
        boxes = sum(op.cout * op.out_h * op.out_w for op in heads if ".box." in op.name)
        scores = sum(op.cout * op.out_h * op.out_w for op in heads if ".cls." in op.name)
        assert y[0].shape == (2, boxes) and y[1].shape == (2, scores)
        assert boxes // 4 == scores // cand.arch.num_classes  # the same anchors for boxes and classes
        y = torch.cat(y, 1)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("seed", range(4))
def test_module_shapes_match_op_list(runnable_space: nas.Space, seed: int) -> None:
    arch = distinct_seed(runnable_space, seed).arch
    model = nas.build_model(arch).eval()
    modules = dict(model.named_modules())
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, (tuple(i[0].shape), tuple(o.shape))))
        for name in modules if name and not list(modules[name].children())
    ]
    with torch.no_grad():
        model(torch.zeros(1, *arch.input_shape))
    for h in hooks:
        h.remove()
    op_list = [op for op in nas.ops(arch) if op.kind != "add"]
    assert sorted(seen) == sorted(op.name for op in op_list)  # one op per leaf module, same names
    for op in op_list:
        assert op.kind in OP_KINDS
        shape_in, shape_out = seen[op.name]
        if op.kind in ("conv", "bn", "relu", "relu6", "maxpool", "gap") and len(shape_in) == 4:
            assert shape_in == (1, op.cin, op.h, op.w), op
        if op.kind == "conv":
            assert shape_out == (1, op.cout, op.out_h, op.out_w), op
        if op.kind == "linear":
            assert shape_in == (1, op.cin) and shape_out == (1, op.cout), op
    adds = [op for op in nas.ops(arch) if op.kind == "add"]
    assert len(adds) == sum(isinstance(m, nas.models.Residual) for m in model.modules())


def test_candidate_json_round_trip(space: nas.Space) -> None:
    for seed in range(20):
        cand = space.random(seed)
        text = cand.to_json()
        again = nas.Candidate.from_json(text)
        assert again == cand
        assert hash(again) == hash(cand)
        assert json.loads(again.to_json()) == json.loads(text)


def test_random_is_deterministic_per_seed(space: nas.Space) -> None:
    assert space.random(7) == space.random(7)
    assert (len({space.random(s) for s in range(30)}) == 1) == space.is_fixed


def test_sampling_through_a_real_optuna_trial(space: nas.Space) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn: list[nas.Candidate] = []

    def objective(trial: optuna.Trial) -> float:
        cand = space.sample(trial)
        drawn.append(cand)
        return float(nas.count(cand.arch).madds)

    study.optimize(objective, n_trials=15)
    assert len(drawn) == 15 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial, cand in zip(study.trials, drawn):
        # Replaying the recorded parameters reproduces the candidate exactly.
        replay = space.sample(optuna.trial.FixedTrial(trial.params))
        assert replay == cand
        # Conditional parameters: block decisions exist only for blocks the depth keeps.
        for key, depth in trial.params.items():
            if key.endswith(".depth"):
                stage = key.split(".")[0]
                blocks = {k.split(".")[1] for k in trial.params if k.startswith(stage + ".b")}
                assert blocks == {f"b{j}" for j in range(depth)}
        # The codebook is drawn only when weights are not binary/ternary.
        assert ("compression.codebook_bits" in trial.params) == (cand.compression.quantization == "none")


def test_with_input_changes_resolution_and_classes() -> None:
    space = nas.load_space("mobilenetv2").with_input((1, 28, 28), 7)
    arch = space.random(0).arch
    assert arch.input_shape == (1, 28, 28) and arch.num_classes == 7
    assert nas.build_model(arch)(torch.zeros(1, 1, 28, 28)).shape == (1, 7)


def test_lenet_reference_sizes_match_deep_compression() -> None:
    """LeNet-300-100 has 266,610 parameters and Caffe's LeNet-5 431,080 (Han et al. 2016, Table 2/3: 267K, 431K)."""
    space = nas.load_space("lenet")
    fixed = {"mlp.hidden": "300-100", "conv.channels": "20-50", "conv.kernel": 5, "conv.fc": "500"}
    mlp = space.config.build(lambda name, opts: fixed.get(name, "lenet-300-100" if name == "variant" else opts[0]))
    conv = space.config.build(lambda name, opts: fixed.get(name, "lenet-5" if name == "variant" else opts[0]))
    assert nas.count(mlp).params == 266_610
    assert nas.count(conv).params == 431_080


def test_layer_inputs_cover_every_sampled_layer(space: nas.Space) -> None:
    """What `nas hardware build` measures: every (layer, input) that any network of the space has."""
    every = space.layer_inputs()
    for seed in range(1 if space.is_fixed else 100):
        arch = space.random(seed).arch
        shape = arch.input_shape
        for layer in arch.layers:
            assert (layer, shape) in every, (seed, layer, shape)
            shape = nas.graph.layer_ops(layer, "", shape)[1]
    if space.is_fixed:
        assert len(every) <= len(space.random(0).arch.layers)
