"""nas.plots and ``nas plot``: every picture renders at its size on synthetic run folders,
thin or hopeless runs get a clear message, and matplotlib's global state is left alone."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

import nas
from nas.cli import main
from nas.errors import NasError
from nas.plots import (
    front_figsize,
    pixel_size,
    plot_front,
    plot_hypervolume,
    plot_importance,
    plot_latency_breakdown,
    plot_latency_validation,
    plot_parallel,
)
from nas.plots.testing import SyntheticRun, write_synthetic_run
from nas.run import load_run

WIDTH_PX = 1050  # every picture is 7 inches at 150 dpi


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR), without an image library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_png(path: Path, size: tuple[int, int] | None = None) -> None:
    assert path.is_file() and path.stat().st_size > 5000, f"{path} missing or nearly empty"
    w, h = png_size(path)
    if size is not None:
        assert (w, h) == size
    assert w == WIDTH_PX and 300 <= h <= 3000


@pytest.fixture(scope="module")
def run3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three objectives (accuracy, latency, size), a latency constraint, pruned/failed/untrained trials."""
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "three", SyntheticRun(name="three", trials=24))


@pytest.fixture(scope="module")
def run2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "two",
                               SyntheticRun(name="two", objectives=("accuracy", "madds"), trials=16,
                                            latency_limit=1.1, sampler="tpe", seed=1))


