"""Pictures of a search: Pareto fronts, hypervolume, parameter importance, parallel coordinates.

The front is drawn here from the trials table rather than with Optuna's
``plot_pareto_front``: that one draws one pair per pyplot figure (no grid), needs the
live study (a run folder may point at a remote storage), and neither connects the
front, marks winners nor switches to log axes. The importances are Optuna's fANOVA, fitted
once per run (:func:`rank_params`) and drawn here; the parallel coordinates are Optuna's own
(:func:`~nas.plots._style.optuna_axes`) on the top of that same ranking; the hypervolume
comes from ``hypervolume.csv`` through pandas plotting, so several runs share one axes.
"""

from __future__ import annotations

import itertools
from collections import Counter
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import NasError
from nas.objectives import Objective
from nas.plots._style import FRONT, GREY, LIGHT, SECOND, new_figure, optuna_axes, save, style
from nas.run import RunFolder, non_dominated, normalised_losses, rejected

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

#: Costs spanning at least this ratio (max / min) get a log axis.
LOG_RATIO = 10.0
MAX_WINNERS = 6
MAX_PARAMS = 10  # importance bars and parallel-coordinate axes: the most important ones only


# --------------------------------------------------------------------------- Pareto front


def objective_pairs(objectives: list[Objective]) -> list[tuple[Objective, Objective]]:
    """(x, y) pairs: each maximised objective (accuracy) on y against every cost, then cost pairs."""
    gains = [o for o in objectives if o.maximize]
    costs = [o for o in objectives if not o.maximize]
    pairs = [(c, g) for g in gains for c in costs]
    pairs += [(a, b) for a, b in itertools.combinations(costs, 2)]
    pairs += [(a, b) for a, b in itertools.combinations(gains, 2)]
    return pairs


def front_members(run: RunFolder, rows: pd.DataFrame) -> np.ndarray:
    """Mask of ``rows`` (feasible, complete) on the front of all objectives: the ``pareto``
    column when the search wrote one, else computed."""
    if rows["pareto"].any():
        given: np.ndarray = rows["pareto"].to_numpy(dtype=bool)
        return given
    values = rows[[o.name for o in run.objectives]].to_numpy(dtype=float)
    ok = np.isfinite(values).all(axis=1)
    mask = np.zeros(len(rows), dtype=bool)
    mask[np.flatnonzero(ok)] = non_dominated(normalised_losses(values[ok], run.objectives))
    return mask


def pair_front(x: np.ndarray, y: np.ndarray, x_max: bool, y_max: bool) -> np.ndarray:
    """Indices of the points non-dominated in (x, y), ordered from best x to worst x."""
    losses = np.column_stack([-x if x_max else x, -y if y_max else y])
    idx = np.flatnonzero(non_dominated(losses))
    return idx[np.argsort(losses[idx, 0], kind="stable")]


def pick_winners(run: RunFolder, limit: int = MAX_WINNERS) -> list[int]:
    """Trial numbers to annotate: the fine-tuned winners, else up to ``limit`` front members
    spread from the most accurate (first maximised objective) to the cheapest."""
    done = set(run.completed()["number"].astype(int))
    chosen = [w.number for w in run.winners() if w.number in done]
    if chosen:
        return chosen[:limit]
    feasible = run.feasible()
    front = feasible[front_members(run, feasible)]
    if len(front) == 0:
        return []
    key = next((o for o in run.objectives if o.maximize), run.objectives[0])
    front = front.sort_values(key.name, ascending=not key.maximize, kind="stable")
    if len(front) > limit:
        front = front.iloc[np.unique(np.linspace(0, len(front) - 1, limit).round().astype(int))]
    return [int(n) for n in front["number"]]


def needs_training(o: Objective) -> bool:
    return o.kind == "accuracy"


