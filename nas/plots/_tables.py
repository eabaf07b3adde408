"""Tables as Markdown and HTML (the report's Pareto table, the per-layer compression table)."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def cell(value: Any, fmt: str | None = None) -> str:
    """One value as a table shows it: ``-`` for missing, thousands separators for counts."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if fmt:
        try:
            return format(value, fmt)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def _rows(df: pd.DataFrame, formats: dict[str, str] | None) -> list[list[str]]:
    formats = formats or {}
    return [[cell(v.item() if hasattr(v, "item") else v, formats.get(str(c))) for c, v in row.items()]
            for _, row in df.iterrows()]


def markdown_table(df: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned."""
    import pandas as pd

    head = [str(c) for c in df.columns]
    align = ["---:" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "---"
             for c in df.columns]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in _rows(df, formats)]
    return "\n".join(lines)


def html_table(df: pd.DataFrame, formats: dict[str, str] | None = None, *, sortable: bool = False) -> str:
    """An HTML table; with ``sortable`` a click on a header sorts by that column (see the report's script)."""
    import pandas as pd

    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    cls = ' class="sortable"' if sortable else ""
    out = [f"<table{cls}><thead><tr>"]
    out += [f"<th{' class=num' if n else ''}>{html.escape(str(c))}</th>" for c, n in zip(df.columns, numeric)]
    out.append("</tr></thead><tbody>")
    raw = df.to_numpy()
    for values, shown in zip(raw, _rows(df, formats)):
        tds = []
        for v, s, n in zip(values, shown, numeric):
            key = f' data-v="{float(v)!r}"' if n and v is not None and not (isinstance(v, float) and math.isnan(v)) else ""
            tds.append(f"<td{' class=num' if n else ''}{key}>{html.escape(s)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)
