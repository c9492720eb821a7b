"""What a metric's history says: when it left its baseline, whether it is still rising, when it came back.

A series *departs* at the first point of the window above its baseline band (the baseline's 95th percentile or
median + 3 MADs, whichever is higher, plus the larger of the query's ``min_change`` and a quarter of the median) and
staying there for ``HOLD_POINTS`` points. It has *returned* when its last ``HOLD_POINTS`` points are back inside the
band. Its trend is the least-squares slope over the last quarter of the window, called rising or falling only when
that slope moves the value by more than a tenth of it (and of the query's ``min_change``) over that quarter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..findings import Finding, Severity, duration, from_source_error
from ..sources import SourceError
from ..sources.prometheus import Query

HOLD_POINTS = 3
TREND_SHARE = 0.25          # the trend is read over this last share of the window
MAX_SERIES = 5              # per query, the series that went furthest from their baseline


@dataclass(frozen=True)
class Course:
    """How one series went over the incident window, against its own baseline."""

    query: str
    series: str
    baseline: float               # median before the window (or of the window's first points, see baseline_from)
    upper: float                  # top of the baseline band
    baseline_from: str            # "baseline" or "window start" (Prometheus had nothing earlier)
    departed_at: pd.Timestamp | None
    returned_at: pd.Timestamp | None
    peak: float
    last: float
    last_at: pd.Timestamp
    trend: str                    # rising, falling, flat
    slope_per_min: float
    drain_s: float | None         # for a backlog that is falling: time to empty at the current slope

    @property
    def above_now(self) -> bool:
        return self.departed_at is not None and self.returned_at is None


def course(points: pd.DataFrame, q: Query, series: str = "") -> Course | None:
    """The course of one series (rows of a history frame); None when the window holds no point."""
    window = points[points["phase"] == "window"].sort_values("time")
    if window.empty:
        return None
    before = points[points["phase"] == "baseline"]["value"].to_numpy()
    base_from = "baseline" if len(before) >= HOLD_POINTS else "window start"
    if base_from == "window start":
        before = window["value"].to_numpy()[:HOLD_POINTS]
    median = float(np.median(before))
    mad = float(np.median(np.abs(before - median))) * 1.4826
    upper = max(float(np.quantile(before, 0.95)), median + 3 * mad) + max(q.min_change, 0.25 * abs(median))
    values, times = window["value"].to_numpy(), list(window["time"])
    departed = _first_run(values > upper, HOLD_POINTS)
    returned = None
    if departed is not None and len(values) - departed > HOLD_POINTS and (values[-HOLD_POINTS:] <= upper).all():
        last_above = max(i for i in range(len(values)) if values[i] > upper)
        returned = times[last_above + 1]
    trend, slope = _trend(window, q)
    last = float(values[-1])
    drain = last / (-slope / 60) if q.drains and trend == "falling" and last > 0 else None
    return Course(q.name, series or q.name, median, upper, base_from,
                  times[departed] if departed is not None else None, returned, float(values.max()), last,
                  times[-1], trend, slope, drain)


def courses(hist: pd.DataFrame) -> list[Course]:
    """Every series' course, most departed first within each query (at most ``MAX_SERIES`` a query)."""
    out: list[Course] = []
    for name, q in hist.attrs.get("queries", {}).items():
        mine = [c for s, g in hist[hist["query"] == name].groupby("series") if (c := course(g, q, str(s)))]
        mine.sort(key=lambda c: (c.departed_at is None, -(c.peak - c.upper)))
        out += mine[:MAX_SERIES]
    return out


def _first_run(flags: np.ndarray, hold: int) -> int | None:
    """Index where ``flags`` is first true for ``hold`` points in a row (or to the end, if fewer remain)."""
    for i in np.flatnonzero(flags):
        run = flags[i:i + hold]
        if run.all() and (len(run) == hold or i + len(run) == len(flags)):
            return int(i)
    return None


def _trend(window: pd.DataFrame, q: Query) -> tuple[str, float]:
    """(rising/falling/flat, slope per minute) over the last quarter of the window."""
    t = (window["time"] - window["time"].iloc[0]).dt.total_seconds().to_numpy()
    tail = t >= t[-1] - max(t[-1] * TREND_SHARE, 1e-9)
    if tail.sum() < HOLD_POINTS:
        return "flat", 0.0
    x, y = t[tail], window["value"].to_numpy()[tail]
    slope_s = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0
    moved = slope_s * float(np.ptp(x))
    enough = max(0.1 * abs(float(y[-1])), 0.1 * q.min_change, 1e-9)
    return ("rising" if moved > enough else "falling" if moved < -enough else "flat"), slope_s * 60


