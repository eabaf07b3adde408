"""``nas report RUN``: one page about a run, as Markdown and as self-contained HTML, in the run folder.

The page says what was searched (experiment, hardware profile and where its numbers come
from), how much of the budget went, the Pareto front as a table (sortable in HTML), the
pictures of :mod:`nas.plots` (written to ``RUN/plots/``), the fine-tuned winners with
their real file sizes, and the commands that reproduce the run. It can be written at any
time, also while the search runs; a picture that cannot be drawn yet is replaced by the
reason. ``report.md`` links pictures and files relative to the run folder, and only those
that exist; ``report.html`` embeds the pictures, so it can be sent on its own.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.files import write_atomic
from nas.plots import (
    LAYER_FORMATS,
    chosen_trial,
    fidelity,
    html_table,
    layer_table,
    markdown_table,
    plot_fidelity,
    plot_front,
    plot_hypervolume,
    plot_importance,
    plot_latency_validation,
    plot_parallel,
    plot_weight_distribution,
    rank_params,
    read_validation,
    run_latency_breakdown,
    run_profile,
    tradeoff_picture,
    weight_picture_settings,
)
from nas.run import RunFolder, load_run, read_table, rejected

# --------------------------------------------------------------------------- a tiny document model

Segment = str | tuple[str, str]  # plain text (with `code`), or (text, relative link)


@dataclass
class Doc:
    """Blocks rendered to both Markdown and HTML, so the two pages always say the same."""

    folder: Path
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, *segments: Segment) -> None:
        self.blocks.append(("p", list(segments)))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def items(self, rows: list[list[Segment]]) -> None:
        self.blocks.append(("list", rows))

    def table(self, df: Any, formats: dict[str, str] | None = None, sortable: bool = False) -> None:
        self.blocks.append(("table", (df, formats or {}, sortable)))

    def kv(self, pairs: list[tuple[str, str]]) -> None:
        import pandas as pd

        self.table(pd.DataFrame(pairs, columns=["", " "]))

    def image(self, path: Path | None, alt: str, missing: str = "") -> None:
        """A picture, or the reason it is missing; links only a file that exists."""
        if path is not None and path.is_file():
            self.blocks.append(("img", (path, alt)))
        else:
            self.note(f"{alt}: not drawn ({missing or 'no picture'}).")

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def link(self, text: str, path: Path) -> Segment:
        """A link to ``path`` relative to the report, or plain text when the file does not exist."""
        if not path.exists():
            return text
        return (text, path.resolve().relative_to(self.folder.resolve()).as_posix())


def _md_segments(segments: list[Segment]) -> str:
    return "".join(s if isinstance(s, str) else f"[{s[0]}]({s[1]})" for s in segments)


def _html_text(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _html_segments(segments: list[Segment]) -> str:
    return "".join(_html_text(s) if isinstance(s, str) else f'<a href="{html.escape(s[1])}">{html.escape(s[0])}</a>'
                   for s in segments)


def render_markdown(doc: Doc) -> str:
    out = []
    for kind, value in doc.blocks:
        if kind == "h":
            out.append(f"{'#' * value[0]} {value[1]}")
        elif kind == "p":
            out.append(_md_segments(value))
        elif kind == "note":
            out.append(f"*{value}*")
        elif kind == "list":
            out.append("\n".join(f"- {_md_segments(row)}" for row in value))
        elif kind == "table":
            out.append(markdown_table(value[0], value[1]))
        elif kind == "img":
            rel = value[0].resolve().relative_to(doc.folder.resolve()).as_posix()
            out.append(f"![{value[1]}]({rel})")
        elif kind == "code":
            out.append(f"```sh\n{value}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}td.num,th.num{text-align:right}table.sortable th{cursor:pointer}
img{max-width:100%;height:auto;display:block;margin:.5em 0}code,pre{background:#f6f6f6}pre{padding:.6em}
.note{color:#666;font-style:italic}"""

_SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th,i){th.title='sort';
th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],r=[].slice.call(b.rows);
var up=th.dataset.up!=='1';th.dataset.up=up?'1':'0';r.sort(function(x,y){var a=x.cells[i],c=y.cells[i];
var p=a.dataset.v,q=c.dataset.v;var d=(p!==undefined&&q!==undefined)?(parseFloat(p)-parseFloat(q))
:a.textContent.localeCompare(c.textContent);return up?d:-d;});r.forEach(function(x){b.appendChild(x);});});});"""


def render_html(doc: Doc, title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for kind, value in doc.blocks:
        if kind == "h":
            out.append(f"<h{value[0]}>{_html_text(value[1])}</h{value[0]}>")
        elif kind == "p":
            out.append(f"<p>{_html_segments(value)}</p>")
        elif kind == "note":
            out.append(f"<p class='note'>{_html_text(value)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_html_segments(row)}</li>" for row in value) + "</ul>")
        elif kind == "table":
            out.append(html_table(value[0], value[1], sortable=value[2]))
        elif kind == "img":
            data = base64.b64encode(value[0].read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(value[1])}' src='data:image/png;base64,{data}'>")
        elif kind == "code":
            out.append(f"<pre><code>{html.escape(value)}</code></pre>")
    out.append(f"<script>{_SORT_JS}</script></body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- sections


@dataclass
class ReportOptions:
    validation: Path | None = None  # `nas hardware validate --json` output to include
    tradeoff: bool = False  # measure the accuracy-vs-size picture of the top winner (needs its dataset)
    data_root: str | None = None


def _attempt(draw: Callable[[], Path]) -> tuple[Path | None, str]:
    try:
        return draw(), ""
    except NasError as exc:
        return None, str(exc)


def _experiment(doc: Doc, run: RunFolder) -> None:
    info = run.info
    doc.h(2, "Experiment")
    objectives = "; ".join(f"{o.name} ({'max' if o.maximize else 'min'}imise, {o.label})" for o in run.objectives)
    constraints = "; ".join(f"{c.name} {c.op} {c.limit:g}" for c in info.constraints) or "none"
    doc.kv([("name", run.name), ("search space", info.space or "?"),
            ("dataset", info.dataset or "none (costs only)"), ("sampler", f"{info.sampler or '?'}, seed {info.seed}"),
            ("objectives", objectives), ("constraints", constraints),
            ("created", info.created), ("nas version", info.nas_version or "?")])


def _profiles(doc: Doc, run: RunFolder) -> None:
    profiles = run.info.profiles
    doc.h(2, "Hardware profile")
    if not profiles:
        doc.note("run.json lists no hardware profile.")
        return
    for name, prov in profiles.items():
        if (prov or {}).get("measured_elsewhere"):  # the machine the search ran on is not the table's
            doc.note(f"Warning: the search ran on another machine than `{name}` was measured on, so the latencies "
                     f"below are that machine's. {prov['measured_elsewhere']}")
        doc.p(f"`{name}`: where its latency numbers come from")
        pairs = []
        for k, v in (prov or {}).items():
            text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
            pairs.append((str(k), text if len(text) <= 160 else text[:157] + "..."))
        doc.kv(pairs)


def _budget(doc: Doc, run: RunFolder) -> None:
    import pandas as pd

    t = run.trials
    doc.h(2, "Budget and time spent")
    states = t["state"].value_counts().to_dict() if len(t) else {}
    budget = run.info.budget
    finished = sum(int(states.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL"))
    pairs = [("budget", ", ".join(f"{k} {v}" for k, v in budget.items() if v is not None) or "none given"),
             ("trials", ", ".join(f"{n} {s.lower()}" for s, n in states.items()) or "none yet")]
    if budget.get("trials"):
        pairs.append(("of the trial budget", f"{100 * finished / float(budget['trials']):.0f}% finished"))
    if len(t) and "datetime_start" in t.columns:
        start = pd.to_datetime(t["datetime_start"], errors="coerce", utc=True).min()
        end = pd.to_datetime(t.get("datetime_complete"), errors="coerce", utc=True).max()
        if pd.notna(start) and pd.notna(end):
            wall = (end - start).total_seconds()
            pairs.append(("wall-clock time", f"{wall / 60:.1f} min ({start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC)"))
    if "duration_s" in t.columns:
        pairs.append(("time in trials", f"{pd.to_numeric(t['duration_s'], errors='coerce').sum() / 60:.1f} min "
                                        f"(summed over trials; parallel workers overlap)"))
    if "trained" in t.columns and len(t):
        pairs.append(("rejected before training", f"{int(rejected(t).sum())} "
                                                  f"(broke a cheap constraint)"))
    doc.kv(pairs)
    if int(states.get("RUNNING", 0)):
        doc.note(f"The search is still running ({states['RUNNING']} trial(s) in progress): this report shows the "
                 f"trials finished so far; write it again for the newer ones.")


def _front_table(doc: Doc, run: RunFolder, plots: Path) -> None:
    import pandas as pd

    doc.h(2, "Pareto front")
    path, why = _attempt(lambda: plot_front(run, plots / "front.png"))
    front = run.front()
    if len(front):
        names = [o.name for o in run.objectives]
        cols = ["number", "label"] + [n for n in names if n in front.columns]
        extra = [c for c in ("madds", "params", "size_kb", "latency_ms") if c in front.columns and c not in cols]
        df = front[cols + extra].copy()
        formats = {}
        for o in run.objectives:
            if o.name in df.columns and o.name.split(":")[0] == "accuracy":
                df[o.name] = 100 * pd.to_numeric(df[o.name], errors="coerce")
                formats[o.name] = ".2f"
        df = df.rename(columns={"accuracy": "accuracy %", "number": "trial"})
        formats.update({"size_kb": ".1f", "latency_ms": ".3f", "accuracy %": ".2f"})
        key = next((o.name for o in run.objectives if o.maximize), None)
        if key is not None:
            df = df.sort_values("accuracy %" if key == "accuracy" else key, ascending=False)
        doc.p(f"{len(front)} trial(s) on the front of {', '.join(names)} (feasible, complete); "
              f"in the HTML page a click on a column header sorts by it.")
        doc.table(df, formats, sortable=True)
    else:
        doc.note("no trial on the front yet.")
    doc.image(path, "Pareto front", why)


def _progress(doc: Doc, run: RunFolder, plots: Path) -> None:
    doc.h(2, "Search progress")
    path, why = _attempt(lambda: plot_hypervolume([run], plots / "hypervolume.png"))
    if path is not None:
        hv = run.hypervolume()
        last = float(hv["hypervolume"].iloc[-1]) if len(hv) else 0.0
        doc.p(f"Hypervolume after {len(hv)} finished trials: {last:.4f} (normalised to [0, 1]; reference point "
              f"{run.reference_text()}).")
    doc.image(path, "Hypervolume against trials", why)
    doc.h(2, "Which choices matter")
    try:
        ranking, why = rank_params(run), ""  # once, for both pictures: they show the same top choices
    except NasError as exc:
        ranking, why = None, str(exc)
    path, why = _attempt(lambda: plot_importance(run, plots / "importance.png", ranking)) if ranking else (None, why)
    doc.image(path, "Parameter importance", why)
    path, why = _attempt(lambda: plot_parallel(run, plots / "parallel.png", ranking)) if ranking else (None, why)
    doc.image(path, "Parallel coordinates", why)


def _latency(doc: Doc, run: RunFolder, plots: Path, options: ReportOptions) -> None:
    doc.h(2, "Latency")
    path, why = _attempt(lambda: run_latency_breakdown(run, plots / "latency.png"))
    doc.p(f"Where the time of the top candidate goes on `{run_profile(run)}`:")
    doc.image(path, "Per-layer latency", why)
    if options.validation is not None:
        data = read_validation(options.validation)
        path, why = _attempt(lambda: plot_latency_validation(data, plots / "latency-validation.png"))
        cal = data.get("calibrated") or data.get("naive_sum") or {}
        doc.p(f"How well `{data.get('profile')}` predicts measured latency on {data.get('networks')} held-out "
              f"networks: {100 * cal.get('within_10pct', math.nan):.0f}% within +-10%.")
        doc.image(path, "Predicted against measured latency", why)


def _compression(doc: Doc, run: RunFolder, plots: Path, options: ReportOptions) -> None:
    from nas.spec import Candidate

    doc.h(2, "Compression of the top candidate")
    try:
        row = chosen_trial(run)
        cand = Candidate.from_json(str(row["candidate"]))
    except (NasError, KeyError, TypeError) as exc:
        doc.note(f"no candidate to show: {exc}")
        return
    c = cand.compression
    doc.p(f"Trial {int(row['number'])} (`{row.get('label', '')}`): {json.dumps(c.to_dict(), sort_keys=True)}. "
          f"Per layer, Deep Compression's accounting (P = pruning, Q = quantization, H = Huffman estimate):")
    doc.table(layer_table(cand.arch, c), LAYER_FORMATS)
    winners = run.winners()
    checkpoint = winners[0].folder / "model.safetensors" if winners else None
    if checkpoint is None or not checkpoint.is_file():
        doc.note(f"weight distribution and accuracy-vs-size pictures: no fine-tuned winner checkpoint yet "
                 f"(`{finetune_command(run)}`).")
        return
    from nas.checkpoint import load_checkpoint

    model, wcand, meta = load_checkpoint(checkpoint)
    sparsity, bits, note = weight_picture_settings(wcand.compression)
    path, why = _attempt(lambda: plot_weight_distribution(model, plots / "compression-weights.png",
                                                          sparsity=sparsity, bits=bits))
    if note:
        doc.note(f"weight picture{note}.")
    doc.image(path, "Weight distribution before and after pruning, with the codebook", why)
    if options.tradeoff:
        extra = meta.get("extra") or {}
        dataset = extra.get("dataset") or run.info.dataset
        root = options.data_root
        if root is None and dataset == "imagefolder":  # the folder the run searched, as its experiment names it
            root = getattr(run.experiment().dataset, "root", None)
        path, why = _attempt(lambda: tradeoff_picture(model, wcand.arch, str(dataset),
                                                      plots / "compression-tradeoff.png", root=root,
                                                      normalization=extra.get("normalization")))
        doc.image(path, "Accuracy against size: pruning, quantization, both", why)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def percent_columns(df: Any) -> tuple[Any, dict[str, str]]:
    """``df`` with every accuracy column (a fraction) as a percentage, renamed ``<name> %``, and its formats."""
    import pandas as pd

    df = df.copy()
    formats = {}
    for c in [c for c in df.columns if "accuracy" in str(c)]:
        df[c] = 100 * pd.to_numeric(df[c], errors="coerce")
        formats[f"{c} %"] = ".2f"
    return df.rename(columns={c: f"{c} %" for c in df.columns if "accuracy" in str(c)}), formats


def _winners(doc: Doc, run: RunFolder, plots: Path) -> None:
    doc.h(2, "Winners")
    winners = run.winners()
    if not winners:
        doc.note(f"no fine-tuned winners yet: `{finetune_command(run)}` trains, distils and compresses the best "
                 f"trials into winners/. Until then, how far to trust the front is unknown: its accuracies are "
                 f"the search's {run.info.evaluator!r} evaluator's estimates, not what a delivered model reaches.")
        return
    summary = run.summary_file
    table = read_table(summary) if summary.is_file() else None
    if table is not None:
        df = table[[c for c in table.columns if c not in ("candidate", "history")]]
        df, formats = percent_columns(df)
        doc.p("From ", doc.link("winners/summary.csv", summary), " (accuracies in %, as in the Pareto table):")
        doc.table(df, formats)
    rows = []
    for w in winners:
        files = w.files()
        segments: list[Segment] = [f"rank {w.rank}, trial {w.number}: "]
        for i, (name, size) in enumerate(files.items()):
            segments += [", " if i else "", doc.link(name, w.folder / name), f" {_size(size)}"]
        if "model.safetensors" in files and "model.nasz" in files:
            segments.append(f" (compressed file {files['model.safetensors'] / files['model.nasz']:.1f}x smaller "
                            f"than the checkpoint)")
        if not files:
            segments.append("no files yet")
        rows.append(segments)
    doc.p("Files, with their real sizes on disk:")
    doc.items(rows)
    if table is not None:
        _trust(doc, run, table, plots)


def _trust(doc: Doc, run: RunFolder, summary: Any, plots: Path) -> None:
    """How far to trust the front: the winners' search-time accuracy against what they delivered."""
    doc.h(3, "How far to trust the front")
    try:
        agreement = fidelity(summary)
    except NasError as exc:
        doc.note(str(exc))
        return
    doc.p(f"Search-time accuracy ({run.info.evaluator!r} evaluator, validation split) against the delivered "
          f"accuracy (fine-tuned, distilled and compressed, test split): {agreement.sentence()}.")
    path, why = _attempt(lambda: plot_fidelity(run, plots / "fidelity.png"))
    doc.image(path, "search-time against delivered accuracy of the winners", why)