def _log_axis(ax: Axes, which: str, values: np.ndarray) -> None:
    """A log scale with plain numbers (0.1, 2, 50) instead of powers of ten; within two decades the
    2s and 5s are labelled too."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    v = values[np.isfinite(values) & (values > 0)]
    if len(v) and v.max() / v.min() <= 100:
        axis.set_minor_formatter(FuncFormatter(
            lambda val, _: f"{val:g}" if round(val / 10 ** math.floor(math.log10(val)), 6) in (2, 5) else ""))
    else:
        axis.set_minor_formatter(NullFormatter())


def _use_log(values: np.ndarray) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return len(v) > 1 and float(v.max() / v.min()) >= LOG_RATIO


def _draw_pair(ax: Axes, run: RunFolder, x: Objective, y: Objective, letters: dict[int, str]) -> list[Any]:
    done = run.completed()
    fx, xlabel = x.display(done[x.name])
    fy, ylabel = y.display(done[y.name])
    done = done[np.isfinite(done[x.name]) & np.isfinite(done[y.name])]
    if needs_training(x) or needs_training(y):
        done = done[done["trained"]]  # a candidate rejected before training has a placeholder accuracy
    feasible = done[done["feasible"]]
    infeasible = done[~done["feasible"]]
    members = front_members(run, feasible) if len(run.objectives) > 2 else np.zeros(len(feasible), bool)
    xs, ys = feasible[x.name].to_numpy() * fx, feasible[y.name].to_numpy() * fy
    order = pair_front(xs, ys, x.maximize, y.maximize)
    on_pair = np.zeros(len(feasible), dtype=bool)
    on_pair[order] = True
    rest = ~on_pair & ~members
    handles: list[Any] = [
        ax.scatter(infeasible[x.name] * fx, infeasible[y.name] * fy, marker="x", s=16, color=LIGHT,
                   linewidths=1.0, label="infeasible (violates a constraint)"),
        ax.scatter(xs[rest], ys[rest], s=14, color=GREY, alpha=0.8, label="dominated"),
    ]
    if members.any():
        handles.append(ax.scatter(xs[members & ~on_pair], ys[members & ~on_pair], s=18, color=SECOND,
                                  label=f"on the front of all {len(run.objectives)} objectives"))
    pair_label = "Pareto front" if len(run.objectives) == 2 else "front of this pair"
    (line,) = ax.plot(xs[order], ys[order], color=FRONT, lw=1.4, drawstyle="steps-post", marker="o", ms=4.5,
                      label=pair_label, zorder=3)
    handles.append(line)
    all_x = done[x.name].to_numpy() * fx
    all_y = done[y.name].to_numpy() * fy
    if not x.maximize and _use_log(all_x):
        _log_axis(ax, "x", all_x)
    if not y.maximize and _use_log(all_y):
        _log_axis(ax, "y", all_y)
    numbers = feasible["number"].to_numpy().astype(int)
    marked = [(xs[i], ys[i], letters[int(n)]) for i, n in enumerate(numbers) if int(n) in letters]
    if marked:
        ax.scatter([m[0] for m in marked], [m[1] for m in marked], s=70, facecolors="none", edgecolors="black",
                   linewidths=1.0, zorder=4)
        _place_letters(ax, marked)
    ax.set_xlabel(xlabel + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(ylabel + (", log scale" if ax.get_yscale() == "log" else ""))
    # Above the axes, where no data point can be: any corner inside may hold points.
    ax.set_title(f"better: {'→' if x.maximize else '←'} {'↑' if y.maximize else '↓'}", loc="right", fontsize=7,
                 color="0.4")
    return handles


#: Where a winner's letter may go, in points from its marker (tried in this order).
_LETTER_OFFSETS = ((5, 4), (5, -12), (-13, 4), (-13, -12), (8, -4), (-16, -4), (-4, 8), (-4, -17))


def _place_letters(ax: Axes, marked: list[tuple[float, float, str]]) -> None:
    """Letters next to their markers, each at the first offset that overlaps no marker and no
    letter already placed (in screen space; a letter is about 8 x 10 points)."""
    ax.autoscale_view()
    scale = ax.figure.dpi / 72.0
    centres = ax.transData.transform([(mx, my) for mx, my, _ in marked]) / scale  # in points
    taken = [(cx - 5, cy - 5, cx + 5, cy + 5) for cx, cy in centres]
    for (mx, my, letter), (cx, cy) in zip(marked, centres):
        for dx, dy in _LETTER_OFFSETS:
            box = (cx + dx, cy + dy, cx + dx + 8, cy + dy + 10)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                break
        else:
            dx, dy = _LETTER_OFFSETS[0]
            box = (cx + dx, cy + dy, cx + dx + 8, cy + dy + 10)
        taken.append(box)
        ax.annotate(letter, (mx, my), xytext=(dx, dy), textcoords="offset points", fontsize=9,
                    fontweight="bold", zorder=5)


def _key_lines(run: RunFolder, letters: dict[int, str]) -> list[str]:
    """One entry per letter: a fine-tuned winner's rank and trial, what it delivered (the compressed model's
    test accuracy and real file size, from ``winners/summary.csv``) and its search values (where it sits on
    the axes); a front member that was not fine-tuned shows its trial and search values only."""
    rows = run.completed().set_index("number")
    winners = {w.number: w for w in run.winners()}
    lines = []
    for number, letter in letters.items():
        row = rows.loc[number]
        label = str(row.get("label", "")) or "(no label)"
        label = label if len(label) <= 44 else label[:43] + "…"
        values = " · ".join(o.short(float(row[o.name])) for o in run.objectives)
        w = winners.get(number)
        if w is None:
            lines.append(f"{letter}  trial {number}  {label}\n   search: {values}")
            continue
        lines.append(f"{letter}  winner {w.rank} (trial {number})\n   {label}\n   delivered: {_delivered(w.row)}"
                     f"\n   search: {values}")
    return lines


def _delivered(row: dict[str, Any]) -> str:
    """What a fine-tuned winner delivered: the compressed model's test accuracy and file size."""
    parts = []
    acc = _number(row.get("compressed_test_accuracy"))
    if acc is not None:
        parts.append(f"{100 * acc:.1f}% test acc.")
    size = _number(row.get("file_bytes"))
    if size is not None:
        parts.append(f"file {size / 1000:.3g} KB")
    return ", ".join(parts) or "not in winners/summary.csv yet"


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _legend_handles(panels: list[list[Any]]) -> list[Any]:
    """One handle per kind of mark, taken from any panel that drew points with it (the infeasible
    trials, for one, are left out of every panel with accuracy on an axis)."""
    def drew(h: Any) -> bool:
        return bool(h.get_label()) and len(np.atleast_1d(getattr(h, "get_offsets", lambda: [1])())) > 0

    chosen: dict[str, Any] = {}
    for panel in sorted(panels, key=len, reverse=True):  # the fullest panel sets the order
        for h in panel:
            chosen.setdefault(h.get_label(), None)
            if chosen[h.get_label()] is None and drew(h):
                chosen[h.get_label()] = h
    return [h for h in chosen.values() if h is not None]


