"""Issue 19, items 15 and 17-21, through the `nas` command as a user runs it: the report's commands,
the front and importance pictures, closed pipes, messages that point the right way, the README."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _runs import nas_cmd, without_warnings, write

import nas
from nas.checkpoint import save_checkpoint
from nas.plots.testing import SyntheticRun, write_synthetic_run, write_winner
from nas.run import load_run

README = Path(__file__).resolve().parents[1] / "README.md"


def nas_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=300, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single `nas: error:` line of a failed command (exit 2, no traceback)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = without_warnings(result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run (accuracy, size) with two fine-tuned winners: the most accurate and the smallest."""
    folder = write_synthetic_run(tmp_path_factory.mktemp("i19") / "ft",
                                 SyntheticRun(name="ft", objectives=("accuracy", "size_kb"), trials=24))
    front = load_run(folder).front().sort_values("accuracy")
    write_winner(folder, 1, int(front.iloc[-1]["number"]))
    write_winner(folder, 2, int(front.iloc[0]["number"]))
    return folder


# --------------------------------------------------------------------------- item 15


@pytest.mark.slow
def test_parallel_coordinates_show_the_importance_pictures_top_choices(tmp_path: Path) -> None:
    from nas.plots._search import PARALLEL_PARAMS, rank_params

    folder = write_synthetic_run(tmp_path / "imp", SyntheticRun(name="imp", trials=24))
    result = nas_run("plot", str(folder), "--what", "importance,parallel")
    assert result.returncode == 0, result.stderr
    plots = folder / "plots"
    assert (plots / "importance.png").is_file() and (plots / "parallel.png").is_file()
    table = pd.read_csv(plots / "importance.csv")
    objectives = [c for c in table.columns if c not in ("rank", "parameter")]
    assert len(objectives) == 3  # one importance column per objective
    best = table[objectives].max(axis=1).to_numpy()
    assert list(best) == sorted(best, reverse=True), "importance.csv must be in ranking order"
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    # The parallel coordinates take the first PARALLEL_PARAMS of this ranking (fitted with the same seed).
    ranking = rank_params(load_run(folder))
    assert ranking.names[:PARALLEL_PARAMS] == table["parameter"].tolist()[:PARALLEL_PARAMS]


