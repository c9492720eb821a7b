"""Matplotlib charts for the notebooks. Each takes evidence (or a SourceError) and returns a :class:`Chart`.

Figures are built with the object API (no pyplot state), so they render the same in JupyterLab,
under Papermill and in tests.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .findings import SEVERITY_COLOURS
from .sources import SourceError
STATE_COLOURS = {"active": "#1565c0", "idle": "#9e9e9e", "idle in transaction": "#c77700",
                 "idle in transaction (aborted)": "#b00020", "(hidden)": "#424242"}


@dataclass
class Chart:
    """A rendered figure, or the reason there is none; displays itself as PNG or a short note."""

    title: str
    figure: Figure | None = None
    note: str = ""

    def _repr_png_(self) -> bytes | None:
        if self.figure is None:
            return None
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()

    def _repr_html_(self) -> str | None:
        if self.figure is not None:
            return None
        return f"<p><i>{html.escape(self.title)}: {html.escape(self.note)}</i></p>"

    def __repr__(self) -> str:
        return f"<Chart {self.title!r}{' (' + self.note + ')' if self.note else ''}>"


def _text(value: object, limit: int = 0) -> str:
    """Plain text for a label: whitespace folded, ``$`` escaped so matplotlib does not parse mathtext."""
    text = " ".join(str(value if value is not None else "").split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _unavailable(title: str, evidence: object) -> Chart | None:
    if isinstance(evidence, SourceError):
        return Chart(title, note=f"no data ({evidence.kind}: {evidence.message})")
    if isinstance(evidence, pd.DataFrame) and evidence.empty:
        return Chart(title, note="nothing to draw")
    return None


def connections_by_state(conns: pd.DataFrame | SourceError) -> Chart:
    """Stacked bar of client connections by state, with the usable limit marked."""
    title = "Connections by state"
    if (c := _unavailable(title, conns)) is not None:
        return c
    by_state = conns.groupby("state")["sessions"].sum().sort_values(ascending=False)
    by_app = conns.pivot_table(index="application_name", columns="state", values="sessions", aggfunc="sum",
                               fill_value=0)
    by_app = by_app.loc[by_app.sum(axis=1).sort_values(ascending=True).index[-12:]]
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    left = 0
    for state, n in by_state.items():
        ax1.barh(["server"], [n], left=left, color=STATE_COLOURS.get(state, "#6d4c41"), label=f"{state} ({n})")
        left += n
    usable = conns.attrs.get("usable")
    if usable:
        ax1.axvline(usable, color="#b00020", linestyle="--", label=f"usable limit ({usable})")
    ax1.set_xlabel("client connections")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax1.set_title(f"{conns.attrs.get('in_use', left)} of {usable} in use", fontsize=9)
    lefts = pd.Series(0, index=by_app.index)
    for state in by_app.columns:
        ax2.barh([_text(a, 40) for a in by_app.index], by_app[state], left=lefts, color=STATE_COLOURS.get(state, "#6d4c41"), label=state)
        lefts = lefts + by_app[state]
    ax2.set_title("by application", fontsize=9)
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    return Chart(title, fig)


def blocking_tree(tree: pd.DataFrame | SourceError, max_nodes: int = 40) -> Chart:
    """The lock-wait forest: each root blocker on the left, the sessions waiting on it to its right."""
    title = "Who is blocking whom"
    if (c := _unavailable(title, tree)) is not None:
        return c
    children: dict[int, list[int]] = {}
    for r in tree.itertuples():
        if r.depth > 0 and r.blocked_by:
            children.setdefault(int(r.blocked_by[0]), []).append(int(r.pid))
    info = tree.set_index("pid")
    roots = list(tree.loc[tree["depth"] == 0].sort_values("blocked_count", ascending=False)["pid"])
    order: list[tuple[int, int]] = []  # (pid, depth) in drawing order
    hidden = 0

    def walk(pid: int, depth: int, seen: set[int]) -> None:
        nonlocal hidden
        if pid in seen:
            return
        seen.add(pid)
        if len(order) >= max_nodes:
            hidden += 1
        else:
            order.append((pid, depth))
        for ch in children.get(pid, []):
            walk(ch, depth + 1, seen)

    seen: set[int] = set()
    for root in roots:
        walk(int(root), 0, seen)
    ypos = {pid: -i for i, (pid, _) in enumerate(order)}
    depth_of = dict(order)
    max_depth = max(depth_of.values()) if order else 0
    fig = Figure(figsize=(4.2 * (max_depth + 1) + 0.5, 0.5 * len(order) + 1.2))
    ax = fig.subplots()
    for pid, depth in order:
        r = info.loc[pid]
        parent = int(r["blocked_by"][0]) if r["depth"] > 0 and len(r["blocked_by"]) else None
        if parent in ypos:
            # elbow edge, as in a file tree: down from under the blocker, then right to the waiter
            x0 = depth_of[parent] + 0.08
            ax.plot([x0, x0, depth - 0.02], [ypos[parent] - 0.3, ypos[pid], ypos[pid]], color="#9e9e9e", lw=0.9)
        state = str(r["state"] or "?")
        colour = "#b00020" if depth == 0 else ("#c77700" if r["waiting_mode"] == "AccessExclusiveLock" else "#1565c0")
        label = _text(f"pid {pid} · {state} · {r['application_name'] or '?'}")
        if pd.notna(r["waiting_mode"]) and r["waiting_mode"]:
            label += "\n" + _text(f"waits {r['waiting_mode']} on {r['waiting_relation']}")
        elif depth == 0:
            label += "\n" + _text(f"root blocker: {int(r['blocked_count'])} waiting, transaction open "
                                  f"{float(r['xact_age_s'] or 0):.0f}s")
        ax.text(depth, ypos[pid], label, fontsize=7.5, va="center", ha="left",
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": colour, "lw": 1.5})
    if hidden:
        ax.text(0, -len(order) - 0.3, f"+{hidden} more sessions not drawn", fontsize=8, style="italic")
    ax.set_xlim(-0.05, max_depth + 1)
    ax.set_ylim(-len(order) - 0.2, 0.6)
    ax.axis("off")
    ax.set_title(f"{title}: {len(roots)} root blocker(s), {len(tree) - len(roots)} waiting", fontsize=10)
    return Chart(title, fig)


def top_statements(stats: pd.DataFrame | SourceError, by: str = "total_ms", limit: int = 10,
                   title: str = "Top statements by total time") -> Chart:
    """Horizontal bars of the statements with the most ``by``, labelled with calls and mean time."""
    if (c := _unavailable(title, stats)) is not None:
        return c
    top = stats.sort_values(by, ascending=False).head(limit).iloc[::-1]
    labels = [_text(q, 60) for q in top["query"]]
    fig = Figure(figsize=(10, 0.45 * len(top) + 1.2))
    ax = fig.subplots()
    bars = ax.barh(range(len(top)), top[by], color="#1565c0")
    ax.set_yticks(range(len(top)), labels, fontsize=7.5)
    for bar, (_, r) in zip(bars, top.iterrows()):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f"  {int(r['calls'])} calls, {r['mean_ms']:,.1f} ms mean", va="center", fontsize=7)
    ax.set_xlabel(by.replace("_", " "))
    ax.set_title(title, fontsize=10)
    return Chart(title, fig)


def wait_events(waits: pd.DataFrame | SourceError) -> Chart:
    """Average active sessions by wait event over the sample (CPU = running)."""
    title = "What active sessions waited on"
    if (c := _unavailable(title, waits)) is not None:
        return c
    top = waits.head(12).iloc[::-1]
    colours = ["#b00020" if t == "Lock" else ("#2e7d32" if t == "CPU" else "#1565c0") for t in top["wait_event_type"]]
    fig = Figure(figsize=(8, 0.4 * len(top) + 1.2))
    ax = fig.subplots()
    ax.barh([_text(f"{t}/{e}") for t, e in zip(top["wait_event_type"], top["wait_event"])], top["avg_sessions"],
            color=colours)
    ax.set_xlabel(f"average active sessions ({waits.attrs.get('samples', '?')} samples)")
    ax.set_title(title, fontsize=10)
    return Chart(title, fig)


QUEUE_STATE_COLOURS = {"waiting": "#1565c0", "prioritized": "#42a5f5", "paused": "#9e9e9e", "active": "#2e7d32",
                       "delayed": "#c77700", "waiting_children": "#8d6e63", "failed": "#b00020", "retry": "#e57373",
                       "dead": "#6a1b9a", "scheduled": "#ffb74d", "unacked": "#795548"}


def queue_depths(depths: pd.DataFrame | SourceError, limit: int = 20) -> Chart:
    """Stacked bars: jobs per state for each queue (completed left out: it is history, not load)."""
    title = "Jobs by state per queue"
    if (c := _unavailable(title, depths)) is not None:
        return c
    states = [s for s in QUEUE_STATE_COLOURS if s in depths.columns and depths[s].sum() > 0]
    top = depths.assign(_load=depths[states].sum(axis=1) if states else 0).sort_values("_load").tail(limit)
    fig = Figure(figsize=(10, 0.45 * len(top) + 1.4))
    ax = fig.subplots()
    left = pd.Series(0, index=top.index, dtype=float)
    labels = [_text(f"{q} ({s})", 50) for q, s in zip(top["queue"], top["system"])]
    for s in states:
        ax.barh(labels, top[s], left=left, color=QUEUE_STATE_COLOURS[s], label=s)
        left = left + top[s]
    ax.set_xlabel("jobs")
    if states:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    return Chart(title, fig)


def depth_timeline(watched: Any, limit: int = 8) -> Chart:
    """Backlog of the busiest queues over the sample (an observation of ``sources.queues.observe``, or its samples
    frame): a rising line is a queue not keeping up."""
    title = "Backlog during the sample"
    samples = getattr(watched, "samples", watched)
    if (c := _unavailable(title, samples)) is not None:
        return c
    busiest = samples.groupby("queue")["backlog"].max().sort_values(ascending=False).head(limit).index
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    for q in busiest:
        g = samples[samples["queue"] == q].sort_values("t")
        ax.plot(g["t"], g["backlog"], marker="o", label=_text(q, 40))
    ax.set_ylabel("jobs waiting")
    ax.legend(fontsize=7)
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.set_title(title + " (UTC)", fontsize=10)
    fig.autofmt_xdate()
    return Chart(title, fig)


def memory_by_pattern(keys: pd.DataFrame | SourceError, limit: int = 15) -> Chart:
    """Estimated bytes per key pattern (largest first)."""
    title = "Redis memory by key pattern"
    if (c := _unavailable(title, keys)) is not None:
        return c
    top = keys.head(limit).iloc[::-1]
    fig = Figure(figsize=(10, 0.4 * len(top) + 1.4))
    ax = fig.subplots()
    bars = ax.barh([_text(p, 50) for p in top["pattern"]], top["bytes"] / (1 << 20), color="#1565c0")
    for bar, (_, r) in zip(bars, top.iterrows()):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {int(r['keys']):,} keys ({r['type']})",
                va="center", fontsize=7)
    est = "" if keys.attrs.get("complete", True) else \
        f" (estimated from {100 * keys.attrs.get('scanned_fraction', 0):.0f}% of keys)"
    ax.set_xlabel("MiB" + est)
    ax.set_title(title, fontsize=10)
    return Chart(title, fig)


CHANGE_COLOURS = {"deploy": "#6a1b9a", "config": "#00838f", "migration": "#4e342e", "flag": "#ef6c00",
                  "rollback": "#2e7d32"}


def _change_markers(ax: object, changes: pd.DataFrame | SourceError | None) -> None:
    """Vertical lines for deploys/config changes on a time axis, labelled with service and version."""
    if changes is None or isinstance(changes, SourceError) or changes.empty:
        return
    lo, hi = ax.get_xlim()  # type: ignore[attr-defined]
    import matplotlib.dates as mdates

    for c in changes.itertuples():
        x = mdates.date2num(c.time.tz_convert("UTC").tz_localize(None))
        if lo <= x <= hi:
            ax.axvline(x, color=CHANGE_COLOURS.get(c.kind, "#6a1b9a"), linestyle="--", lw=1)  # type: ignore
            ax.text(x, ax.get_ylim()[1], _text(f" {c.service} {c.version}", 30), rotation=90,  # type: ignore
                    va="top", ha="right", fontsize=7, color=CHANGE_COLOURS.get(c.kind, "#6a1b9a"))


def error_rate(rates: pd.DataFrame, changes: pd.DataFrame | SourceError | None = None,
               title: str = "Error rate per service") -> Chart:
    """Per service, with changes marked: the failing share of each minute's requests (left axis) where the logs
    carry requests, error events a minute (right axis) where they do not; the legend says which."""
    if (c := _unavailable(title, rates)) is not None:
        return c
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    events_ax = None
    for service, g in rates.groupby("service"):
        t = g["time"].dt.tz_convert("UTC").dt.tz_localize(None)
        if g["denominator"].iloc[0] == "requests":
            ax.plot(t, 100 * g["error_rate"].fillna(0.0), label=_text(f"{service} (% of requests)"), marker=".")
        else:
            events_ax = events_ax or ax.twinx()
            events_ax.plot(t, g["errors_per_min"], label=_text(f"{service} (error events/min)"), marker="x", ls="--")
    ax.set_ylabel("% of requests failing")
    ax.set_ylim(bottom=0)
    if events_ax is not None:
        events_ax.set_ylabel("error events a minute")
        events_ax.set_ylim(bottom=0)
        events_ax.legend(fontsize=7, loc="upper right")
    _change_markers(ax, changes)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title + " (UTC)", fontsize=10)
    fig.autofmt_xdate()
    return Chart(title, fig)


def breakdown(counts: pd.DataFrame, changes: pd.DataFrame | SourceError | None = None,
              title: str = "Failures by reason", limit: int = 6) -> Chart:
    """Stacked areas of failures per minute by reason (the top ``limit`` reasons), with changes marked."""
    if (c := _unavailable(title, counts)) is not None:
        return c
    top = counts.groupby("reason")["count"].sum().sort_values(ascending=False).head(limit).index
    wide = (counts[counts["reason"].isin(top)].pivot_table(index="time", columns="reason", values="count",
                                                          aggfunc="sum", fill_value=0).sort_index())
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    x = wide.index.tz_convert("UTC").tz_localize(None)
    ax.stackplot(x, [wide[c] for c in wide.columns], labels=[_text(c, 50) for c in wide.columns])
    ax.set_ylabel("failures per minute")
    _change_markers(ax, changes)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title + " (UTC)", fontsize=10)
    fig.autofmt_xdate()
    return Chart(title, fig)


def incident_timeline(events: pd.DataFrame, findings: pd.DataFrame | None = None, limit: int = 25) -> Chart:
    """The incident in its own time: one bar per finding from first seen to resolved (or last seen), changes and
    error onsets as vertical lines, alerts and notes as markers on the top row, runs as grey ticks. The axis spans
    the incident from its first sign in the evidence, not the minutes the notebooks ran."""
    title = "The incident over time"
    if (c := _unavailable(title, events)) is not None:
        return c
    if events.empty:
        return Chart(title, None, "nothing recorded yet")
    import matplotlib.dates as mdates

    def num(ts: Any) -> float:
        return float(mdates.date2num(pd.Timestamp(ts).tz_convert("UTC").tz_localize(None)))
    t = (findings if findings is not None else pd.DataFrame()).head(limit).iloc[::-1].reset_index(drop=True)
    fig = Figure(figsize=(11, 0.38 * len(t) + 2.2))
    ax = fig.subplots()
    for i, r in t.iterrows():
        start = num(r["first_seen"])
        end = num(r["resolved_at"]) if pd.notna(r["resolved_at"]) else num(r["last_seen"])
        ax.barh(i, max(end - start, 1 / 1440 / 4), left=start, color=SEVERITY_COLOURS.get(r["worst"], "#757575"))
        if pd.notna(r["resolved_at"]):
            ax.plot([end], [i], marker="|", color=SEVERITY_COLOURS["ok"], markersize=12)
    top = len(t)
    styles = {"change": ("#424242", "--", "change"), "onset": ("#b00020", ":", "error onset")}
    for kind, (colour, dash, label) in styles.items():
        for k, e in enumerate(events[events["kind"] == kind].itertuples()):
            ax.axvline(num(e.at), color=colour, ls=dash, lw=1.2, label=label if k == 0 else None)
    for kind, marker, colour in (("alert", "v", "#c77700"), ("note", "D", "#1565c0")):
        pts = events[events["kind"] == kind]
        if len(pts):
            ax.scatter([num(x) for x in pts["at"]], [top] * len(pts), marker=marker, color=colour, label=kind, zorder=3)
    for ts in events.loc[events["kind"] == "run", "at"]:
        ax.axvline(num(ts), color="#bdbdbd", lw=0.6, zorder=0)
    ax.set_yticks(list(range(len(t))) + [top], [_text(x, 70) for x in t["title"]] + ["alerts, notes"], fontsize=7)
    ax.xaxis_date()
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title + " (UTC; grey lines are diagnostic runs, green ticks resolutions)", fontsize=10)
    fig.autofmt_xdate()
    return Chart(title, fig)


class Markdown:
    """Markdown text that Jupyter and the HTML report render as Markdown."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def markdown(text: str) -> Markdown:
    """Display ``text`` as Markdown."""
    return Markdown(text)


