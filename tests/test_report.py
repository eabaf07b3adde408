"""``nas report RUN``: one Markdown and one self-contained HTML page per run folder, linking only what exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main
from nas.plots.testing import SyntheticRun, write_synthetic_run, write_winner
from nas.report import ReportOptions, write_report
from nas.run import load_run

LINK = re.compile(r"\]\(([^)]+)\)")  # Markdown links and images


def md_links(md: Path) -> list[str]:
    return LINK.findall(md.read_text(encoding="utf-8"))


def assert_links_exist(md: Path) -> list[str]:
    links = md_links(md)
    for link in links:
        assert not link.startswith(("/", "http")), f"{link} is not relative to the run folder"
        assert (md.parent / link).exists(), f"report links {link}, which does not exist"
    return links


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with one fine-tuned winner whose folder has no model.onnx (the report must not link it)."""
    folder = write_synthetic_run(tmp_path_factory.mktemp("report") / "demo", SyntheticRun(name="demo", trials=20))
    run = load_run(folder)
    best = run.front().sort_values("accuracy").iloc[-1]
    write_winner(folder, 1, int(best["number"]))
    return folder


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `nas hardware validate PROFILE --space S --json FILE` writes."""
    measured = [0.4 + 0.05 * i for i in range(12)]
    path = tmp_path_factory.mktemp("validate") / "validate.json"
    path.write_text(json.dumps({"profile": "reference-cpu", "space": "mobilenetv2-tiny", "networks": 12,
                                "calibrated": {"within_10pct": 1.0, "mape": 0.03, "spearman": 0.99},
                                "naive_sum": {"within_10pct": 0.4, "mape": 0.13, "spearman": 0.97},
                                "noise_floor_median_pct": 1.0, "measured_ms": measured,
                                "predicted_ms": measured, "naive_ms": [m * 0.87 for m in measured]}))
    return path


@pytest.fixture(scope="module")
def report(finished_run: Path, validation: Path) -> tuple[Path, Path]:
    return write_report(finished_run, ReportOptions(validation=validation))


def test_report_of_a_finished_run(finished_run: Path, report: tuple[Path, Path]) -> None:
    md, page = report
    assert (md, page) == (finished_run / "report.md", finished_run / "report.html")
    links = assert_links_exist(md)
    for picture in ("front", "hypervolume", "importance", "parallel", "latency", "latency-validation",
                    "compression-weights"):
        assert f"plots/{picture}.png" in links
    assert not any(link.endswith("model.onnx") for link in links)
    assert any(link.endswith("model.nasz") for link in links)
    text = md.read_text(encoding="utf-8")
    for section in ("## Experiment", "## Hardware profile", "## Budget and time spent", "## Pareto front",
                    "## Winners", "## Reproduce", "nas search experiments/demo.yaml", "100% within +-10%"):
        assert section in text
    front = load_run(finished_run).front()
    table = text.split("## Pareto front", 1)[1].split("![", 1)[0]
    assert sum(1 for line in table.splitlines() if line.startswith("| ") and line[2:3].isdigit()) == len(front)
    assert "still running" not in text


def test_html_page_is_self_contained_and_sortable(report: tuple[Path, Path]) -> None:
    page = report[1]
    html = page.read_text(encoding="utf-8")
    sources = re.findall(r"src='([^']+)'", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert '<table class="sortable">' in html and "addEventListener('click'" in html
    for href in re.findall(r'href="([^"]+)"', html):
        assert (page.parent / href).exists()


def test_report_while_the_search_runs(tmp_path: Path) -> None:
    folder = write_synthetic_run(tmp_path / "live", SyntheticRun(name="live", trials=8, running=2))
    md, _ = write_report(folder)
    assert "still running (2 trial(s) in progress)" in md.read_text(encoding="utf-8")
    assert_links_exist(md)


@pytest.mark.parametrize("spec", [SyntheticRun(name="empty", trials=0),
                                  SyntheticRun(name="infeasible", trials=4, latency_limit=0.01)],
                         ids=["no-trials", "only-infeasible"])
def test_report_of_a_run_with_nothing_to_draw(tmp_path: Path, spec: SyntheticRun) -> None:
    folder = write_synthetic_run(tmp_path / spec.name, spec)
    md, page = write_report(folder)
    text = md.read_text(encoding="utf-8")
    assert "not drawn (" in text
    assert not any(link.startswith("plots/") for link in assert_links_exist(md))
    assert "no fine-tuned winners yet" in text and page.is_file()


def test_cli_report(tmp_path: Path) -> None:
    folder = write_synthetic_run(tmp_path / "young", SyntheticRun(name="young", trials=0))
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").is_file() and (folder / "report.html").is_file()
    proc = subprocess.run([sys.executable, "-m", "nas", "report", str(tmp_path / "missing")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and proc.stderr.strip().count("\n") == 0