def _at(ts: pd.Timestamp | None) -> str:
    return "?" if ts is None else ts.tz_convert("UTC").strftime("%H:%M:%S UTC")


def _value(v: float, unit: str) -> str:
    if unit == "bytes":
        return f"{v / 2**20:,.1f} MiB"
    if unit == "ratio":
        return f"{100 * v:.1f}%"
    return f"{v:,.3g} {unit}".strip() if abs(v) < 1000 else f"{v:,.0f} {unit}".strip()


def _evidence(c: Course) -> dict[str, Any]:
    return {"baseline": c.baseline, "band_top": c.upper, "baseline_from": c.baseline_from, "peak": c.peak,
            "last": c.last, "departed_at": c.departed_at, "returned_at": c.returned_at, "trend": c.trend,
            "slope_per_min": c.slope_per_min, "drain_s": c.drain_s}


def _finding(c: Course, q: Query, playbook: str) -> Finding:
    """A departed series: back to baseline (ok), still rising (warn), or falling/holding above it (info)."""
    name = f"{q.title}" + (f" [{c.series}]" if c.series != q.name else "")
    span = f"{_value(c.baseline, q.unit)} before, {_value(c.last, q.unit)} at {_at(c.last_at)}"
    check = f"history.{q.name}"
    if c.returned_at is not None:
        return Finding(check, c.series, Severity.OK,
                       f"{name}: back to baseline since {_at(c.returned_at)} (left it at {_at(c.departed_at)})",
                       detail=f"Peak {_value(c.peak, q.unit)}; {span}.",
                       action="Validate the fix holds: re-run this notebook after a few scrape intervals.",
                       playbook=playbook, evidence=_evidence(c))
    if c.trend == "rising":
        return Finding(check, c.series, Severity.WARN,
                       f"{name}: above baseline since {_at(c.departed_at)} and still rising",
                       detail=f"{span}; rising {_value(abs(c.slope_per_min), q.unit)} a minute.",
                       action="Not improving yet: act on the findings above, then watch this series fall.",
                       playbook=playbook, evidence=_evidence(c))
    drain = f"; at this rate it drains in {duration(c.drain_s)}" if c.drain_s else ""
    how = "falling" if c.trend == "falling" else "holding"
    return Finding(check, c.series, Severity.INFO, f"{name}: above baseline since {_at(c.departed_at)}, {how}{drain}",
                   detail=f"{span}; peak {_value(c.peak, q.unit)}.", playbook=playbook, evidence=_evidence(c))


def _steady(q: Query, mine: list[Course], playbook: str) -> Finding:
    """One ``ok`` finding for a query none of whose series left its baseline."""
    top = max(mine, key=lambda c: c.last)
    return Finding(f"history.{q.name}", "all", Severity.OK,
                   f"{q.title}: within its baseline over the window ({len(mine)} series; highest now "
                   f"{_value(top.last, q.unit)})", playbook=playbook,
                   evidence={"series": len(mine), "highest": top.series, "last": top.last, "baseline": top.baseline})


def history(hist: pd.DataFrame | SourceError, playbook: str = "") -> list[Finding]:
    """One finding per series with history (departed and when, rising or falling, back to baseline); an ``info``
    finding for each query with no series, a ``warn`` one for each query Prometheus rejected, an ``error`` one when
    it cannot be reached. Nothing when the environment has no Prometheus: history is added evidence, not a
    requirement, so a run without one reads as before."""
    if isinstance(hist, SourceError):
        return [from_source_error(hist, "history", playbook)]
    if not hist.attrs.get("configured", True):
        return []
    return list(_history(hist, playbook))


def _history(hist: pd.DataFrame, playbook: str) -> Iterator[Finding]:
    queries: dict[str, Query] = hist.attrs.get("queries", {})
    found = courses(hist)
    for name, q in queries.items():
        mine = [c for c in found if c.query == name]
        departed = [c for c in mine if c.departed_at is not None]
        if departed:
            yield from (_finding(c, q, playbook) for c in departed)
        elif mine:
            yield _steady(q, mine, playbook)
    for name in hist.attrs.get("missing", []):
        q = queries[name]
        yield Finding(f"history.{name}", "missing", Severity.INFO, f"No Prometheus series for {q.title} ({name})",
                      detail=f"PromQL: {q.promql}",
                      action=f"Export the metric, or point prometheus.queries.{name} at the one you have.",
                      playbook=playbook)
    for name, message in hist.attrs.get("failed", {}).items():
        yield Finding(f"history.{name}", "query", Severity.WARN, f"Prometheus rejected the query for {name}",
                      detail=message, action=f"Fix prometheus.queries.{name} in the environment file.",
                      playbook=playbook)
