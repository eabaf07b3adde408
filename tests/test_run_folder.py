"""nas.run, the run folder's one reader and writer: the hypervolume against independent computations,
the hypervolume history's rule, the trials table read back alike from CSV and Parquet, run.json's
round trip and its errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.errors import NasError
from nas.objectives import Objective
from nas.plots.testing import SyntheticRun, write_synthetic_run
from nas.run import RunFolder, RunInfo, hypervolume, hypervolume_history, load_run, read_trials, trials_frame, typed

#: Accuracy (maximised, loss 1 - v), latency against a reference (loss v / 1.6), size without one (unscaled).
ACC, LAT, SIZE = Objective.of("accuracy"), Objective.of("latency_ms", reference=1.6), Objective.of("size_kb")


def losses_of(values: np.ndarray, objectives: list[Objective]) -> np.ndarray:
    """The contract's normalisation, written out again: 1 - v, v / reference, v when there is no reference."""
    cols = []
    for j, o in enumerate(objectives):
        v = values[:, j]
        cols.append(1.0 - v if o.maximize else v / o.reference if o.reference else v)
    return np.column_stack(cols)


def area_2d(losses: np.ndarray) -> float:
    """The exact area dominated within the box below (1, 1): sweep the points by the first loss."""
    inside = losses[np.isfinite(losses).all(axis=1) & (losses < 1.0).all(axis=1)]
    inside = inside[np.argsort(inside[:, 0], kind="stable")]
    area, best_y = 0.0, 1.0
    for (x, y), x_next in zip(inside, [*inside[1:, 0], 1.0]):
        best_y = min(best_y, y)
        area += (x_next - x) * (1.0 - best_y)
    return area


