"""Compression methods on small random models: shapes, savings, reconstruction, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import nas
from nas.compress import (
    CPConv,
    LowRankLinear,
    PruneSchedule,
    TwoComponentConv,
    apply_lowrank,
    htanh,
    iterative_prune,
    kmeans_codebook,
    magnitude_prune,
    quantize_weights,
    rank_for,
    rewind,
    share_weights,
)
from nas.errors import CompressError

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nas.build_model(nas.ArchSpec((20,), (nas.Linear(30, act="relu"), nas.Linear(16, act="relu"), nas.Linear(4))))


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = (nas.Conv(8, 3), nas.Conv(12, 3, bn=False, act="relu"), nas.MaxPool(2), nas.Flatten(),
              nas.Linear(20, act="relu"), nas.Linear(5))
    return nas.build_model(nas.ArchSpec((3, 8, 8), layers))


# --------------------------------------------------------------------------- unstructured pruning


def test_layerwise_pruning_hits_each_rate_and_keeps_largest() -> None:
    model = mlp()
    w0 = model.layers[0][0].weight.detach().clone()
    rates = magnitude_prune(model, sparsity_linear=0.75)
    assert all(abs(r - 0.75) < 0.01 for r in rates.values()), rates
    kept = model.layers[0][0].weight.detach() != 0
    assert w0.abs()[kept].min() >= w0.abs()[~kept].max()


def test_global_pruning_counts_all_layers_together() -> None:
    model = mlp()
    with torch.no_grad():
        model.layers[2][0].weight.mul_(100.0)  # the last layer's weights are now the largest
    rates = magnitude_prune(model, sparsity_linear=0.5, scope="global", importance="l2")
    total = sum(m.weight.numel() for m in (model.layers[i][0] for i in range(3)))
    zeros = sum(int((model.layers[i][0].weight == 0).sum()) for i in range(3))
    assert zeros == round(0.5 * total)
    assert rates["layers.2.0"] == 0.0
    first_two = [model.layers[i][0].weight for i in range(2)]  # they lose the last layer's share too
    assert sum(int((w == 0).sum()) for w in first_two) / sum(w.numel() for w in first_two) > 0.5


def test_pruning_again_counts_all_weights_and_masks_only_grow() -> None:
    model = mlp()
    magnitude_prune(model, sparsity_linear=0.5)
    first = model.layers[0][0].weight_mask.clone()
    magnitude_prune(model, sparsity_linear=0.8)
    second = model.layers[0][0].weight_mask
    assert abs(float((second == 0).float().mean()) - 0.8) < 0.01
    assert bool((second <= first).all())


def test_bad_sparsity_is_a_clear_error() -> None:
    with pytest.raises(CompressError, match="0 <= amount < 1"):
        magnitude_prune(mlp(), sparsity_linear=1.5)


def test_iterative_schedule_with_rewinding_resets_kept_weights() -> None:
    model = mlp()
    early = {k: v.clone() for k, v in model.state_dict().items()}
    steps: list[int] = []

    def fine_tune(m: nn.Module, step: int) -> None:
        steps.append(step)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)  # "training" moves the weights

    schedule = PruneSchedule(sparsity_linear=0.9, steps=3, rewind=True)
    assert schedule.at(3) == (0.0, 0.9) and schedule.at(1)[1] < schedule.at(2)[1] < 0.9
    iterative_prune(model, schedule, fine_tune, rewind_to=early)
    assert steps == [1, 2, 3]
    layer = model.layers[0][0]
    assert abs(float((layer.weight_mask == 0).float().mean()) - 0.9) < 0.01
    rewind(model, early)
    kept = layer.weight_mask.bool()
    assert torch.equal(layer.weight[kept], early["layers.0.0.weight"][kept])
    assert bool((layer.weight[~kept] == 0).all())


# --------------------------------------------------------------------------- weight sharing


def test_kmeans_linear_init_codebook_and_assignment() -> None:
    values = torch.randn(2000).numpy()
    centroids, codes = kmeans_codebook(values, 3, "linear")
    assert centroids.shape == (8,) and codes.shape == (2000,)
    err = abs(values - centroids[codes]).mean()
    coarse = abs(values - kmeans_codebook(values, 1, "linear")[0][kmeans_codebook(values, 1, "linear")[1]]).mean()
    assert err < coarse
    for init in ("density", "random"):
        c, k = kmeans_codebook(values, 3, init)  # type: ignore[arg-type]
        assert abs(values - c[k]).mean() < coarse


def test_shared_weights_use_codebook_and_keep_pruned_zero() -> None:
    model = mlp()
    magnitude_prune(model, sparsity_linear=0.6)
    share_weights(model, 2)
    weight = model.layers[0][0].weight
    nonzero = weight[weight != 0].unique()
    assert nonzero.numel() <= 4
    assert abs(float((weight == 0).float().mean()) - 0.6) < 0.01


def test_centroid_gradient_is_mean_of_member_gradients() -> None:
    """The paper's sum of the members' gradients, divided by the cluster's size (see SharedWeight)."""
    model = mlp()
    shared = share_weights(model, 2)["layers.0.0"]
    layer = model.layers[0][0]
    x = torch.randn(7, 20)
    # reference: gradient wrt a free copy of the dense weight
    free = layer.weight.detach().clone().requires_grad_(True)
    (torch.nn.functional.linear(x, free, layer.bias).square().sum()).backward()
    layer_out = layer(x).square().sum()
    layer_out.backward()
    expected = torch.zeros(4).index_add_(0, shared.codes.flatten(), free.grad.flatten())
    members = torch.bincount(shared.codes.flatten(), minlength=4).clamp(min=1)
    assert torch.allclose(shared.centroids.grad, expected / members, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- binary / ternary


@pytest.mark.parametrize("mode", ["binary", "ternary"])
def test_quantized_weights_take_two_or_three_levels(mode: str) -> None:
    model = mlp()
    quantize_weights(model, mode)  # type: ignore[arg-type]
    model.eval()
    levels = model.layers[0][0].weight.detach().unique()
    assert levels.numel() == (2 if mode == "binary" else 3)
    assert torch.allclose(levels.abs().max(), levels.abs()[levels != 0].min())  # one per-layer scale


def test_straight_through_gradient_equals_htanh_gradient() -> None:
    layer = nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.mul_(8.0)  # some latent weights beyond |1| so the Htanh clip matters
    latent = layer.weight.detach().clone()
    quant = quantize_weights(layer, "binary")[""]
    x = torch.randn(5, 6)
    layer(x).sum().backward()
    got = layer.parametrizations.weight.original.grad
    _, scale = quant.levels(latent)
    ref = latent.clone().requires_grad_(True)
    torch.nn.functional.linear(x, htanh(ref) * scale, layer.bias).sum().backward()
    assert bool(((latent.abs() > 1) & (got == 0)).any() or (latent.abs() <= 1).all())
    assert torch.allclose(got, ref.grad)


def test_stochastic_binarization_follows_hard_sigmoid_of_the_scaled_weights() -> None:
    layer = nn.Linear(200, 200, bias=False)
    with torch.no_grad():
        layer.weight[:100].fill_(0.025)  # half at H/2: P(+1) = hard_sigmoid(0.5) = 0.75
        layer.weight[100:].fill_(0.075)  # so H = mean |w| = 0.05, and these are clipped to H: P(+1) = 1
    quant = quantize_weights(layer, "binary", stochastic=True)[""]
    assert float(quant.bound) == pytest.approx(0.05)
    torch.manual_seed(0)
    w = layer.weight
    assert abs(float((w[:100] > 0).float().mean()) - 0.75) < 0.02 and bool((w[100:] > 0).all())
    assert w.abs().unique().tolist() == [pytest.approx(0.05)]  # +-H
    assert float(layer.parametrizations.weight.original.detach().max()) == pytest.approx(0.05)  # the latent clip
    layer.eval()
    assert bool((layer.weight > 0).all())  # sign at test time


# --------------------------------------------------------------------------- low-rank


@torch.no_grad()
def test_svd_error_falls_as_rank_grows() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    x = torch.randn(16, 30)
    errors = [float((LowRankLinear.from_module(layer, r)(x) - layer(x)).norm()) for r in (1, 5, 10, 20)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("cls", [TwoComponentConv, CPConv])
def test_conv_factorizations_shapes_and_error(cls: type) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    low, high = cls.from_module(conv, 2), cls.from_module(conv, 18)
    assert low(x).shape == conv(x).shape
    e_low, e_high = float((low(x) - conv(x)).norm()), float((high(x) - conv(x)).norm())
    assert e_high < e_low
    if cls is TwoComponentConv:
        assert e_high < 1e-3 * float(conv(x).norm())  # rank 18 = full rank 3 * min(6, 10)


def test_lowrank_ranks_and_weights_match_cost_model() -> None:
    model = convnet()
    arch = model.spec
    ranks = apply_lowrank(model, 0.25)
    stored = {ls.name: ls.stored for ls in nas.size_report(arch, nas.CompressionSpec(lowrank_ratio=0.25))}
    for name, module in model.named_modules():
        if name in stored:
            assert sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight")) == stored[name], name
    assert ranks and all(isinstance(model.get_submodule(n), (TwoComponentConv, LowRankLinear)) for n in ranks)
    assert rank_for(nn.Linear(300, 100), 0.5) == 50
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)


# --------------------------------------------------------------------------- stages (structured pruning: tests/test_structured.py)


def test_apply_compression_runs_stages_in_order() -> None:
    model = convnet()
    seen: list[str] = []
    spec = nas.CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.8, codebook_bits=4, lowrank_ratio=0.5)
    out = nas.compress.apply_compression(model, spec, retrain=lambda m, stage: seen.append(stage))
    assert seen == ["lowrank", "prune", "quantize"]
    assert out is not model and not prune.is_pruned(model.layers[4][0])
    assert out(torch.randn(2, 3, 8, 8)).shape == (2, 5)
