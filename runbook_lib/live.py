"""Live views for JupyterLab: the evidence a responder watches settle after acting, refreshed every few seconds.

``inc.watch("blocking", "lock_queue")`` in a notebook (:func:`watch` here) shows one panel per view and refreshes
it in a background thread, so the notebook stays usable. Each refresh opens its own diagnostic session, runs the panel's read-only queries and closes
it: nothing is held between refreshes. A view stops on its own after ``for_s`` (at most an hour), on its Stop button,
or when the same cell is run again. What it shows is an ordinary display (``update_display_data``), so the last
picture stays in the saved notebook and in an archived record.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from .findings import CheckChange, Finding, Severity, Thresholds, ranked
from .rules import postgres as pg_rules
from .sources import SourceError, postgres, queues
from .sources import redis as redis_source

if TYPE_CHECKING:
    from .config import Environment

MAX_SECONDS = 3600.0
MIN_EVERY_S = 1.0
TABLE_ROWS = 20
Reading = tuple[list[Finding], "pd.DataFrame | SourceError"]


@dataclass(frozen=True)
class Panel:
    """One thing to watch: a read of fresh evidence and the findings the notebook's rule makes of it."""

    title: str
    source: str  # "postgres" or "redis": the session a refresh opens for it
    read: Callable[[Any, Thresholds], Reading]


def _connections(db: postgres.Database, th: Thresholds) -> Reading:
    conns = postgres.connection_saturation(db)
    return pg_rules.connection_saturation(conns, th), conns


def _blocking(db: postgres.Database, th: Thresholds) -> Reading:
    tree = postgres.blocking_tree(db)
    return pg_rules.blocking(tree, th), tree


def _lock_queue(db: postgres.Database, th: Thresholds) -> Reading:
    queue = postgres.lock_queue(db)
    return pg_rules.ddl_lock_queue(queue, th), queue


def _queue_depths(r: redis_source.RedisTarget, th: Thresholds) -> Reading:
    return [], queues.queue_depths(r, queues.discover_queues(r))


PANELS: dict[str, Panel] = {
    "connections": Panel("Connections", "postgres", _connections),
    "blocking": Panel("Who is blocking whom", "postgres", _blocking),
    "lock_queue": Panel("Lock queue behind DDL", "postgres", _lock_queue),
    "queues": Panel("Queue depths", "redis", _queue_depths),
}


@dataclass
class Refresh:
    """One refresh of every panel: when, the findings, and each panel's frame (or why it could not be read)."""

    at: datetime
    findings: dict[str, Finding]
    frames: dict[str, pd.DataFrame | SourceError]


def read_once(env: Environment | None, th: Thresholds, names: list[str]) -> Refresh:
    """Read every panel once on sessions opened for this refresh and closed before it returns."""
    sessions: dict[str, Any] = {}
    findings: dict[str, Finding] = {}
    frames: dict[str, pd.DataFrame | SourceError] = {}
    try:
        for name in names:
            panel = PANELS[name]
            if panel.source not in sessions:
                sessions[panel.source] = (postgres.Database.from_environment(env) if panel.source == "postgres"
                                          else redis_source.RedisTarget.from_environment(env))
            found, frames[name] = panel.read(sessions[panel.source], th)
            findings.update((f.key, f) for f in found)
    finally:
        for s in sessions.values():
            s.close()
    return Refresh(datetime.now(timezone.utc), findings, frames)