def random_values(rng: np.random.Generator, n: int, objectives: list[Objective]) -> np.ndarray:
    """Objective values around the reference box, some beyond it, some NaN."""
    cols = []
    for o in objectives:
        if o.maximize:
            cols.append(rng.uniform(-0.1, 1.0, n))  # loss in [0, 1.1]: a few beyond the box
        else:
            cols.append(rng.uniform(0.0, 1.25, n) * (o.reference or 1.0))
    values = np.column_stack(cols)
    values[rng.random(values.shape) < 0.05] = np.nan
    return values


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_in_2d_is_the_exact_area(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for objectives in ([ACC, LAT], [ACC, SIZE], [LAT, SIZE]):
        values = random_values(rng, int(rng.integers(1, 40)), objectives)
        assert hypervolume(values, objectives) == pytest.approx(area_2d(losses_of(values, objectives)), abs=1e-12)


def test_hypervolume_of_nothing_inside_the_box_is_zero() -> None:
    assert hypervolume(np.empty((0, 2)), [ACC, LAT]) == 0.0
    outside = np.array([[0.0, 0.8], [0.5, 1.6], [np.nan, 0.1], [1.2, np.inf]])  # accuracy 0 is the reference
    assert hypervolume(outside, [ACC, LAT]) == 0.0
    assert hypervolume(np.array([[1.0, 0.0]]), [ACC, LAT]) == pytest.approx(1.0)  # the ideal point


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_in_3d_agrees_with_monte_carlo(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    objectives = [ACC, LAT, SIZE]
    values = random_values(rng, 25, objectives)
    losses = losses_of(values, objectives)
    losses = losses[np.isfinite(losses).all(axis=1)]
    samples = rng.random((100_000, 3))  # the box [0, 1]^3: every loss here is >= 0
    dominated = (losses[None, :, :] <= samples[:, None, :]).all(axis=2).any(axis=1)
    share = float(dominated.mean())
    tolerance = 5 * math.sqrt(share * (1 - share) / len(samples)) + 1e-4
    assert share > 0.05, "the random front should cover some of the box"
    assert hypervolume(values, objectives) == pytest.approx(share, abs=tolerance)


def random_trials(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """A trials table as the readers see it: every state, infeasible rows, NaN objectives, and
    completion times in another order than the trial numbers."""
    states = rng.choice(["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING"], n)
    when = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.permutation(n), unit="s")
    values = random_values(rng, n, [ACC, LAT])
    return pd.DataFrame({
        "number": np.arange(n), "state": states, "accuracy": values[:, 0], "latency_ms": values[:, 1],
        "feasible": (states == "COMPLETE") & (rng.random(n) < 0.8),
        "datetime_complete": [t.isoformat() if s != "RUNNING" else "" for t, s in zip(when, states)],
    })


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_history_is_the_hypervolume_of_each_finished_prefix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trials = random_trials(rng, 40)
    history = hypervolume_history(trials, [ACC, LAT])
    finished = trials[trials["state"] != "RUNNING"]
    finished = finished.assign(_t=pd.to_datetime(finished["datetime_complete"])).sort_values("_t")
    assert list(history["number"]) == list(finished["number"])  # one row per finished trial, in completion order
    assert list(history["finished"]) == list(range(1, len(finished) + 1))
    assert (np.diff(history["hypervolume"]) >= 0).all()
    for i in range(len(finished)):
        prefix = finished.iloc[: i + 1]
        counted = prefix[(prefix["state"] == "COMPLETE") & prefix["feasible"]]
        expected = hypervolume(counted[["accuracy", "latency_ms"]].to_numpy(), [ACC, LAT])
        assert history["hypervolume"].iloc[i] == pytest.approx(expected, abs=1e-12)
        if i and not (prefix["state"].iloc[-1] == "COMPLETE" and prefix["feasible"].iloc[-1]):
            assert history["hypervolume"].iloc[i] == history["hypervolume"].iloc[i - 1]  # added nothing


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every state: pruned, failed, complete (feasible or not, trained or not), running."""
    return write_synthetic_run(tmp_path_factory.mktemp("run") / "rt", SyntheticRun(name="rt", trials=14, running=2))


def test_trials_table_reads_back_from_the_writer(synthetic: Path) -> None:
    run = load_run(synthetic)
    study = run.study()
    written = typed(trials_frame(study.get_trials(), run.objectives, study.directions), run.objectives)
    read = read_trials(synthetic, run.objectives)  # trials.parquet
    assert set(read["state"]) == {"PRUNED", "FAIL", "COMPLETE", "RUNNING"}
    assert read["feasible"].any() and not read["feasible"].all() and (~read["trained"]).any()
    pd.testing.assert_frame_equal(read, written, check_dtype=False)


def _csv_only(synthetic: Path, tmp_path: Path) -> pd.DataFrame:
    shutil.copy(synthetic / "trials.csv", tmp_path / "trials.csv")
    return read_trials(tmp_path, load_run(synthetic).objectives)


def test_trials_table_is_the_same_from_csv_and_parquet(synthetic: Path, tmp_path: Path) -> None:
    """The columns the readers type (see ``nas.run.typed``): same values and dtypes from either file."""
    objectives = load_run(synthetic).objectives
    from_parquet, from_csv = read_trials(synthetic, objectives), _csv_only(synthetic, tmp_path)
    assert list(from_csv.columns) == list(from_parquet.columns)
    typed_cols = ["number", "state", "feasible", "pareto", "trained", "label", "madds", "params", "size_kb",
                  "latency_ms", *[o.name for o in objectives]]
    pd.testing.assert_frame_equal(from_csv[typed_cols], from_parquet[typed_cols])
    numeric = [c for c in from_parquet.columns if c.startswith(("c:", "param:")) or c in ("epochs", "duration_s")]
    pd.testing.assert_frame_equal(from_csv[numeric], from_parquet[numeric], check_dtype=False)


def test_text_columns_are_the_same_from_csv_and_parquet(synthetic: Path, tmp_path: Path) -> None:
    from_parquet, from_csv = read_trials(synthetic, load_run(synthetic).objectives), _csv_only(synthetic, tmp_path)
    text = ["fail_reason", "retry_of", "worker", "history", "candidate", "datetime_start", "datetime_complete"]
    pd.testing.assert_frame_equal(from_csv[text], from_parquet[text], check_dtype=False)


# --------------------------------------------------------------------------- run.json


def test_run_info_round_trips_and_keeps_unknown_keys(synthetic: Path) -> None:
    info = load_run(synthetic).info
    assert RunInfo.from_dict(info.to_dict()) == info
    data = {**info.to_dict(), "from_a_newer_version": {"x": [1, 2]}}
    again = RunInfo.from_dict(data)
    assert again.extra == {"from_a_newer_version": {"x": [1, 2]}} and again.to_dict() == data
    assert again.constraints[0].limit == 1.0 and again.latency_profile == "reference-cpu"


@pytest.mark.parametrize("text, says", [
    ('{"name": "x", "objectives": []}', "'objectives' is missing"),
    ('{"name": "x"}', "'objectives' is missing"),
    ('{"name": "x", "objectives": [', "cannot read"),
    ('[1, 2, 3]', ""),
    ('"just text"', ""),
    ('{"name": "x", "objectives": [{"name": "accuracy"}], "constraints": [{"op": "<="}]}', "not a run description"),
], ids=["empty-objectives", "no-objectives", "not-json", "a-list", "a-string", "bad-constraint"])
def test_bad_run_json_is_a_one_line_error_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "run.json").write_text(text, encoding="utf-8")
    with pytest.raises(NasError) as err:
        load_run(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "run.json") in message and says in message and "\n" not in message


def test_a_folder_without_run_json_is_not_a_run_folder(tmp_path: Path) -> None:
    assert not RunFolder(tmp_path).exists()
    with pytest.raises(NasError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(NasError, match="does not exist"):
        load_run(tmp_path / "missing")
