"""Distillation: Hinton loss by hand, attention maps, feature adapters, distil and codistil runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.data import load_dataset
from nas.distill import (
    CodistillConfig,
    DistillConfig,
    DistillationLoss,
    attention_loss,
    attention_map,
    codistill,
    distill,
    hinton_loss,
    match_stages,
    stages,
)
from nas.errors import TrainError
from nas.spec import ArchSpec, Linear
from nas.train import TrainConfig, train

Z_S = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
Z_T = torch.tensor([[3.0, 0.0, -1.0], [-0.5, 1.0, 2.0]])
Y = torch.tensor([0, 1])


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_hinton_loss_equals_hand_computation() -> None:
    zs, zt, y = Z_S.numpy().astype(np.float64), Z_T.numpy().astype(np.float64), Y.numpy()
    alpha, beta, t = 0.3, 0.7, 2.5
    hard = -np.mean(_log_softmax(zs)[np.arange(2), y])
    p_t = np.exp(_log_softmax(zt / t))
    soft_ce = -np.mean((p_t * _log_softmax(zs / t)).sum(axis=1))
    expected = alpha * hard + beta * t * t * soft_ce
    got = hinton_loss(Z_S, Z_T, Y, alpha=alpha, beta=beta, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Without the T^2 factor the soft term is T^2 times smaller.
    no_t2 = hinton_loss(Z_S, Z_T, Y, alpha=alpha, beta=beta, temperature=t, t2_scale=False)
    assert float(no_t2) == pytest.approx(alpha * hard + beta * soft_ce, rel=1e-5)
    # KL differs from cross-entropy by the teacher's entropy (times beta * T^2).
    entropy = -np.mean((p_t * np.log(p_t)).sum(axis=1))
    kl = hinton_loss(Z_S, Z_T, Y, alpha=alpha, beta=beta, temperature=t, soft_loss="kl")
    assert float(kl) == pytest.approx(expected - beta * t * t * entropy, rel=1e-5)


def test_t1_alpha1_beta0_is_cross_entropy() -> None:
    got = hinton_loss(Z_S, Z_T, Y, alpha=1.0, beta=0.0, temperature=1.0)
    assert torch.allclose(got, F.cross_entropy(Z_S, Y))
    assert not torch.allclose(hinton_loss(Z_S, Z_T, Y, alpha=1.0, beta=0.1, temperature=1.0), got)


def test_soft_term_gradient_is_constant_in_temperature_with_t2() -> None:
    """Hinton's reason for T^2: for large T the soft gradients keep their size."""
    norms = []
    for t in (8.0, 16.0):
        zs = Z_S.clone().requires_grad_(True)
        hinton_loss(zs, Z_T, Y, alpha=0.0, beta=1.0, temperature=t).backward()
        assert zs.grad is not None
        norms.append(float(zs.grad.norm()))
    assert norms[1] == pytest.approx(norms[0], rel=0.05)


