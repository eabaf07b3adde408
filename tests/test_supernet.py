"""The weight-sharing supernet (nas.supernet): extraction, reachability, batch-norm recalibration, training with
resume, and a search with ``evaluator: supernet`` through the nas command."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors import safe_open

import nas
from nas.checkpoint import load_checkpoint
from nas.space import Space, make_divisible
from nas.supernet import Supernet, SupernetError, compressed_tensors, extreme, layout, load_supernet, recalibrate
from tests._runs import nas_cmd, write

SEARCHABLE = ("mobilenetv2", "mobilenetv2-tiny", "mobilenetv2-imagenet")
#: The larger spaces' networks take tens of seconds to build and run on a loaded 2-core machine.
SPACES = [pytest.param(name, marks=pytest.mark.slow) if name != "mobilenetv2-tiny" else name for name in SEARCHABLE]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

#: A small space of the same family, with every kind of elastic choice (depth 0, grouped convs, kernels).
MINI = {
    "name": "mini", "family": "mobilenetv2", "input_shape": [1, 8, 8], "num_classes": 10,
    "width_multiplier": [0.5, 1.0], "channel_divisor": 8, "stem": {"channels": 8, "kernel": 3, "stride": 1},
    "stages": [
        {"depth": [1, 2], "width": [8, 16], "expansion": [2, 4], "kernel": [3, 5], "conv": ["depthwise", "grouped"],
         "groups": [2], "stride": 2},
        {"depth": [0, 1], "width": [16], "expansion": [2], "kernel": [3], "stride": 2},
    ],
    "head": {"channels": [32]},
    "compression": {"sparsity": [0.0, 0.5], "quantization": ["none", "binary"], "codebook_bits": ["off", 4]},
}


def _space(name: str) -> Space:
    return nas.load_space(name)


def _scramble(net: Supernet, seed: int) -> None:
    """Random batch-norm statistics and kernel transforms, so that a slice taken wrongly shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for p in net.transforms():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", SPACES)
def test_extracted_child_equals_supernet_forward(name: str) -> None:
    space = _space(name)
    net = Supernet(space).eval()
    _scramble(net, 0)
    x = torch.randn(2, *space.input_shape, generator=torch.Generator().manual_seed(1))
    archs = [space.random(seed).arch for seed in range(3)] + [extreme(space, True), extreme(space, False)]
    for arch in archs:
        model = net.extract(arch)
        assert type(model) is type(nas.build_model(arch))
        assert [n for n, _ in model.named_parameters()] == [n for n, _ in nas.build_model(arch).named_parameters()]
        with torch.no_grad():
            torch.testing.assert_close(model(x), net(x, arch), atol=1e-5, rtol=0)


def test_children_share_weights_and_training_one_changes_the_others() -> None:
    space = _space("mobilenetv2-tiny")
    net = Supernet(space)
    a, b = space.random(0).arch, space.random(1).arch
    stem_a, stem_b = net.extract(a).layers[0][0].weight, net.extract(b).layers[0][0].weight
    c = min(len(stem_a), len(stem_b))
    assert torch.equal(stem_a[:c], stem_b[:c])  # the stem's first channels are one tensor
    before = net.extract(b).layers[0][0].weight.clone()
    loss = net.train()(torch.randn(4, *space.input_shape), a).square().mean()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert not torch.equal(net.extract(b).layers[0][0].weight[:c], before[:c])


def _decisions(space: Space) -> list[tuple[str, list[Any]]]:
    """Every architecture decision of the space and its options (the largest network makes every one but
    the conditional ``groups``, which a grouped conv makes)."""
    seen: dict[str, list[Any]] = {}

    def choose(name: str, options: Sequence[Any]) -> Any:
        seen.setdefault(name, list(options))
        if name.endswith(".conv") and "grouped" in options:
            return "grouped"
        return max(options) if not name.endswith(".conv") else options[0]

    space.config.build(choose)
    return list(seen.items())


