"""Evidence tables people can read: how every DataFrame shows in the notebooks and in report.html.

Bytes in KiB/MiB/GiB, durations in s/min/h, percentages, UTC times, numbers with thousands separators and a few
significant digits; text left-aligned and numbers right; internal columns hidden; the columns that name the thing
first and long text last; long tables capped with a count of the rest. Wrapped so that neither JupyterLab's MathJax
nor anything else reads ``$1 ... $5`` in SQL as mathematics.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

HIDDEN = frozenset({"key", "base", "findings_source", "raw"})
FIRST = ("severity", "service", "system", "queue", "pattern", "pid", "root_pid", "relation", "holder", "name",
         "state", "verdict", "application_name", "usename", "check", "subject", "title", "change", "kind", "at",
         "started_at", "t")
LAST = ("query", "last_query", "detail", "decided_by", "supporting", "holdup", "evidence", "example", "reason",
        "evidence_before", "evidence_after", "action", "description", "what")
MAX_ROWS = 50
NO_MATH = "tex2jax_ignore mathjax_ignore"  # JupyterLab (MathJax 2 and 3 class names) leaves these alone
STYLE = ("<style>.rb-table td,.rb-table th{text-align:left;vertical-align:top;padding:2px 8px}"
         ".rb-table td.n{text-align:right;font-variant-numeric:tabular-nums}.rb-table{border-collapse:collapse}"
         ".rb-table tr:nth-child(even){background:#f6f6f6}.rb-more{color:#666;font-size:.9em}</style>")


def size(n: float) -> str:
    """``512 B``, ``3.4 KiB``, ``25.3 GiB``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def seconds(s: float) -> str:
    """``850 ms``, ``42s``, ``17m``, ``3.5h``, ``2.1d``."""
    s = float(s)
    if math.isinf(s):
        return "never" if s > 0 else "-"
    if abs(s) < 1:
        return f"{s * 1000:.0f} ms"
    if abs(s) < 120:
        return f"{s:.0f}s"
    if abs(s) < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h" if abs(s) < 172800 else f"{s / 86400:.1f}d"


def number(v: float) -> str:
    """Integers with thousands separators; other numbers to three significant digits (never 9.223372e+18)."""
    v = float(v)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v.is_integer() and abs(v) < 1e21:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def cell(column: str, value: Any) -> tuple[str, bool]:
    """(text, is_number) for one value, by its column's name and its type."""
    if value is None or (not isinstance(value, (list, dict, tuple, set)) and pd.isna(value)):
        return "", False
    if isinstance(value, pd.Timestamp) or hasattr(value, "isoformat") and not isinstance(value, str):
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.strftime("%Y-%m-%d %H:%M:%S UTC"), False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, float)) and not isinstance(value, bool) or hasattr(value, "item"):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return str(value), False
        if column == "bytes" or column.endswith("_bytes"):
            return size(v), True
        if column.endswith("_ms"):
            return f"{number(v)} ms", True
        if column.endswith("_s"):
            return seconds(v), True
        if column.endswith("_pct"):
            return f"{v:.1f}%", True
        return number(v), True
    text = " ".join(str(value).split()) if not isinstance(value, (list, dict)) else str(value)
    return (text if len(text) <= 400 else text[:399] + "…"), False


def order(columns: list[str]) -> list[str]:
    """Columns to show: internal ones hidden, naming columns first, long text last, the rest as they came."""
    shown = [c for c in columns if str(c) not in HIDDEN and not str(c).startswith("_")]
    first = [c for c in FIRST if c in shown]
    last = [c for c in LAST if c in shown]
    return first + [c for c in shown if c not in first and c not in last] + last


def html_table(df: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """The HTML every DataFrame shows as (see the module docstring)."""
    if len(df.columns) == 0:
        return "<p><i>no columns</i></p>"
    cols = order([str(c) for c in df.columns])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for _, r in df.head(max_rows).iterrows():
        cells = []
        for c in cols:
            text, numeric = cell(c, r[c])
            cells.append(f"<td class='n'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = len(df) - max_rows
    tail = f"<p class='rb-more'>… and {more:,} more rows ({len(df):,} in all)</p>" if more > 0 else \
        ("<p class='rb-more'>no rows</p>" if df.empty else "")
    hidden = [c for c in map(str, df.columns) if c not in cols]
    note = f"<p class='rb-more'>not shown: {', '.join(hidden)}</p>" if hidden else ""
    return (f"<div class='{NO_MATH}'>{STYLE}<table class='rb-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{tail}{note}</div>")


def register() -> None:
    """Show every DataFrame in this IPython kernel as :func:`html_table` (no-op outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return
    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["text/html"].for_type(pd.DataFrame, html_table)
