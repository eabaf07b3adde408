"""Structured pruning over coupled channel groups: the pruned network is exactly the spec the cost model prices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.compress import apply_compression, stages
from nas.compress.structured import channel_groups, channel_importance, prune_channels, pruned_arch
from nas.cost import fvcore_count
from nas.errors import CompressError

torch.set_num_threads(1)

SPACES = [name for name in nas.builtin_spaces() if nas.load_space(name).random(0).arch.detector is None]
SEARCHABLE = ["mobilenetv2", "mobilenetv2-tiny", "mobilenetv2-imagenet"]


def _space(name: str) -> nas.Space:
    space = nas.load_space(name)
    if space.input_shape[1] > 64:  # the ImageNet-sized spaces at 64x64: the same groups, cheaper to run
        space = space.with_input((3, 64, 64), 10)
    return space


@torch.no_grad()
def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine terms, so that copying them is tested too."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)


@torch.no_grad()
def _kill(model: nas.models.Network, ratio: float, seed: int) -> None:
    """Zero every weight touching the channels that pruning at ``ratio`` must drop (random ones, as many from
    each part of a group), so they carry nothing and have zero L1 importance: removing them must leave the
    output unchanged."""
    gen = torch.Generator().manual_seed(seed)
    for group in channel_groups(model.spec):
        size = group.channels // group.parts
        drop = size - group.kept(ratio) // group.parts
        if not group.prunable or drop == 0:
            continue
        idx = torch.cat([torch.randperm(size, generator=gen)[:drop] + k * size for k in range(group.parts)])
        for name, side in group.members:
            m = model.get_submodule(name)
            if side == "out":
                m.weight[idx] = 0
                if m.bias is not None:
                    m.bias[idx] = 0
            elif isinstance(m, nn.Linear):
                area = m.in_features // group.channels
                m.weight[:, (idx[:, None] * area + torch.arange(area)[None, :]).flatten()] = 0
            else:  # a conv's inputs: in a grouped conv, input i is position i % (inputs per group) of its group
                per = m.weight.shape[1]
                w = m.weight.view(m.groups, -1, per, *m.weight.shape[2:])
                w[idx // per, :, idx % per] = 0


@pytest.mark.parametrize("ratio", [0.25, 0.5])
@pytest.mark.parametrize("name", SPACES)
def test_pruned_network_is_the_pruned_spec(name: str, ratio: float) -> None:
    space = _space(name)
    for seed in range(2):
        arch = space.random(seed).arch
        torch.manual_seed(seed)
        model = nas.build_model(arch)
        _randomize_bn(model)
        model.eval()
        x = torch.randn(2, *arch.input_shape)
        expected = pruned_arch(arch, ratio)
        small = prune_channels(model, ratio, criterion="l2" if seed else "l1")
        assert small.spec == expected
        reference = nas.build_model(expected)
        assert [(k, v.shape) for k, v in small.state_dict().items()] == \
               [(k, v.shape) for k, v in reference.state_dict().items()]
        small.eval()
        with torch.no_grad():
            assert small(x).shape == (2, arch.num_classes)
        cost = nas.count(expected)
        assert cost.madds == fvcore_count(small, arch.input_shape).madds
        assert cost.params == sum(p.numel() for p in small.parameters())
        assert cost.madds < nas.count(arch).madds
        for before, after in zip(channel_groups(arch), channel_groups(expected)):
            assert after.channels >= after.parts >= 1  # at least one channel (in each conv group) left
            if before.prunable:  # Torch-Pruning's local rule, never more
                assert after.channels == max(1, int(before.channels // before.parts * (1 - ratio))) * before.parts
            else:
                assert after.channels == before.channels


@pytest.mark.parametrize("name", SEARCHABLE + ["lenet"])
def test_kept_channels_carry_the_original_weights(name: str) -> None:
    space = _space(name)
    for seed in range(3):
        arch = space.random(seed).arch
        torch.manual_seed(seed)
        model = nas.build_model(arch)
        _randomize_bn(model)
        _kill(model, 0.5, seed)
        model.eval()
        x = torch.randn(3, *arch.input_shape)
        small = prune_channels(model, 0.5, criterion="l1").eval()
        with torch.no_grad():
            y, y_small = model(x), small(x)
        torch.testing.assert_close(y_small, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))


def test_ratio_zero_changes_nothing() -> None:
    arch = nas.load_space("mobilenetv2").random(3).arch
    assert pruned_arch(arch, 0.0) is arch
    torch.manual_seed(0)
    model = nas.build_model(arch)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(2, *arch.input_shape)
    small = prune_channels(model, 0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x))


def _chain() -> nas.ArchSpec:
    layers = (nas.Conv(8, 3, stride=2), nas.InvertedResidual(8, expansion=4), nas.InvertedResidual(8, expansion=6),
              nas.GlobalAvgPool(), nas.Linear(3))
    return nas.ArchSpec((3, 16, 16), layers)


@torch.no_grad()
def test_residual_chain_is_one_group_with_the_stem() -> None:
    arch = _chain()
    chain = channel_groups(arch)[1]
    assert chain.channels == 8 and chain.prunable
    assert {name for name, side in chain.members if side == "out"} == \
           {"layers.0.0", "layers.0.1", "layers.1.2.0", "layers.1.2.1", "layers.2.2.0", "layers.2.2.1"}
    assert {name for name, side in chain.members if side == "in"} == {"layers.1.0.0", "layers.2.0.0", "layers.4.0"}
    small_arch = pruned_arch(arch, 0.5)
    assert small_arch.layers[0].out == 4
    assert [(b.out, b.hidden(4)) for b in small_arch.layers[1:3]] == [(4, 16), (4, 24)]
    assert sum(op.kind == "add" for op in nas.ops(small_arch)) == 2  # the residual adds survive

    torch.manual_seed(0)
    model = nas.build_model(arch)
    _randomize_bn(model)
    model.eval()
    small = prune_channels(model, 0.5, criterion="l1").eval()
    mods = dict(model.named_modules())
    score = sum(mods[n].weight.abs().flatten(1).sum(1) for n in ("layers.0.0", "layers.1.2.0", "layers.2.2.0"))
    score = score + sum(mods[n].weight.abs().transpose(0, 1).flatten(1).sum(1)
                        for n in ("layers.1.0.0", "layers.2.0.0", "layers.4.0"))
    kept = torch.topk(score, 4).indices.sort().values
    torch.testing.assert_close(channel_importance(model, "l1")[1], score)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(small.layers[0](x), model.layers[0](x)[:, kept])
    assert torch.equal(small.layers[4][0].weight, model.layers[4][0].weight[:, kept])
    assert torch.equal(small.layers[2][2][0].weight,
                       model.layers[2][2][0].weight[kept][:, channel_importance(model, "l1")[3].topk(24).indices.sort().values])


@torch.no_grad()
def test_grouped_blocks_keep_their_groups_and_lose_channels_in_each() -> None:
    layers = (nas.Conv(16, 3), nas.InvertedResidual(24, expansion=4, conv="grouped", groups=4, kernel=5),
              nas.InvertedResidual(24, expansion=2, conv="grouped", groups=2), nas.GlobalAvgPool(), nas.Linear(5))
    arch = nas.ArchSpec((3, 12, 12), layers)
    for ratio, per_group in ((0.25, (12, 18)), (0.5, (8, 12)), (0.7, (4, 7))):  # Torch-Pruning: int(c * (1 - r))
        small_arch = pruned_arch(arch, ratio)
        a, b = small_arch.layers[1], small_arch.layers[2]
        assert (a.groups, b.groups) == (4, 2)
        assert (a.hidden(small_arch.layers[0].out) // 4, b.hidden(a.out) // 2) == per_group

    torch.manual_seed(0)
    model = nas.build_model(arch).eval()
    small = prune_channels(model, 0.5, criterion="l1").eval()
    hidden = channel_groups(arch)[2]
    assert (hidden.channels, hidden.parts) == (64, 4)
    score = channel_importance(model, "l1")[2].view(4, 16)
    kept = torch.cat([score[k].topk(8).indices.sort().values + 16 * k for k in range(4)])
    spatial = model.layers[1][1][0].weight  # (64, 16, 5, 5): 4 groups of 16
    expected = torch.stack([spatial[kept[8 * k:8 * k + 8]][:, kept[8 * k:8 * k + 8] - 16 * k] for k in range(4)])
    assert torch.equal(small.layers[1][1][0].weight, expected.flatten(0, 1))
    assert small.layers[1][1][0].groups == 4
    assert torch.equal(small.layers[1][0][0].weight, model.layers[1][0][0].weight[kept][
        :, channel_importance(model, "l1")[1].topk(8).indices.sort().values])
    assert torch.equal(small.layers[1][2][0].weight, model.layers[1][2][0].weight[:, kept][
        channel_importance(model, "l1")[3].topk(12).indices.sort().values])


def test_equal_widths_do_not_create_a_residual_add() -> None:
    layers = (nas.Conv(10, 3), nas.InvertedResidual(11, expansion=3), nas.GlobalAvgPool(), nas.Linear(4))
    arch = nas.ArchSpec((3, 8, 8), layers)
    small_arch = pruned_arch(arch, 0.5)  # 10 -> 5 and 11 -> 5 channels
    assert small_arch.layers[0].out == small_arch.layers[1].out == 5
    assert not any(op.kind == "add" for op in nas.ops(small_arch))
    small = prune_channels(nas.build_model(arch), 0.5)
    assert nas.count(small_arch).madds == fvcore_count(small, arch.input_shape).madds


def test_every_group_keeps_a_channel_and_the_classifier_stays() -> None:
    arch = nas.load_space("mobilenetv2-tiny").random(1).arch
    small_arch = pruned_arch(arch, 0.999)
    assert all(g.channels == g.parts for g in channel_groups(small_arch) if g.prunable)
    assert small_arch.num_classes == arch.num_classes
    small = prune_channels(nas.build_model(arch), 0.999).eval()
    with torch.no_grad():
        assert small(torch.randn(1, *arch.input_shape)).shape == (1, arch.num_classes)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "0.5", True])
def test_bad_ratio_is_a_clear_error(ratio: object) -> None:
    with pytest.raises(CompressError, match=r"0 <= ratio < 1"):
        pruned_arch(_chain(), ratio)  # type: ignore[arg-type]
    with pytest.raises(CompressError, match=r"0 <= ratio < 1"):
        prune_channels(nas.build_model(_chain()), ratio)  # type: ignore[arg-type]


def test_unsupported_inputs_are_clear_errors() -> None:
    with pytest.raises(CompressError, match="needs data"):
        prune_channels(nas.build_model(_chain()), 0.5, criterion="activation")
    with pytest.raises(CompressError, match="criterion must be one of"):
        prune_channels(nas.build_model(_chain()), 0.5, criterion="l3")  # type: ignore[arg-type]
    with pytest.raises(CompressError, match="detector"):
        pruned_arch(nas.load_space("ssdlite-mobilenetv2").random(0).arch, 0.5)
    with pytest.raises(CompressError, match="nas Network"):
        prune_channels(nn.Linear(3, 3), 0.5)  # type: ignore[arg-type]


def test_activation_importance_keeps_the_channels_that_fire() -> None:
    torch.manual_seed(0)
    arch = _chain()
    model = nas.build_model(arch).eval()
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        model.layers[1][0][1].bias[:8] = -50.0  # half of block 1's hidden channels never fire after ReLU6
    scores = channel_importance(model, "activation", x)
    hidden = scores[2]  # block 1's hidden group (32 channels)
    assert hidden[:8].max() < hidden[8:].min()
    small = prune_channels(model, 0.25, criterion="activation", data=x)
    assert small.spec == pruned_arch(arch, 0.25)


def test_channel_pruning_is_the_first_compression_stage() -> None:
    spec = nas.CompressionSpec(channel_ratio=0.5, sparsity_conv=0.5, lowrank_ratio=0.5, codebook_bits=4)
    assert [name for name, _ in stages(spec)] == ["channels", "lowrank", "prune", "quantize"]
    arch = _chain()
    torch.manual_seed(0)
    model = nas.build_model(arch)
    seen: list[tuple[str, nas.ArchSpec]] = []
    only = nas.CompressionSpec(channel_ratio=0.5, channel_importance="activation")
    out = apply_compression(model, only, data=torch.randn(8, 3, 16, 16),
                            retrain=lambda m, stage: seen.append((stage, m.spec)))
    assert seen == [("channels", nas.compressed(arch, only))] and out.spec == nas.compressed(arch, only)
    with pytest.raises(CompressError, match="needs data"):
        apply_compression(model, only)


def test_recovery_gives_the_activation_importance_training_inputs() -> None:
    """compress_with_recovery (nas finetune, winners) prunes with a batch of the training split and fine-tunes
    the new, narrower network after the channels stage."""
    from nas.compress import compress_with_recovery
    from nas.data import load_dataset
    from nas.train import TrainConfig

    splits = load_dataset("synthetic")
    arch = nas.load_space("mobilenetv2-tiny").with_input(splits.input_shape, splits.num_classes).random(2).arch
    torch.manual_seed(0)
    model = nas.build_model(arch)
    spec = nas.CompressionSpec(channel_ratio=0.5, channel_importance="activation")
    small, steps = compress_with_recovery(model, spec, splits, TrainConfig(epochs=1, max_samples=128, progress=False))
    assert small.spec == nas.compressed(arch, spec) and [s["step"] for s in steps] == ["compress:channels"]
    assert nas.count(small.spec).madds < nas.count(arch).madds