def _forced(space: Space, target: str, value: Any, seed: int) -> tuple[nas.ArchSpec, list[tuple]]:
    """A random architecture with decision ``target`` set to ``value``, and the slots it truly has."""
    rng = random.Random(seed)
    depths: dict[int, int] = {}
    block = target.rsplit(".", 1)[0]

    def choose(name: str, options: Sequence[Any]) -> Any:
        if name == target:
            pick = value
        elif name == f"{block}.conv" and target.endswith(".groups"):
            pick = "grouped"
        else:
            pick = options[rng.randrange(len(options))]
        if name.endswith(".depth"):
            depths[int(name[1:].split(".")[0])] = pick
        return pick

    arch = space.config.build(choose)
    slots: list[tuple] = [("stem",)]
    for i in sorted(depths):
        slots += [("block", i, j) for j in range(depths[i])]
    if space.config.head is not None:
        slots.append(("head",))
    return arch, slots + [("pool",), ("classifier",)]


def _replays(space: Space, arch: nas.ArchSpec, placed: list[tuple]) -> bool:
    """Whether the space's own build, given the decisions that ``placed`` reads off ``arch``, makes ``arch``."""
    cfg = space.config
    blocks = {slot[1:]: layer for slot, layer in zip(placed, arch.layers) if slot[0] == "block"}
    for mult in cfg.width_multiplier:
        def choose(name: str, options: Sequence[Any]) -> Any:
            parts = name.split(".")
            if name == "width_multiplier":
                return mult
            if name == "head.channels":
                return next((h for h in options if make_divisible(h * max(1.0, mult), cfg.channel_divisor)
                             == arch.layers[-3].out), options[0])
            if parts[0].startswith("s") and parts[1] == "depth":
                return sum(1 for (i, _) in blocks if i == int(parts[0][1:]))
            if parts[0].startswith("s") and parts[1] == "width":
                block = blocks[int(parts[0][1:]), 0]
                return next((w for w in options if make_divisible(w * mult, cfg.channel_divisor) == block.out),
                            options[0])
            if parts[0].startswith("s") and len(parts) == 3:
                return getattr(blocks[int(parts[0][1:]), int(parts[1][1:])], parts[2])
            return options[0]

        if cfg.build(choose) == arch:
            return True
    return False


@pytest.mark.parametrize("name", SPACES)
def test_every_choice_of_every_space_is_reachable(name: str) -> None:
    space = _space(name)
    net = Supernet(space)
    checked = 0
    for target, options in _decisions(space):
        for value in options:
            arch, slots = _forced(space, target, value, seed=checked)
            placed = layout(space, arch)
            # Each block sits in the stage that made it, or (mobilenetv2-imagenet at multiplier 0.35, where two
            # stages' widths round alike) in another placement that the space's decisions also make this network.
            assert placed == slots or _replays(space, arch, placed), (target, value)
            tensors = net.tensors(arch)  # a tensor for every layer, with the child's parameter count
            assert {k.rsplit(".", 1)[0] for k in tensors} == {op.name for op in nas.ops(arch) if op.params}
            params = sum(v.numel() for k, v in tensors.items() if not k.endswith(BUFFERS))
            assert params == nas.count(arch).params, (target, value)
            checked += 1
    assert checked > 40


def test_a_candidate_of_another_space_is_refused() -> None:
    tiny, big = _space("mobilenetv2-tiny"), _space("mobilenetv2")
    with pytest.raises(SupernetError, match="not a point of space 'mobilenetv2-tiny'"):
        layout(tiny, big.random(0).arch)
    with pytest.raises(SupernetError, match="mobilenetv2-family classifier"):
        Supernet(_space("lenet"))