# --------------------------------------------------------------------------- item 17


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A cost-only search (no training, seconds) started in one folder: (start folder, experiment, run)."""
    start = tmp_path_factory.mktemp("i19") / "start"
    start.mkdir()
    exp = write(start, {"name": "r17", "space": "mobilenetv2-tiny", "objectives": ["size_kb", "madds"],
                        "budget": {"trials": 4}, "sampler": "random", "seed": 0,
                        "winners": {"top": 2, "epochs": 1}})
    result = nas_run("search", "exp.yaml", "--out", "runs/r17", "--no-progress", cwd=start)
    assert result.returncode == 0, result.stderr
    return start, exp, start / "runs" / "r17"


def _commands(report: Path) -> list[str]:
    block = report.read_text(encoding="utf-8").split("## Reproduce", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("   #")[0].strip() for line in block.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
def test_report_commands_work_from_anywhere_and_use_winners_top(cost_run: tuple[Path, Path, Path],
                                                                tmp_path: Path) -> None:
    start, _, run = cost_run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = nas_run("report", str(run), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    text = (run / "report.md").read_text(encoding="utf-8")
    assert "repository root" not in text
    commands = _commands(run / "report.md")
    original, again, finetune, report = commands
    assert original == f"cd {shlex.quote(str(start.resolve()))} && nas search exp.yaml --out runs/r17 --no-progress"
    assert finetune == f"nas finetune {shlex.quote(str(run.resolve()))} --top 2"  # winners.top: 2, not 3
    assert again.startswith(f"nas search {shlex.quote(str((run / 'experiment.yaml').resolve()))} --out ")
    # The printed commands run from another folder: the original resumes the same run (its budget is spent).
    python_nas = " ".join(shlex.quote(a) for a in nas_cmd())
    for command in (original, report):
        done = subprocess.run(command.replace("nas ", f"{python_nas} "), shell=True, cwd=elsewhere,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert not (elsewhere / "runs").exists() and len(load_run(run).trials) == 4


def test_resume_keeps_the_current_winners_section(cost_run: tuple[Path, Path, Path]) -> None:
    start, exp, run = cost_run
    data = yaml.safe_load(exp.read_text())
    data["winners"]["top"] = 1
    data["budget"]["trials"] = 5
    exp.write_text(yaml.safe_dump(data))
    result = nas_run("search", "exp.yaml", "--out", "runs/r17", "--no-progress", cwd=start)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((run / "experiment.yaml").read_text())["winners"]["top"] == 1
    assert load_run(run).experiment().config.winners.top == 1  # what `nas finetune RUN` reads
    assert nas_run("report", str(run)).returncode == 0
    assert f"nas finetune {shlex.quote(str(run.resolve()))} --top 1" in _commands(run / "report.md")


def test_report_shows_winners_accuracy_in_percent(fine_tuned: Path) -> None:
    result = nas_run("report", str(fine_tuned))
    assert result.returncode == 0, result.stderr
    section = (fine_tuned / "report.md").read_text(encoding="utf-8").split("## Winners", 1)[1].split("##", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| rank"))
    assert "compressed_test_accuracy %" in header and "search_val_accuracy %" in header
    summary = pd.read_csv(fine_tuned / "winners" / "summary.csv")
    for acc in summary["compressed_test_accuracy"]:
        assert f"{100 * acc:.2f}" in section
        assert f"| {acc:.4f}" not in section and f"{acc:.6g} |" not in section


# --------------------------------------------------------------------------- item 18


def test_front_key_names_winners_and_what_they_delivered(fine_tuned: Path) -> None:
    from nas.plots._search import _key_lines, pick_winners

    result = nas_run("plot", str(fine_tuned), "--what", "front")
    assert result.returncode == 0, result.stderr
    assert (fine_tuned / "plots" / "front.png").is_file()
    run = load_run(fine_tuned)
    letters = dict(zip(pick_winners(run), "AB"))
    key = "\n".join(_key_lines(run, letters))
    assert "#" not in key  # no "A #1": a trial number read as a rank
    summary = pd.read_csv(fine_tuned / "winners" / "summary.csv")
    for row in summary.itertuples():
        assert f"winner {row.rank} (trial {row.trial})" in key
        delivered = f"{100 * row.compressed_test_accuracy:.1f}% test acc., file {row.file_bytes / 1000:.3g} KB"
        assert f"delivered: {delivered}" in key


def test_front_better_hint_is_outside_the_data(fine_tuned: Path) -> None:
    from matplotlib.figure import Figure

    from nas.plots._search import _draw_pair

    run = load_run(fine_tuned)
    ax = Figure().add_subplot()
    _draw_pair(ax, run, run.objective("size_kb"), run.objective("accuracy"), {})
    assert not [t for t in ax.texts if "better" in t.get_text()]  # nothing drawn over the points
    assert ax.get_title(loc="right") == "better: ← ↑"


def test_runs_sharing_a_name_get_distinct_files_and_legend_entries(tmp_path: Path) -> None:
    from nas.plots._search import hypervolume_labels

    a = write_synthetic_run(tmp_path / "a" / "same", SyntheticRun(name="same", objectives=("accuracy", "size_kb"),
                                                                 trials=8, seed=1))
    b = write_synthetic_run(tmp_path / "b" / "same", SyntheticRun(name="same", objectives=("accuracy", "size_kb"),
                                                                 trials=8, seed=2))
    out = tmp_path / "cmp"
    result = nas_run("plot", str(a), str(b), "--what", "hypervolume", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["hypervolume-compare.png", "same-1-hypervolume.png",
                                                         "same-2-hypervolume.png"]
    labels = hypervolume_labels([load_run(a), load_run(b)])
    assert len(set(labels)) == 2 and str(a) in labels[0] and str(b) in labels[1]


# --------------------------------------------------------------------------- item 19


@pytest.mark.parametrize("args", [("spaces",), ("sample", "mobilenetv2-tiny", "-n", "4"),
                                  ("cost", "mobilenetv2-tiny"), ("compress", "CAND")])
def test_a_closed_pipe_ends_quietly(args: tuple[str, ...], tmp_path: Path) -> None:
    cand = tmp_path / "cand.json"
    cand.write_text(nas.load_space("mobilenetv2-tiny").random(0).to_json())
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` after it has read what it wanted: every write fails
    try:
        proc = subprocess.run(nas_cmd(*(str(cand) if a == "CAND" else a for a in args)), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert without_warnings(proc.stderr) == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a writer whose reader left


# --------------------------------------------------------------------------- item 20


def test_input_mismatch_gives_the_command_line_fix(tmp_path: Path) -> None:
    cand = tmp_path / "lenet.json"
    cand.write_text(nas.load_space("lenet").random(0).to_json())  # 28x28 input; digits are 8x8
    line = one_line_error(nas_run("train", "--candidate", str(cand), "--dataset", "digits", "--epochs", "1",
                                  "-o", str(tmp_path / "m.safetensors")))
    assert "with_input" not in line
    assert f"the candidate in {cand}" in line and "--space SPACE" in line and "'digits'" in line


def test_teacher_input_mismatch_names_the_teacher(tmp_path: Path) -> None:
    cand = nas.load_space("lenet").random(1)  # a 28x28 teacher for 8x8 digits
    teacher = save_checkpoint(tmp_path / "teacher.safetensors", nas.build_model(cand.arch), cand)
    line = one_line_error(nas_run("finetune", "--space", "mobilenetv2-tiny", "--dataset", "digits", "--teacher",
                                  str(teacher), "--epochs", "1", "-o", str(tmp_path / "s.safetensors")))
    assert f"the teacher checkpoint {teacher}" in line and "with_input" not in line
    assert "nas train" in line and "--dataset digits" in line


def test_unknown_profile_names_the_experiment_file(tmp_path: Path) -> None:
    exp = write(tmp_path, {"name": "p", "space": "mobilenetv2-tiny", "objectives": ["size_kb", "latency_ms"],
                           "profiles": ["no-such-device"], "budget": {"trials": 2}})
    line = one_line_error(nas_run("search", str(exp), "--out", str(tmp_path / "run")))
    assert f"{exp}:" in line and "no-such-device" in line


def test_missing_space_file_shows_the_resolved_path(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    write(tmp_path / "exp", {"name": "s", "space": "spaces/mine.yaml", "objectives": ["size_kb", "madds"],
                             "budget": {"trials": 2}})
    line = one_line_error(nas_run("search", "exp/exp.yaml", "--out", "run", cwd=tmp_path))
    assert str((tmp_path / "exp" / "spaces" / "mine.yaml").resolve()) in line


def test_spec_file_missing_or_not_json_is_named(tmp_path: Path) -> None:
    cand = tmp_path / "cand.json"
    cand.write_text(nas.load_space("mobilenetv2-tiny").random(0).to_json())
    line = one_line_error(nas_run("compress", str(cand), "--spec", "nofile.json", cwd=tmp_path))
    assert "'nofile.json'" in line and "Expecting value" not in line and "existing file" in line
    (tmp_path / "spec.yaml").write_text("sparsity_conv: 0.5\n")
    line = one_line_error(nas_run("compress", str(cand), "--spec", "spec.yaml", cwd=tmp_path))
    assert "--spec file 'spec.yaml' is not valid JSON" in line
    assert nas_run("compress", str(cand), "--spec", '{"sparsity_conv": 0.5}').returncode == 0


def test_cost_tells_a_checkpoint_and_a_container_from_a_space(tmp_path: Path) -> None:
    cand = nas.load_space("mobilenetv2-tiny").random(3)
    ckpt = save_checkpoint(tmp_path / "teacher.safetensors", nas.build_model(cand.arch), cand)
    result = nas_run("cost", str(ckpt))
    assert result.returncode == 0, result.stderr
    assert "search space" not in result.stdout + result.stderr
    assert f"{nas.count(cand.arch).params:,}" in result.stdout and "(checkpoint)" in result.stdout
    (tmp_path / "cand.json").write_text(cand.to_json())
    assert nas_run("compress", str(tmp_path / "cand.json"), "--out", str(tmp_path / "m.nasz")).returncode == 0
    line = one_line_error(nas_run("cost", str(tmp_path / "m.nasz")))
    assert "compressed container" in line and "search space file" not in line and "checkpoint (.safetensors)" in line


# --------------------------------------------------------------------------- item 21


def test_readme_documents_every_proxy_key() -> None:
    """Documentation, so read from the README itself: each `proxy:` key next to the others."""
    from nas.experiment import ProxyConfig

    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("The `proxy:` keys"):]
    paragraph = paragraph[:paragraph.index("\n- ")]
    for key in ProxyConfig.model_fields:
        assert re.search(rf"`{key}[`:]", paragraph), f"README does not document proxy.{key}"