@dataclass
class LiveView:
    """A bounded live view of some :data:`PANELS`; :meth:`start` refreshes it in the background."""

    env: Environment | None
    thresholds: Thresholds
    names: list[str]
    every_s: float = 2.0
    for_s: float = 600.0
    first: Refresh | None = None
    last: Refresh | None = None
    previous: Refresh | None = None
    refreshes: int = 0
    stopped: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _handle: Any = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in PANELS]
        if unknown or not self.names:
            from .errors import RunbookError

            raise RunbookError(f"unknown live panel {', '.join(unknown) or '(none given)'}: choose from "
                               f"{', '.join(PANELS)}")
        self.every_s = max(MIN_EVERY_S, float(self.every_s))
        self.for_s = min(MAX_SECONDS, max(self.every_s, float(self.for_s)))

    def refresh(self) -> Refresh:
        """Read every panel now and update the display."""
        now = read_once(self.env, self.thresholds, self.names)
        self.previous, self.last = self.last, now
        self.first = self.first or now
        self.refreshes += 1
        self._show()
        return now

    def change(self) -> CheckChange:
        """What changed between the first refresh and the last: resolved, new, persisting."""
        if self.first is None or self.last is None:
            return CheckChange(self.started_at)
        return CheckChange.between(self.first.findings, self.last.findings, self.last.at)

    def start(self, display: Callable[..., Any] | None = None) -> LiveView:
        """Show the view and refresh it every ``every_s`` until ``for_s`` has passed or :meth:`stop`."""
        if display is not None:
            self._handle = display(self, display_id=True)
        self._thread = threading.Thread(target=self._loop, name="runbook-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, why: str = "stopped") -> None:
        """Stop refreshing (the last picture stays)."""
        if not self.stopped:
            self.stopped = why
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background refreshes to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        deadline = self.started_at.timestamp() + self.for_s
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as e:  # a refresh must never kill the kernel's thread silently
                self.stopped = f"stopped: {type(e).__name__}: {e}"
                break
            if datetime.now(timezone.utc).timestamp() + self.every_s > deadline:
                self.stopped = self.stopped or f"stopped after {self.for_s:.0f} s (its bound)"
                break
            self._stop.wait(self.every_s)
        self._stop.set()
        self._show()

    def _show(self) -> None:
        if self._handle is not None:
            self._handle.update(self)

    # ------------------------------------------------------------------- rendering

    def _repr_html_(self) -> str:
        last = self.last
        state = (self.stopped or f"refreshing every {self.every_s:.0f} s until "
                 f"{datetime.fromtimestamp(self.started_at.timestamp() + self.for_s, timezone.utc):%H:%M:%S} UTC")
        head = (f"<h4>Live: {html.escape(', '.join(PANELS[n].title for n in self.names))}</h4>"
                f"<p><small>{'as of ' + format(last.at, '%H:%M:%S') + ' UTC, ' if last else ''}"
                f"{self.refreshes} refreshes since {self.started_at:%H:%M:%S}; {html.escape(state)}</small></p>")
        if last is None:
            return head + "<p>First refresh running…</p>"
        ch = self.change()
        since = "".join(f"<li><b>{label}</b>: {html.escape(', '.join(items))}</li>" for label, items in (
            ("resolved", ch.resolved), ("new", ch.new), ("persisting", ch.persisting)) if items)
        act = [f for f in ranked(last.findings.values()) if f.severity is not Severity.OK]
        rows = "".join(f"<li><b style='color:{f.severity.colour}'>{f.severity.value.upper()}</b> "
                       f"{html.escape(f.title)}</li>" for f in act)
        body = (f"<p>Since the view started at {self.first.at:%H:%M:%S}:</p><ul>{since}</ul>" if since else
                "<p>No change since the view started.</p>" if self.refreshes > 1 else "")
        body += f"<ul>{rows}</ul>" if rows else "<p>Nothing to act on in these panels.</p>"
        for name in self.names:
            body += f"<h5>{html.escape(PANELS[name].title)}</h5>" + _table(name, last.frames.get(name), self.first)
        return f"<div class='tex2jax_ignore mathjax_ignore'>{head}{body}</div>"


def _table(name: str, frame: pd.DataFrame | SourceError | None, first: Refresh | None) -> str:
    if isinstance(frame, SourceError):
        return f"<p style='color:#b00020'>{html.escape(frame.message)}</p>"
    if frame is None or frame.empty:
        return "<p>(none)</p>"
    if name == "queues" and first is not None and isinstance(first.frames.get(name), pd.DataFrame):
        was = first.frames[name].set_index(["system", "queue"])["backlog"]
        frame = frame.assign(backlog_change=[int(r.backlog - was.get((r.system, r.queue), r.backlog))
                                             for r in frame.itertuples()])
        frame = frame[["system", "queue", "backlog", "backlog_change", "active", "failed", "is_paused"]]
    return frame.head(TABLE_ROWS).to_html(index=False, na_rep="", escape=True, border=0)


_running: dict[tuple[str, ...], LiveView] = {}  # this kernel's views: running a watch cell again replaces its view


def watch(environment: Environment | None, thresholds: Thresholds, *panels: str, every_s: float = 2.0,
          for_s: float = 600.0) -> Any:
    """Show ``panels`` (:data:`PANELS`) live below this cell, with a Stop button. Outside JupyterLab (a papermill
    run) it refreshes once and shows that, so a record still holds the picture."""
    from IPython.display import display

    from .lab import in_jupyterlab

    names = list(panels) or ["connections", "blocking", "lock_queue"]
    view = LiveView(environment, thresholds, names, every_s=every_s, for_s=for_s)
    if not in_jupyterlab():
        view.stopped = "a single refresh: live views run in JupyterLab"
        view.refresh()
        return view
    previous = _running.pop(tuple(names), None)
    if previous is not None:
        previous.stop("replaced by a newer view")
    _running[tuple(names)] = view
    _stop_button(view, display)
    return view.start(display)


def _stop_button(view: LiveView, display: Callable[..., Any]) -> None:
    import ipywidgets

    button = ipywidgets.Button(description="Stop", tooltip="stop refreshing this view (the last picture stays)")
    button.on_click(lambda _: view.stop("stopped by the responder"))
    display(button)