def test_batch_norm_recalibration_sets_the_childs_statistics() -> None:
    space = _space("mobilenetv2-tiny")
    net = Supernet(space)
    model = net.extract(space.random(2).arch)
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    images = torch.randn(64, *space.input_shape) * 2 + 1
    recalibrate(model, images, batches=2, batch_size=32)
    after = dict(model.named_buffers())
    assert all(not torch.equal(before[n], after[n]) for n in before)
    assert not model.training
    stem = model.layers[0]  # the first batch norm's mean is the plain average over both batches' conv outputs
    with torch.no_grad():
        out = stem[0](images)
    torch.testing.assert_close(stem[1].running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)


def test_channel_sort_keeps_the_full_width_child() -> None:
    space = _space("mobilenetv2")
    net = Supernet(space).eval()
    _scramble(net, 3)
    with torch.no_grad():
        for block in net.blocks.values():
            block.project.conv.weight.mul_(torch.rand(block.project.conv.weight.shape[1]).view(1, -1, 1, 1))
    arch = extreme(space, True)
    x = torch.randn(2, *space.input_shape)
    with torch.no_grad():
        y = net(x, arch)
        order_before = net.blocks["s5b0"].project.conv.weight.abs().sum(dim=(0, 2, 3))
        net.sort_channels()
        torch.testing.assert_close(net(x, arch), y, atol=1e-4, rtol=1e-4)
        importance = net.blocks["s5b0"].project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert not torch.equal(importance, order_before)
    assert bool((importance[:-1] >= importance[1:]).all())  # most important hidden channels first


@pytest.mark.parametrize("compression", [
    nas.CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.5, quantization="binary"),
    nas.CompressionSpec(sparsity_conv=0.25, codebook_bits=2),
    nas.CompressionSpec(quantization="int8"),
])
def test_compression_aware_steps_train_the_shared_weights_straight_through(compression: nas.CompressionSpec) -> None:
    space = _space("mobilenetv2-tiny")
    net = Supernet(space).train()
    arch = space.random(4).arch
    tensors = compressed_tensors(net.tensors(arch), compression)
    weights = {k: v for k, v in tensors.items() if k.endswith(".weight") and v.dim() == 4}
    for w in weights.values():
        zeros = float((w == 0).float().mean())
        assert zeros == pytest.approx(compression.sparsity_conv, abs=0.05)
        levels = w[w != 0].unique().numel()
        if compression.quantization == "binary":
            assert levels <= 2
        elif compression.codebook_bits is not None:
            assert levels <= 2**compression.codebook_bits
    net(torch.randn(4, *space.input_shape), arch, tensors).square().mean().backward()
    assert float(net.stem.conv.weight.grad.abs().sum()) > 0  # the gradient reaches the latent shared weights


# --------------------------------------------------------------------------------------------- through nas


def _experiment(tmp: Path, **supernet: Any) -> Path:
    write(tmp, MINI, "mini.yaml")
    return write(tmp, {
        "name": "sn", "space": "mini.yaml", "dataset": "digits", "objectives": ["accuracy", "size_kb"],
        "profiles": [], "evaluator": "supernet", "budget": {"trials": 4}, "seed": 3,
        "supernet": {"epochs": 3, "max_samples": 96, "batch_size": 32, "recalibration_batches": 2, **supernet},
    })


def _epoch(checkpoint: Path) -> int:
    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            return int(json.loads((f.metadata() or {})["state"])["epoch"])
    except Exception:  # not there yet, or being replaced
        return 0


