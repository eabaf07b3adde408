"""Training loop: reaches a known accuracy, deterministic, budgets, pruning hook, NaN as a failure reason."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import nas
from nas.data import load_dataset
from nas.errors import TrainError
from nas.spec import ArchSpec, Linear
from nas.train import TrainConfig, evaluate, make_optimizer, train


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def mlp(hidden: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return nas.build_model(ArchSpec((64,), (Linear(hidden, act="relu"), Linear(10)), "mlp"))


def test_short_training_on_synthetic_reaches_known_accuracy() -> None:
    splits = load_dataset("synthetic")
    model = mlp()
    before = evaluate(model, splits.val)
    result = train(model, splits, TrainConfig(epochs=5, batch_size=32, lr=0.05))
    assert result.failed is None and len(result.history) == 5 == result.epochs
    assert before < 0.3 and result.val_accuracy >= 0.9  # MLP on the flattened images: ~0.97
    assert result.losses[-1] < result.losses[0]
    assert result.samples == 5 * len(splits.train)


def test_mobilenetv2_tiny_candidate_learns_digits() -> None:
    splits = load_dataset("digits")
    torch.manual_seed(0)
    model = nas.build_model(nas.load_space("mobilenetv2-tiny").random(1).arch)
    result = train(model, (splits.train, splits.val), TrainConfig(epochs=3, batch_size=32))
    assert result.failed is None and result.val_accuracy >= 0.8


def test_same_seed_same_run_on_one_thread() -> None:
    splits = load_dataset("synthetic")
    runs = []
    for _ in range(2):
        model = mlp()
        runs.append((train(model, splits, TrainConfig(epochs=2, seed=3)), model))
    (a, ma), (b, mb) = runs
    assert a.history == b.history and a.losses == b.losses
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))
    other = mlp()
    c = train(other, splits, TrainConfig(epochs=2, seed=4))
    assert c.losses != a.losses  # another seed: another data order


def test_on_epoch_can_stop_early() -> None:
    seen: list[tuple[int, float]] = []

    def prune(epoch: int, acc: float) -> bool:
        seen.append((epoch, acc))
        return epoch == 1

    result = train(mlp(), load_dataset("synthetic"), TrainConfig(epochs=10), on_epoch=prune)
    assert result.stopped_early and result.epochs == 2 and [e for e, _ in seen] == [0, 1]
    assert result.history == [a for _, a in seen]


def test_max_samples_caps_the_budget() -> None:
    splits = load_dataset("synthetic")
    result = train(mlp(), splits, TrainConfig(epochs=50, max_samples=300, batch_size=50))
    assert result.samples == 300 and result.epochs == 1 and len(result.history) == 1


def test_nan_loss_is_a_failure_reason_not_an_exception() -> None:
    def nan_after_three(logits: torch.Tensor, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        nan_after_three.calls += 1  # type: ignore[attr-defined]
        loss = nn.functional.cross_entropy(logits, batch[1])
        return loss * math.nan if nan_after_three.calls > 3 else loss  # type: ignore[attr-defined]

    nan_after_three.calls = 0  # type: ignore[attr-defined]
    model = mlp()
    result = train(model, load_dataset("synthetic"), TrainConfig(epochs=3), loss_fn=nan_after_three)
    assert result.failed is not None and "non-finite training loss (nan)" in result.failed and "step 3" in result.failed
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never reached the weights
    assert 0.0 <= result.val_accuracy <= 1.0


def test_divergence_is_a_failure_reason() -> None:
    result = train(mlp(), load_dataset("synthetic"), TrainConfig(epochs=3, lr=1e4, momentum=0.0, diverge_above=50))
    assert result.failed is not None and ("diverged" in result.failed or "non-finite" in result.failed)


def test_bad_config_names_the_field_and_value() -> None:
    with pytest.raises(TrainError, match=r"schedule must be 'cosine' or 'step', but got 'linear'"):
        TrainConfig(schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(TrainError, match=r"batch_size must be an int >= 2.*got 1"):
        TrainConfig(batch_size=1)
    with pytest.raises(TrainError, match="Splits or a \\(train, val\\) pair"):
        train(mlp(), "digits", TrainConfig())  # type: ignore[arg-type]


def test_schedules() -> None:
    params = [nn.Parameter(torch.zeros(2, 2))]
    opt, sched = make_optimizer(params, TrainConfig(lr=1.0, schedule="step", step_gamma=0.1), total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    opt, sched = make_optimizer(params, TrainConfig(lr=1.0, schedule="cosine"), total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_threads_are_set_for_the_run_and_restored() -> None:
    seen: list[int] = []
    train(mlp(), load_dataset("synthetic"), TrainConfig(epochs=1, threads=2),
          on_epoch=lambda e, a: seen.append(torch.get_num_threads()) and False)
    assert seen == [2] and torch.get_num_threads() == 1


def test_evaluate_counts_correct_predictions() -> None:
    class AlwaysZero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.int64), 10).float()

    y = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])
    assert evaluate(AlwaysZero(), TensorDataset(torch.zeros(8, 3), y)) == pytest.approx(3 / 8)