#: Inches of one key line of the front picture (monospace, 7.5 pt).
KEY_LINE = 0.13


def front_figsize(n_objectives: int, n_winners: int, fine_tuned: bool = False) -> tuple[float, float]:
    """Inches of the front picture: one panel per objective pair (two columns from 3 objectives
    on), and a key of the winners below unless it fits into a free grid cell (two lines per
    winner, four for fine-tuned ones: their label and what they delivered, too)."""
    pairs = n_objectives * (n_objectives - 1) // 2
    cols = 1 if pairs == 1 else 2
    rows = math.ceil(pairs / cols)
    key_in_cell = pairs > 1 and pairs % 2 == 1
    key_h = 0 if key_in_cell else _key_height(n_winners, fine_tuned)
    return 7.0, round((4.4 if cols == 1 else 3.1) * rows + key_h + 0.3, 2)


def _key_height(n_winners: int, fine_tuned: bool) -> float:
    return 0.4 + KEY_LINE * (4 if fine_tuned else 2) * n_winners


def plot_front(run: RunFolder, path: str | Path) -> Path:
    """The Pareto front for every pair of objectives (a grid when there are 3+), written to ``path``.

    Grey: dominated trials; light grey crosses: infeasible; red, connected: the front of
    the pair; blue (3+ objectives): on the front of all objectives; circled letters: the
    winners, listed in the key: fine-tuned ones when ``nas finetune RUN`` ran (with the compressed
    model's test accuracy and file size they delivered), else front members spread along it.
    """
    if len(run.objectives) < 2:
        raise NasError(f"{run.path} has one objective ({run.objectives[0].name}): there is no front to draw; "
                       f"see the hypervolume and importance pictures instead.")
    run.require_trials(2, "plot")
    pairs = objective_pairs(run.objectives)
    letters = dict(zip(pick_winners(run), string.ascii_uppercase))
    key = _key_lines(run, letters)
    fine_tuned = any(w.number in letters for w in run.winners())
    cols = 1 if len(pairs) == 1 else 2
    key_in_cell = len(pairs) > 1 and len(pairs) % 2 == 1
    rows = math.ceil(len(pairs) / cols)
    key_h = 0 if key_in_cell else _key_height(len(key), fine_tuned)
    width, height = front_figsize(len(run.objectives), len(key), fine_tuned)
    with style():
        fig = new_figure(width, height)
        grid = fig.add_gridspec(rows + (0 if key_in_cell else 1), cols,
                                height_ratios=[3.1] * rows + ([] if key_in_cell else [max(key_h, 0.01)]))
        panels = [_draw_pair(fig.add_subplot(grid[i // cols, i % cols]), run, x, y, letters)
                  for i, (x, y) in enumerate(pairs)]
        key_ax = fig.add_subplot(grid[rows - 1, 1] if key_in_cell else grid[rows, :])
        key_ax.axis("off")
        key_ax.legend(handles=_legend_handles(panels), loc="upper left", ncol=1 if key_in_cell else 2, frameon=False,
                      borderaxespad=0.0)
        if key:
            top = 0.62 if key_in_cell else 1.0 - 0.34 / max(key_h, 0.34)
            key_ax.text(0.0, top, "\n".join(key), transform=key_ax.transAxes, va="top", ha="left",
                        family="monospace", fontsize=7.5, linespacing=1.25)
        done, feasible = run.completed(), run.feasible()
        untrained = int(rejected(run.trials).sum()) if any(needs_training(o) for o in run.objectives) else 0
        refused = f", {untrained} rejected before training" if untrained else ""
        fig.suptitle(f"{run.name}: {len(done)} completed trials{refused}, {len(feasible)} feasible, "
                     f"{int(front_members(run, feasible).sum())} on the Pareto front", fontsize=10)
        return save(fig, path)


# --------------------------------------------------------------------------- hypervolume


def hypervolume_height(n_runs: int) -> float:
    """Inches of the hypervolume picture: the axes, and one legend line per run below them."""
    return round(4.0 + 0.2 * n_runs, 2)


def distinct_names(runs: list[RunFolder]) -> list[str]:
    """Each run's name, numbered by its place in ``runs`` where two runs share a name (for file names)."""
    counts = Counter(r.name for r in runs)
    return [f"{r.name}-{i + 1}" if counts[r.name] > 1 else r.name for i, r in enumerate(runs)]


def hypervolume_labels(runs: list[RunFolder]) -> list[str]:
    """Legend entries: each run's name and sampler, and its folder where two runs share a name."""
    counts = Counter(r.name for r in runs)
    return [f"{r.name} ({r.info.sampler or '?'})" + (f", {r.path}" if counts[r.name] > 1 else "") for r in runs]


def plot_hypervolume(runs: list[RunFolder], path: str | Path) -> Path:
    """Normalised hypervolume against finished trials, one line per run (samplers compared).

    Runs with fewer than two completed trials are left out; with none left, a clear error. Runs that
    share a name are told apart in the legend by their folders.
    """
    usable, skipped = [], []
    for run in runs:
        try:
            run.require_trials(2, "plot")
            usable.append(run)
        except NasError as exc:
            if len(runs) == 1:
                raise
            skipped.append(f"{run.name}: {exc}")
    if not usable:
        raise NasError("no run has enough completed trials for a hypervolume picture: " + "; ".join(skipped))
    refs = {r.reference_text() for r in usable}
    labels = hypervolume_labels(usable)
    with style():
        fig = new_figure(7.0, hypervolume_height(len(usable)))
        ax = fig.add_subplot()
        for i, run in enumerate(usable):
            hv = run.hypervolume()
            label = labels[i]
            if len(refs) > 1:
                label += f"; reference {run.reference_text()}"
            hv.plot(x="finished", y="hypervolume", ax=ax, drawstyle="steps-post", lw=1.6, color=f"C{i}",
                    label=label, legend=False)
        ax.set_xlabel("finished trials")
        ax.set_ylabel("hypervolume (normalised; 1 = ideal)")
        ax.set_ylim(bottom=0)
        fig.legend(loc="outside lower center", ncol=1, frameon=False)
        ref = (f"reference point: {refs.pop()}" if len(refs) == 1
               else "reference points differ between runs: compare with care")
        ax.set_title(f"Hypervolume of the feasible front\n{ref}", fontsize=9)
        return save(fig, path)


# --------------------------------------------------------------------------- Optuna's pictures


def _target(run: RunFolder, i: int) -> Any:
    factor = run.objectives[i].display([1.0])[0]
    return lambda t: t.values[i] * factor


def _evaluator() -> Any:
    """fANOVA: the share of each objective's variance a parameter explains, whatever the direction
    (Optuna's default, PED-ANOVA, ranks for *low* target values and warns when given a target)."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(n_trees=32, seed=0)


@dataclass(frozen=True)
class ParamRanking:
    """fANOVA importances of the parameters for each objective, fitted once on all of them.

    ``names`` ranks the parameters by their highest importance for any objective, most important
    first; the importance picture draws the first :data:`MAX_PARAMS` and the parallel coordinates
    the first :data:`PARALLEL_PARAMS` of this one ranking, so the two always agree."""

    study: Any  # the study the importances were fitted on (trained trials only)
    objectives: list[str]  # the objectives' display labels
    importances: dict[str, dict[str, float]]  # objective label -> parameter -> importance

    @property
    def names(self) -> list[str]:
        best: dict[str, float] = {}
        for values in self.importances.values():
            for name, value in values.items():
                best[name] = max(best.get(name, 0.0), value)
        return sorted(best, key=lambda n: (-best[n], n))

    def table(self) -> pd.DataFrame:
        """One row per parameter in ranking order: ``rank``, ``parameter`` and one importance column per objective."""
        import pandas as pd

        rows = [{"rank": i + 1, "parameter": name, **{o: self.importances[o].get(name, 0.0) for o in self.objectives}}
                for i, name in enumerate(self.names)]
        return pd.DataFrame(rows, columns=["rank", "parameter", *self.objectives])


#: Axes of the parallel-coordinate picture: the most important choices of the ranking.
PARALLEL_PARAMS = 5


def rank_params(run: RunFolder) -> ParamRanking:
    """The :class:`ParamRanking` of a run (fANOVA on every varying parameter, for each objective)."""
    import optuna

    study = _study_for_params(run)
    labels = [o.display([1.0])[1] for o in run.objectives]
    importances = {}
    for i, label in enumerate(labels):
        target = _target(run, i) if len(run.objectives) > 1 else None
        importances[label] = dict(optuna.importance.get_param_importances(study, evaluator=_evaluator(),
                                                                          target=target))
    return ParamRanking(study, labels, importances)


def _study_for_params(run: RunFolder) -> Any:
    run.require_trials(2, "plot")
    study = run.study()
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2:
        raise NasError(f"the study of {run.path} has {len(done)} completed trial(s): nothing to plot yet.")
    varying = {k for t in done for k in t.params if any(u.params.get(k) != t.params.get(k) for u in done)}
    if not varying:
        raise NasError(f"no parameter varies across the completed trials of {run.path}: no importance to plot.")
    return _trained_only(run, study)


def _trained_only(run: RunFolder, study: Any) -> Any:
    """The study without trials rejected before training, when accuracy is an objective: their
    placeholder accuracy (0) would make fANOVA explain the cheap constraints, not accuracy.
    An in-memory copy; the run's storage is not touched."""
    import optuna

    if not any(needs_training(o) for o in run.objectives):
        return study
    untrained = set(run.trials.loc[~run.trials["trained"] & (run.trials["state"] == "COMPLETE"), "number"].astype(int))
    if not untrained:
        return study
    keep = [t for t in study.get_trials(deepcopy=False) if t.number not in untrained]
    if sum(t.state.name == "COMPLETE" for t in keep) < 2:
        raise NasError(f"fewer than 2 trained trials in {run.path}: nothing to plot yet.")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(level)
    copy.add_trials(keep)
    return copy


def plot_importance(run: RunFolder, path: str | Path, ranking: ParamRanking | None = None) -> Path:
    """The parameters' importances (fANOVA) for every objective, the top :data:`MAX_PARAMS` of the
    ranking (most important at the top); the numbers go to a ``.csv`` next to the picture.

    Drawn here rather than with Optuna's ``plot_param_importances``: that one refits on the
    parameters it is given and, with several objectives, sorts each objective's bars by its own
    order but labels them all with the last objective's."""
    ranking = ranking or rank_params(run)
    path = Path(path)
    names = ranking.names[:MAX_PARAMS]
    path.parent.mkdir(parents=True, exist_ok=True)
    ranking.table().to_csv(path.with_suffix(".csv"), index=False)
    n = len(ranking.objectives)
    height = 0.8 / n
    with style():
        fig = new_figure(7.0, 1.4 + 0.36 * len(names))
        ax = fig.add_subplot()
        pos = np.arange(len(names))[::-1]  # the most important on top
        for k, label in enumerate(ranking.objectives):
            values = [ranking.importances[label].get(p, 0.0) for p in names]
            offset = height * ((n - 1) / 2 - k)
            ax.barh(pos + offset, values, height=height, color=f"C{k}", label=label)
            for y, v in zip(pos + offset, values):
                ax.text(v, y, f" {v:.2f}" if v >= 0.01 else " <0.01", va="center", fontsize=7)
        ax.set_yticks(pos, names, fontsize=8)
        ax.set_xlim(0, 1.15 * max((v for d in ranking.importances.values() for v in d.values()), default=1.0))
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{run.name}: which choices matter (top {len(names)} parameters)", loc="left", fontsize=10)
        ax.set_xlabel("importance (fANOVA: share of the objective's variance)", fontsize=9)
        return save(fig, path)


def _darken(ax: Axes, best_high: bool) -> None:
    """Optuna colours the best trials nearly white; start the blue scale at a visible tint and
    make the best values (high ones when ``best_high``) the darkest."""
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap

    shades = np.linspace(0.25, 1.0, 256)
    cmap = ListedColormap(colormaps["Blues"](shades if best_high else shades[::-1]))
    for coll in ax.collections:
        if isinstance(coll, LineCollection) and coll.get_array() is not None:
            coll.set_cmap(cmap)
            if coll.colorbar is not None:
                coll.colorbar.update_normal(coll)


def _short_param(name: str) -> str:
    return name.removeprefix("compression.")


def plot_parallel(run: RunFolder, path: str | Path, ranking: ParamRanking | None = None) -> Path:
    """Optuna's parallel coordinates of the :data:`PARALLEL_PARAMS` most important choices of the
    ranking (those on top of the importance picture), coloured by the first maximised objective
    (accuracy); dotted lines are infeasible trials."""
    import optuna.visualization.matplotlib as ovm

    ranking = ranking or rank_params(run)
    study = ranking.study
    params = ranking.names[:PARALLEL_PARAMS]
    i = next((k for k, o in enumerate(run.objectives) if o.maximize), 0)
    name = run.objectives[i].display([1.0])[1]

    def draw() -> Axes:
        if len(run.objectives) == 1:
            return ovm.plot_parallel_coordinate(study, params=params, target_name=name)
        return ovm.plot_parallel_coordinate(study, params=params, target=_target(run, i), target_name=name)

    def finish(ax: Axes) -> None:
        fig = ax.figure
        ax.set_title("")
        fig.suptitle(f"{run.name}: the top {len(params)} choices of the importance picture, coloured by {name}",
                     fontsize=10, x=0.02, ha="left")
        ax.set_ylabel(name)
        first = run.objectives[i]
        ax.set_xticks(range(len(params) + 1), [first.short_name.split(" on ")[0]] + [_short_param(p) for p in sorted(params)],
                      rotation=0, ha="center", fontsize=7.5)
        _darken(ax, first.maximize)
        for other in fig.axes:
            other.tick_params(axis="y", labelsize=7.5)
        fig.subplots_adjust(left=0.1, right=0.9, top=0.86, bottom=0.1)

    return optuna_axes(draw, path, 7.0, 4.6, finish, constrained=False)
