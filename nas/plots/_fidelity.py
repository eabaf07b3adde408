"""How far to trust a front: the accuracy the search saw against the accuracy the winners delivered.

The search scores a candidate cheaply (a short proxy training, or a supernet child); the winners are then
fine-tuned, distilled and compressed, and their test accuracy is what users ship. When the two rank the
winners alike, the front is the front users get; when they do not, it is a guess. :func:`fidelity` measures
the agreement on ``winners/summary.csv`` (rank correlations and the gap in points) and :func:`plot_fidelity`
draws it, one point per winner against the line on which both accuracies are equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import NasError
from nas.plots._style import FRONT, GREY, new_figure, save, style
from nas.run import RunFolder, read_table

if TYPE_CHECKING:
    import pandas as pd

#: The summary's columns compared: what the search recorded, and what the compressed winner delivered.
SEARCH, DELIVERED = "search_val_accuracy", "compressed_test_accuracy"
#: Fewest winners for which a rank correlation says anything (two points always correlate +-1).
MIN_RANKED = 3


@dataclass(frozen=True)
class Fidelity:
    """Agreement between search-time and delivered accuracy over ``n`` winners (gaps in points)."""

    n: int
    spearman: float | None
    kendall: float | None
    mean_gap: float
    mean_abs_gap: float

    def sentence(self) -> str:
        """One line for reports: the correlations (or why there are none) and the gap."""
        if self.spearman is None or self.kendall is None:
            ranks = (f"too few winners to rank ({self.n}; at least {MIN_RANKED})" if self.n < MIN_RANKED
                     else "no rank correlation (the accuracies tie)")
        else:
            ranks = f"Spearman {self.spearman:+.2f}, Kendall {self.kendall:+.2f} over {self.n} winners"
        direction = "above" if self.mean_gap >= 0 else "below"
        return (f"{ranks}; delivered accuracy is on average {abs(self.mean_gap):.1f} points {direction} the "
                f"search's (mean absolute gap {self.mean_abs_gap:.1f} points)")


def _pairs(summary: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in (SEARCH, DELIVERED) if c not in summary.columns]
    if missing:
        raise NasError(f"winners/summary.csv has no {' or '.join(missing)} column: run `nas finetune RUN` again "
                       f"to write it")
    pairs = summary[[SEARCH, DELIVERED]].apply(pd.to_numeric, errors="coerce").dropna()
    if pairs.empty:
        raise NasError("no winner has both a search accuracy and a delivered (compressed test) accuracy")
    return pairs


def fidelity(summary: pd.DataFrame) -> Fidelity:
    """The agreement over the winners of ``summary`` (rows missing either accuracy are left out)."""
    from scipy.stats import kendalltau, spearmanr

    pairs = _pairs(summary)
    search, delivered = pairs[SEARCH].to_numpy(), pairs[DELIVERED].to_numpy()
    gap = 100 * (delivered - search)
    rho = tau = None
    if len(pairs) >= MIN_RANKED and search.std() > 0 and delivered.std() > 0:
        rho, tau = float(spearmanr(search, delivered).statistic), float(kendalltau(search, delivered).statistic)
        rho, tau = (None, None) if math.isnan(rho) or math.isnan(tau) else (rho, tau)
    return Fidelity(len(pairs), rho, tau, float(gap.mean()), float(abs(gap).mean()))


def plot_fidelity(run: RunFolder, path: str | Path) -> Path:
    """Search-time against delivered accuracy of the run's winners, with :func:`fidelity` in the title."""
    if not run.summary_file.is_file():
        raise NasError(f"{run.path} has no fine-tuned winners yet: `nas finetune {run.path}` makes them")
    summary = read_table(run.summary_file)
    pairs, agreement = _pairs(summary), fidelity(summary)
    labels = [f"#{int(r)}" for r in summary.loc[pairs.index, "rank"]] if "rank" in summary else []
    x, y = 100 * pairs[SEARCH].to_numpy(), 100 * pairs[DELIVERED].to_numpy()
    with style():
        fig = new_figure(5.6, 5.0)
        ax = fig.add_subplot()
        low, high = min(x.min(), y.min()), max(x.max(), y.max())
        pad = max(2.0, 0.08 * (high - low))
        low, high = max(0.0, low - pad), min(100.0, high + pad)
        ax.plot([low, high], [low, high], color=GREY, lw=1, ls="--", label="delivered = search")
        ax.scatter(x, y, color=FRONT, s=36, zorder=3, label="winner")
        for label, xi, yi in zip(labels, x, y):
            ax.annotate(label, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel(f"accuracy during the search, % ({SEARCH})")
        ax.set_ylabel(f"delivered accuracy, % ({DELIVERED})")
        ax.legend(loc="best", frameon=True, framealpha=0.9)
        ax.set_title("How far to trust the front\n" + _wrap(agreement.sentence()), fontsize=9)
        return save(fig, path, description=f"{run.name}: {agreement.sentence()}")


def _wrap(text: str, width: int = 70) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