def history(hist: pd.DataFrame | SourceError, findings: list[Any] | None = None,
            changes: pd.DataFrame | SourceError | None = None, max_panels: int = 6, max_series: int = 5) -> Chart:
    """One panel per query: the baseline shaded, the window's start, each series' departure from its baseline
    (from the history findings' evidence) as a red tick, changes as dashed lines. Times in UTC."""
    title = "Metric history from Prometheus"
    if isinstance(hist, pd.DataFrame) and hist.attrs.get("configured") is False:
        return Chart(title, note="no Prometheus in this environment: history not shown")
    if (c := _unavailable(title, hist)) is not None:
        return c
    import matplotlib.dates as mdates

    names = [n for n in hist.attrs.get("queries", {}) if (hist["query"] == n).any()][:max_panels]
    departures = {(f.check.removeprefix("history."), f.subject): f.evidence.get("departed_at")
                  for f in findings or [] if f.check.startswith("history.") and f.evidence.get("departed_at")}
    fig = Figure(figsize=(10, 2.2 * len(names) + 0.4))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    naive = lambda ts: ts.tz_convert("UTC").tz_localize(None)  # noqa: E731
    for ax, name in zip(axes, names):
        q = hist.attrs["queries"][name]
        rows = hist[hist["query"] == name]
        top = rows.groupby("series")["value"].max().sort_values(ascending=False).index[:max_series]
        for series in top:
            g = rows[rows["series"] == series]
            ax.plot(g["time"].dt.tz_convert("UTC").dt.tz_localize(None), g["value"], lw=1.2,
                    label=_text(series, 40))
            if (at := departures.get((name, series))) is not None:
                ax.axvline(naive(pd.Timestamp(at)), color="#b00020", lw=1.5, ls=":")
        ax.axvspan(naive(pd.Timestamp(hist.attrs["baseline_start"])), naive(pd.Timestamp(hist.attrs["window_start"])),
                   color="#eeeeee", zorder=0, label="baseline")
        ax.set_title(_text(f"{q.title} ({q.unit})" if q.unit else q.title), fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
        _change_markers(ax, changes)
        ax.legend(fontsize=6, loc="upper left")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    fig.suptitle(title + " (UTC; red dotted: left its baseline)", fontsize=10)
    fig.tight_layout()
    return Chart(title, fig)
