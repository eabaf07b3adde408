"""How far to trust a front (issue 15 item 7): the winners' search-time accuracy against what they delivered."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nas.errors import NasError
from nas.plots import fidelity, pixel_size
from nas.plots.testing import SyntheticRun, write_synthetic_run, write_winner
from nas.run import load_run

from _runs import nas_cmd, without_warnings


def nas_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=300)


def summary(search: list[float], delivered: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"rank": range(1, len(search) + 1), "search_val_accuracy": search,
                         "compressed_test_accuracy": delivered})


def test_agreeing_ranks_correlate_and_the_gap_is_in_points() -> None:
    agreement = fidelity(summary([0.80, 0.70, 0.60, 0.50], [0.85, 0.72, 0.61, 0.40]))
    assert agreement.n == 4 and agreement.spearman == pytest.approx(1.0) and agreement.kendall == pytest.approx(1.0)
    assert agreement.mean_gap == pytest.approx((5 + 2 + 1 - 10) / 4)
    assert agreement.mean_abs_gap == pytest.approx((5 + 2 + 1 + 10) / 4)
    assert "Spearman +1.00" in agreement.sentence() and "0.5 points below" in agreement.sentence()


def test_reversed_ranks_and_rows_without_a_delivered_accuracy() -> None:
    agreement = fidelity(summary([0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.6, 0.7, 0.8, np.nan]))
    assert agreement.n == 4  # the winner that failed before compression has no delivered accuracy
    assert agreement.spearman == pytest.approx(-1.0) and agreement.kendall == pytest.approx(-1.0)


def test_two_winners_or_ties_give_no_correlation() -> None:
    two = fidelity(summary([0.9, 0.8], [0.7, 0.75]))
    assert two.spearman is None and "too few winners to rank (2; at least 3)" in two.sentence()
    tied = fidelity(summary([0.9, 0.8, 0.7], [0.5, 0.5, 0.5]))
    assert tied.spearman is None and "the accuracies tie" in tied.sentence()


def test_a_summary_without_the_columns_is_a_clear_error() -> None:
    with pytest.raises(NasError, match="no compressed_test_accuracy column"):
        fidelity(pd.DataFrame({"search_val_accuracy": [0.5]}))
    with pytest.raises(NasError, match="no winner has both"):
        fidelity(summary([0.5], [np.nan]))


@pytest.fixture(scope="module")
def four_winners(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run with four winners whose delivered accuracy ranks them in reverse, 5 points lower."""
    folder = write_synthetic_run(tmp_path_factory.mktemp("fidelity") / "run",
                                 SyntheticRun(name="fid", objectives=("accuracy", "size_kb"), trials=24))
    front = load_run(folder).front().sort_values("accuracy", ascending=False)
    for rank, number in enumerate(front["number"].head(4), start=1):
        write_winner(folder, rank, int(number))
    path = folder / "winners" / "summary.csv"
    table = pd.read_csv(path)
    table["compressed_test_accuracy"] = table["search_val_accuracy"].to_numpy()[::-1] - 0.05
    table.to_csv(path, index=False)
    return folder


def test_plot_and_report_show_how_far_to_trust_the_front(four_winners: Path) -> None:
    done = nas_run("plot", str(four_winners))
    assert done.returncode == 0, done.stderr
    picture = four_winners / "plots" / "fidelity.png"
    assert f"wrote {picture}" in done.stdout
    with Image.open(picture) as png:
        assert png.size == pixel_size(5.6, 5.0)
        assert "Spearman -1.00" in png.text["Description"]
    report = nas_run("report", str(four_winners))
    assert report.returncode == 0, report.stderr
    md = (four_winners / "report.md").read_text()
    assert "### How far to trust the front" in md and "Spearman -1.00, Kendall -1.00 over 4 winners" in md
    assert "5.0 points below the search's" in md and "(plots/fidelity.png)" in md


def test_before_winners_nothing_is_drawn_and_the_report_says_trust_is_unknown(tmp_path: Path) -> None:
    folder = write_synthetic_run(tmp_path / "run", SyntheticRun(name="young", trials=12))
    done = nas_run("plot", str(folder))
    assert done.returncode == 0 and "fidelity" not in done.stderr + done.stdout, done.stderr
    asked = nas_run("plot", str(folder), "--what", "fidelity")
    assert asked.returncode == 2 and "no fine-tuned winners yet" in without_warnings(asked.stderr), asked.stderr
    assert nas_run("report", str(folder)).returncode == 0
    assert "how far to trust the front is unknown" in (folder / "report.md").read_text()