@pytest.fixture(scope="module")
def thin_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs nothing can be drawn from: no trial yet, one trial, only infeasible trials."""
    root = tmp_path_factory.mktemp("thin")
    return {
        "empty": write_synthetic_run(root / "empty", SyntheticRun(name="empty", trials=0)),
        "one": write_synthetic_run(root / "one", SyntheticRun(name="one", trials=1, pruned=0, failed=0,
                                                              latency_limit=10.0)),
        "infeasible": write_synthetic_run(root / "infeasible", SyntheticRun(name="infeasible", trials=6,
                                                                            latency_limit=0.01)),
    }


def test_front_grid_for_three_objectives(run3: Path, tmp_path: Path) -> None:
    run = load_run(run3)
    out = plot_front(run, tmp_path / "front.png")
    from nas.plots._search import pick_winners

    assert_png(out, pixel_size(*front_figsize(3, len(pick_winners(run)))))


def test_front_single_panel_for_two_objectives_with_log_axis(run2: Path, tmp_path: Path) -> None:
    run = load_run(run2)
    from nas.plots._search import _use_log, pick_winners

    assert _use_log(run.completed()["madds"].to_numpy())  # MAdds span decades here: the axis is logarithmic
    assert_png(plot_front(run, tmp_path / "front.png"), pixel_size(*front_figsize(2, len(pick_winners(run)))))


def test_winners_are_front_members_when_nothing_was_fine_tuned(run3: Path) -> None:
    from nas.plots._search import pick_winners

    run = load_run(run3)
    chosen = pick_winners(run)
    front = set(run.front()["number"].astype(int))
    assert chosen and set(chosen) <= front and len(chosen) <= 6


def test_hypervolume_one_run_and_several_overlaid(run2: Path, run3: Path, tmp_path: Path) -> None:
    from nas.plots._search import hypervolume_height

    assert_png(plot_hypervolume([load_run(run3)], tmp_path / "hv.png"), pixel_size(7.0, hypervolume_height(1)))
    assert_png(plot_hypervolume([load_run(run2), load_run(run3)], tmp_path / "hv2.png"),
               pixel_size(7.0, hypervolume_height(2)))


def test_hypervolume_file_matches_recomputation(run3: Path) -> None:
    from nas.run import hypervolume_history

    run = load_run(run3)
    again = hypervolume_history(run.trials, run.objectives)
    written = run.hypervolume()
    assert list(again["number"]) == list(written["number"])
    assert again["hypervolume"].to_numpy() == pytest.approx(written["hypervolume"].to_numpy())
    assert 0 < written["hypervolume"].iloc[-1] <= 1


def test_importance_and_parallel_coordinates(run3: Path, tmp_path: Path) -> None:
    run = load_run(run3)
    assert_png(plot_importance(run, tmp_path / "importance.png"))
    assert_png(plot_parallel(run, tmp_path / "parallel.png"), pixel_size(7.0, 4.6))


def test_latency_breakdown_measured_table_and_roofline(tmp_path: Path) -> None:
    arch = nas.load_space("mobilenetv2-tiny").random(0).arch
    for name in ("reference-cpu", "raspberry-pi-4"):
        assert_png(plot_latency_breakdown(nas.get_profile(name), arch, tmp_path / f"{name}.png", label="seed 0"))


def test_latency_validation_scatter(tmp_path: Path) -> None:
    measured = [0.5 + 0.1 * i for i in range(20)]
    result = {"profile": "reference-cpu", "space": "mobilenetv2-tiny", "networks": 20,
              "calibrated": {"within_10pct": 0.9, "mape": 0.05, "spearman": 0.98},
              "naive_sum": {"within_10pct": 0.5, "mape": 0.12, "spearman": 0.97}, "noise_floor_median_pct": 1.2,
              "measured_ms": measured, "predicted_ms": [m * 1.03 for m in measured],
              "naive_ms": [m * 0.85 for m in measured]}
    assert_png(plot_latency_validation(result, tmp_path / "val.png"), pixel_size(7.0, 6.0))
    with pytest.raises(NasError, match="nas hardware validate"):
        plot_latency_validation({"profile": "x"}, tmp_path / "bad.png")


def _agreement(reference: object) -> object:
    """An evaluation without a dataset: how often the compressed model's top class equals the original's."""
    import torch

    x = torch.randn(64, *reference.arch.input_shape, generator=torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    model = reference.model  # type: ignore[attr-defined]
    with torch.no_grad():
        want = model.eval()(x).argmax(1)

    def evaluate(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float((m.eval()(x).argmax(1) == want).float().mean())

    return evaluate


def small_candidate() -> nas.Candidate:
    """Three weight layers: k-means (scikit-learn, per layer) stays quick."""
    arch = nas.ArchSpec((1, 8, 8), (nas.Conv(out=16), nas.Conv(out=32, stride=2), nas.GlobalAvgPool(),
                                    nas.Linear(out=10)))
    return nas.Candidate(arch, nas.CompressionSpec())


def test_compression_pictures_and_layer_table(tmp_path: Path) -> None:
    import types

    import torch

    from nas.plots import compression_tradeoff, layer_table, plot_compression_tradeoff, plot_weight_distribution

    torch.manual_seed(0)
    cand = small_candidate()
    model = nas.build_model(cand.arch)
    evaluate = _agreement(types.SimpleNamespace(arch=cand.arch, model=model))
    table = compression_tradeoff(model, cand.arch, evaluate, sparsities=(0.5,), bits=(4,))  # type: ignore[arg-type]
    assert list(table["method"]) == ["uncompressed", "pruning only", "quantization only", "pruning + quantization"]
    assert table["accuracy"].iloc[0] == 1.0 and (table["size %"].iloc[1:] < 100).all()
    assert_png(plot_compression_tradeoff(table, tmp_path / "tradeoff.png"), pixel_size(7.0, 4.6))
    assert_png(plot_weight_distribution(model, tmp_path / "weights.png", sparsity=0.8, bits=3), pixel_size(7.0, 3.4))
    spec = nas.CompressionSpec(sparsity_conv=0.5, sparsity_linear=0.5, codebook_bits=5)
    layers = layer_table(cand.arch, spec)
    total = layers.iloc[-1]
    assert total["layer"] == "total" and total["weights"] == sum(s.weights for s in nas.size_report(cand.arch, spec))
    dense = sum(s.dense_bits for s in nas.size_report(cand.arch, spec))
    layer_bits = nas.size_bits(cand.arch, spec) - nas.cost.file_overhead_bits(cand.arch, spec)  # no header
    assert total["rate P+Q+H"] == pytest.approx(dense / layer_bits, rel=1e-4)  # whole bits


@pytest.mark.parametrize("which", ["empty", "one", "infeasible"])
def test_thin_runs_give_a_clear_message(thin_runs: dict[str, Path], which: str, tmp_path: Path) -> None:
    run = load_run(thin_runs[which])
    expected = {"empty": "no completed trials yet", "one": "only 1 completed trial",
                "infeasible": "are infeasible"}[which]
    for draw in (lambda: plot_front(run, tmp_path / "f.png"), lambda: plot_hypervolume([run], tmp_path / "h.png"),
                 lambda: plot_importance(run, tmp_path / "i.png"), lambda: plot_parallel(run, tmp_path / "p.png")):
        with pytest.raises(NasError, match=expected):
            draw()
    assert not list(tmp_path.iterdir())


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(NasError, match="no run.json"):
        load_run(tmp_path)


def test_global_matplotlib_state_is_left_alone(run3: Path, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = {k: v for k, v in matplotlib.rcParams.items() if k != "backend"}
    run = load_run(run3)
    plot_front(run, tmp_path / "f.png")
    plot_importance(run, tmp_path / "i.png")  # Optuna's: pyplot and plt.style.use("ggplot") inside
    after = {k: v for k, v in matplotlib.rcParams.items() if k != "backend"}
    assert after == before
    assert plt.get_fignums() == []


def test_cli_plot_run(run3: Path, tmp_path: Path) -> None:
    assert main(["plot", str(run3), "--out", str(tmp_path), "--what", "front,hypervolume,latency"]) == 0
    for name in ("front", "hypervolume", "latency"):
        assert_png(tmp_path / f"{name}.png")


def test_cli_plot_several_runs_compare_hypervolume(run2: Path, run3: Path, tmp_path: Path) -> None:
    assert main(["plot", str(run2), str(run3), "--out", str(tmp_path), "--what", "hypervolume"]) == 0
    assert_png(tmp_path / "hypervolume-compare.png")
    assert_png(tmp_path / "two-hypervolume.png")


def test_cli_plot_compression_checkpoint(tmp_path: Path) -> None:
    import torch

    from nas.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cand = small_candidate()
    ckpt = save_checkpoint(tmp_path / "m.safetensors", nas.build_model(cand.arch), cand, {"dataset": "digits"})
    assert main(["plot", "--compression", str(ckpt), "--no-tradeoff", "--out", str(tmp_path / "p")]) == 0
    assert_png(tmp_path / "p" / "compression-weights.png")
    text = (tmp_path / "p" / "compression-layers.md").read_text()
    assert "| total |" in text and "rate P+Q+H" in text


def test_cli_errors_are_one_line_exit_2(thin_runs: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nas", "plot", str(thin_runs["empty"])], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no completed trials yet" in proc.stderr and "nothing to plot" in proc.stderr
    assert main(["plot", str(thin_runs["one"]), "--what", "bogus"]) == 2
    assert main(["plot"]) == 2


def test_importance_leaves_out_trials_rejected_before_training(run3: Path) -> None:
    from nas.plots._search import _trained_only

    run = load_run(run3)
    study = _trained_only(run, run.study())
    done = run.completed()
    assert (~done["trained"]).any(), "the fixture should have untrained trials"
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    # add_trials numbers the copies afresh: compare the accuracies instead of the numbers
    assert sorted(t.values[0] for t in complete) == pytest.approx(sorted(done.loc[done["trained"], "accuracy"]))
    assert len(run.study().trials) == len(run.trials)  # the stored study is untouched