def test_attention_map_shape_and_norm() -> None:
    feats = torch.randn(4, 6, 5, 7)
    a = attention_map(feats)
    assert a.shape == (4, 35)
    assert torch.allclose(a.norm(dim=1), torch.ones(4), atol=1e-6)
    expected = feats.pow(2).mean(1).flatten(1)
    assert torch.allclose(a, expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert float(attention_loss(feats, feats * 3)) == pytest.approx(0.0, abs=1e-10)  # scale-free
    assert float(attention_loss(feats, torch.randn(4, 9, 10, 14))) > 0  # teacher resized to 5x7
    with pytest.raises(TrainError, match=r"\(N, C, H, W\)"):
        attention_map(torch.randn(4, 6))


def _digits_models() -> tuple[nn.Module, nn.Module]:
    space = nas.load_space("mobilenetv2-tiny")
    torch.manual_seed(0)
    teacher = nas.build_model(space.random(0).arch)
    torch.manual_seed(1)
    student = nas.build_model(space.random(1).arch)
    return teacher, student


def test_stages_and_matching_by_spatial_size() -> None:
    teacher, student = _digits_models()
    shapes = stages(student)
    assert shapes["layers.0"][1:] == (8, 8) and shapes[f"layers.{len(shapes) - 1}"] == (10,)
    pairs = match_stages(student, teacher)
    assert pairs
    t_shapes = stages(teacher)
    for s, t in pairs:
        assert shapes[s][1:] == t_shapes[t][1:]


def test_feature_adapter_is_a_learned_1x1_conv() -> None:
    teacher, student = _digits_models()
    loss = DistillationLoss(student, teacher, DistillConfig(features=(("layers.2", "layers.3"),)))
    try:
        (adapter,) = loss.adapters.values()
        assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (1, 1)
        assert adapter.in_channels == stages(student)["layers.2"][0]
        assert adapter.out_channels == stages(teacher)["layers.3"][0]
        x = torch.randn(4, 1, 8, 8)
        value = loss(student(x), (x, torch.arange(4)))
        value.backward()
        assert adapter.weight.grad is not None and float(adapter.weight.grad.abs().sum()) > 0
        assert all(p.grad is None for p in teacher.parameters())
    finally:
        loss.close()


def test_unknown_stage_is_a_clear_error() -> None:
    teacher, student = _digits_models()
    with pytest.raises(TrainError, match=r"no module named \['layers\.99'\].*layers\.0"):
        DistillationLoss(student, teacher, DistillConfig(attention=(("layers.99", "layers.1"),)))


def test_distill_improves_the_student_and_restores_the_teacher() -> None:
    splits = load_dataset("digits")
    teacher, student = _digits_models()
    train(teacher, splits, TrainConfig(epochs=3, batch_size=32))
    frozen_before = [p.requires_grad for p in teacher.parameters()]
    teacher_weights = [p.detach().clone() for p in teacher.parameters()]
    out = distill(student, teacher, splits, TrainConfig(epochs=2, batch_size=32),
                  DistillConfig(attention="auto", attention_weight=10.0))
    assert out.run.failed is None and out.student_val_after > out.student_val_before + 0.3
    assert out.teacher_val_accuracy > 0.8
    assert [p.requires_grad for p in teacher.parameters()] == frozen_before
    assert all(torch.equal(a, b) for a, b in zip(teacher_weights, teacher.parameters()))
    hooks = [m for net in (teacher, student) for m in net.modules() if m._forward_hooks]
    assert hooks == []  # the taps were removed


def test_codistillation_of_two_models_lowers_each_loss() -> None:
    splits = load_dataset("synthetic")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(nas.build_model(ArchSpec((64,), (Linear(32, act="relu"), Linear(10)), "mlp")))
    out = codistill(models, splits, TrainConfig(epochs=4, batch_size=32), CodistillConfig(burn_in_steps=30))
    assert out.failed is None and len(out.runs) == 2
    for run, ce in zip(out.runs, out.ce_losses):
        assert len(run.losses) == 4 and run.losses[-1] < run.losses[0]
        assert ce[-1] < ce[0] and run.val_accuracy > 0.85
        # After the burn-in the objective carries the distillation term on top of the cross-entropy.
        assert run.losses[-1] > ce[-1]
    assert out.runs[0].history != out.runs[1].history or out.runs[0].losses != out.runs[1].losses


def test_codistillation_burn_in_is_plain_training() -> None:
    splits = load_dataset("synthetic")
    torch.manual_seed(0)
    models = [nas.build_model(ArchSpec((64,), (Linear(16, act="relu"), Linear(10)), "mlp")) for _ in range(2)]
    out = codistill(models, splits, TrainConfig(epochs=1), CodistillConfig(burn_in_steps=10**6))
    assert out.runs[0].losses == pytest.approx(out.ce_losses[0])
    with pytest.raises(TrainError, match="at least 2 models"):
        codistill(models[:1], splits, TrainConfig(epochs=1))
    assert math.isfinite(out.runs[1].val_accuracy)


def test_distil_then_compress_with_recovery_reports_each_step() -> None:
    from nas.compress import compress_with_recovery

    splits = load_dataset("synthetic")
    mlp = lambda width: nas.build_model(ArchSpec((64,), (Linear(width, act="relu"), Linear(10)), "mlp"))  # noqa: E731
    torch.manual_seed(0)
    teacher, student = mlp(128), mlp(32)
    train(teacher, splits, TrainConfig(epochs=5, batch_size=32))
    out = distill(student, teacher, splits, TrainConfig(epochs=5, batch_size=32))
    assert out.student_val_after > 0.8
    spec = nas.CompressionSpec(sparsity_linear=0.5, codebook_bits=4)
    compressed, steps = compress_with_recovery(student, spec, splits, TrainConfig(epochs=1, lr=0.005))
    assert [s["step"] for s in steps] == ["compress:prune", "compress:quantize"]
    assert all(0 <= s["val_before"] <= 1 and s["val_after"] > 0.5 and s["failed"] is None for s in steps)
    x = torch.randn(5, 64)
    weight = compressed.layers[0][0].weight
    assert float((weight == 0).float().mean()) >= 0.5 and len(torch.unique(weight)) <= 16 + 1
    assert not torch.equal(student(x), compressed(x))  # the original model is left as it was