@pytest.mark.slow
def test_killed_training_resumes_losing_at_most_one_epoch(tmp_path: Path) -> None:
    (tmp_path / "killed").mkdir()
    (tmp_path / "whole").mkdir()
    exp = _experiment(tmp_path / "killed", compressed_share=0.5)
    checkpoint = tmp_path / "killed" / "sn.supernet.safetensors"
    proc = subprocess.Popen(nas_cmd("supernet", "train", str(exp), "--no-progress"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _epoch(checkpoint) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the second epoch
    proc.wait()
    done = _epoch(checkpoint)
    assert 1 <= done < 3, f"killed after {done} epochs"
    resumed = subprocess.run(nas_cmd("supernet", "train", str(exp)), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done} of 3" in resumed.stderr
    assert resumed.stderr.count("supernet: epoch") == 3 - done  # only the lost epochs again, a line each

    whole = _experiment(tmp_path / "whole", compressed_share=0.5)
    straight = subprocess.run(nas_cmd("supernet", "train", str(whole), "--no-progress"), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    space = nas.load_space(tmp_path / "whole" / "mini.yaml")
    a, state_a = load_supernet(checkpoint, space)
    b, state_b = load_supernet(tmp_path / "whole" / "sn.supernet.safetensors", space)
    assert state_a.epoch == state_b.epoch == 3
    assert any(row["compressed_steps"] > 0 for row in state_b.history)  # some steps trained compressed children
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in state_a.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in state_b.history]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=name)  # resumed = uninterrupted


def _columns(folder: Path) -> list[str]:
    return [c for c in pd.read_csv(folder / "trials.csv").columns if not c.startswith("param:")]


@pytest.mark.slow
def test_search_with_the_supernet_evaluator_through_nas(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, epochs=1)
    trained = subprocess.run(nas_cmd("supernet", "train", str(exp), "--no-progress"), capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "1 epochs" in trained.stdout and (tmp_path / "sn.supernet.safetensors").exists()

    elsewhere = tmp_path / "elsewhere"  # the checkpoint is found from the experiment file's folder
    elsewhere.mkdir()
    run = tmp_path / "run"
    searched = subprocess.run(nas_cmd("search", str(exp), "--out", str(run), "--no-progress"), capture_output=True,
                              text=True, timeout=300, cwd=elsewhere)
    assert searched.returncode == 0, searched.stderr
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) == {"COMPLETE"}
    assert trials["trained"].all() and trials["accuracy"].between(0, 1).all()
    assert trials["accuracy"].nunique() > 1  # candidates are told apart

    baseline = write(tmp_path, {**yaml_of(exp), "name": "proxy", "evaluator": "train",
                                "proxy": {"epochs": 1, "max_samples": 64, "pruner": "none"}, "budget": {"trials": 2}},
                     "proxy.yaml")
    proxy_run = tmp_path / "proxy-run"
    proxied = subprocess.run(nas_cmd("search", str(baseline), "--out", str(proxy_run), "--no-progress"),
                             capture_output=True, text=True, timeout=300)
    assert proxied.returncode == 0, proxied.stderr
    assert _columns(run) == _columns(proxy_run)

    for command in (("plot", str(run)), ("report", str(run))):
        done = subprocess.run(nas_cmd(*command), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr)
    assert (run / "plots" / "front.png").exists() and "Pareto" in (run / "report.md").read_text()

    candidate = tmp_path / "c.json"
    candidate.write_text(nas.Candidate.from_json(trials["candidate"][0]).to_json())
    out = tmp_path / "child.safetensors"
    extracted = subprocess.run(nas_cmd("supernet", "extract", str(exp), "--candidate", str(candidate), "--out",
                                       str(out), "--no-recalibrate"), capture_output=True, text=True, timeout=300)
    assert extracted.returncode == 0, extracted.stderr
    model, read, meta = load_checkpoint(out)
    assert meta["extra"]["source"] == "supernet" and not meta["extra"]["recalibrated"]
    space = nas.load_space(tmp_path / "mini.yaml")
    net, _ = load_supernet(tmp_path / "sn.supernet.safetensors", space)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), net(x, read.arch), atol=1e-5, rtol=0)


def yaml_of(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def test_missing_supernet_checkpoint_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    run = tmp_path / "run"
    result = subprocess.run(nas_cmd("search", str(exp), "--out", str(run), "--no-progress"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "sn.supernet.safetensors" in result.stderr and "nas supernet train" in result.stderr
    assert "Traceback" not in result.stderr