def _winners_top(run: RunFolder) -> int | None:
    """``winners.top`` of the experiment kept in the run folder (None when it cannot be read)."""
    try:
        return run.experiment().config.winners.top
    except NasError:
        return None


def finetune_command(run: RunFolder) -> str:
    """``nas finetune`` for this run, with its full path and the experiment's ``winners.top``."""
    top = _winners_top(run)
    return f"nas finetune {shlex.quote(str(run.path.resolve()))}" + (f" --top {top}" if top else "")


def _reproduce(doc: Doc, run: RunFolder) -> None:
    info = run.info
    doc.h(2, "Reproduce")
    here = shlex.quote(str(run.path.resolve()))
    exp = shlex.quote(str(run.experiment_file.resolve()))
    doc.p("The experiment file as given is kept in the run folder (", doc.link("experiment.yaml", run.experiment_file),
          "). The commands name the run folder by its full path, so they work from any folder"
          + ("; the original one runs from the folder it was started in:" if info.cwd else
             "; the original one needs the folder it was started in, which this run did not record:"))
    command = info.command or "nas search experiment.yaml"
    top = _winners_top(run)
    lines = [f"# the original command ({info.created})",
             f"cd {shlex.quote(info.cwd)} && {command}" if info.cwd else command,
             "# or again from the copy kept in the run folder (a new run: give it another --out)",
             f"nas search {exp} --out {shlex.quote(str(run.path.resolve()) + '-again')}",
             f"{finetune_command(run)}   # winners: fine-tune, distil, compress"
             + (f" (winners.top: {top} of the experiment)" if top else ""),
             f"nas report {here}   # this page"]
    doc.code("\n".join(lines))
    doc.p(f"nas {info.nas_version or '?'}; sampler {info.sampler or '?'} with seed "
          f"{info.seed}. Proxy training is seeded too, but parallel workers and timing-dependent "
          f"pruning can change which trials run, so a rerun finds a similar front, not always the same one.")


def write_report(run_folder: str | Path, options: ReportOptions | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (pictures into ``plots/``) in the run folder."""
    options = options or ReportOptions()
    run = load_run(run_folder)
    plots = run.plots_dir
    doc = Doc(run.path)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.h(1, f"Run report: {run.name}")
    doc.p(f"Written {now} by `nas report` from the files in this folder (docs/run-folder.md).")
    _experiment(doc, run)
    _profiles(doc, run)
    _budget(doc, run)
    _front_table(doc, run, plots)
    _progress(doc, run, plots)
    _latency(doc, run, plots, options)
    _compression(doc, run, plots, options)
    _winners(doc, run, plots)
    _reproduce(doc, run)
    md, page = run.path / "report.md", run.path / "report.html"
    for path, text in ((md, render_markdown(doc)), (page, render_html(doc, f"Run report: {run.name}"))):
        write_atomic(path, text)
    return md, page
