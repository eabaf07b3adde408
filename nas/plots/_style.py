"""Figures that render headless and leave matplotlib's global state as they found it.

Our own pictures are :class:`matplotlib.figure.Figure` objects created without pyplot
(no backend, no global figure list). Optuna's matplotlib visualizations go through
pyplot and call ``plt.style.use("ggplot")``; :func:`optuna_axes` runs them inside
``rc_context`` (so the style is undone), silences only their ExperimentalWarning, and
closes their figure after saving. Every picture is saved at a fixed size
(``width x height`` inches at :data:`DPI`), legible at about 700 pixels wide.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
#: Text sizes chosen for a picture shown about 700 px wide (a 7-inch figure at 100 px/inch on screen).
RC: dict[Any, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.facecolor": "white",
}
#: Colours: dominated trials grey, infeasible light grey crosses, the front red, secondary blue.
GREY, LIGHT, FRONT, SECOND = "0.62", "0.78", "tab:red", "tab:blue"


@contextmanager
def style() -> Iterator[None]:
    """Our text sizes and grid for the figures created inside; restored afterwards."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (call inside :func:`style`)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: str | Path, *, description: str | None = None) -> Path:
    """Write ``fig`` as PNG atomically (temp file + rename), at exactly its size in pixels; ``description``
    goes into the PNG's Description text (what the picture shows, for readers without the image)."""
    import io

    from nas.files import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, dpi=DPI, format="png", metadata={"Description": description} if description else None)
    write_atomic(path, png.getvalue())
    return path


def pixel_size(width: float, height: float) -> tuple[int, int]:
    """The PNG size in pixels of a ``width x height`` inch figure (what tests expect)."""
    return round(width * DPI), round(height * DPI)


def optuna_axes(draw: Callable[[], Axes], path: str | Path, width: float, height: float,
                finish: Callable[[Axes], Any] | None = None, *, constrained: bool = True) -> Path:
    """Run one of Optuna's matplotlib plot functions, adjust it with ``finish`` and save it.

    ``constrained=False`` leaves the layout to ``finish`` (constrained layout cannot place
    the extra y axes of Optuna's parallel-coordinate plot)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        ax = draw()
        fig = cast("Figure", ax.figure)
        try:
            matplotlib.rcParams.update(RC)
            fig.set_size_inches(width, height)
            fig.set_dpi(DPI)
            if constrained:
                fig.set_layout_engine("constrained")
            if finish is not None:
                finish(ax)
            return save(fig, path)
        finally:
            plt.close(fig)
