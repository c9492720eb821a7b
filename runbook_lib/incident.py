"""What a notebook opens first: the incident's parameters resolved, its report, and its targets."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from . import tables
from .config import Environment, load_environment, parse_window
from .errors import RunbookError
from .findings import Finding, Report, Severity, Thresholds
from .sources import SourceError, postgres, prometheus
from .sources import redis as redis_source


@dataclass
class Incident:
    """Parameters of one diagnostic run, its report, and lazily opened sources."""

    incident_id: str
    environment_name: str
    environment: Environment | None
    window_start: datetime | None
    window_end: datetime | None
    thresholds: Thresholds
    report: Report
    problems: list[str] = field(default_factory=list)
    _db: postgres.Database | None = None
    _redis: redis_source.RedisTarget | None = None

    def postgres(self) -> postgres.Database:
        """The environment's Postgres as a read-only, time-limited diagnostic session."""
        if self._db is None:
            self._db = postgres.Database.from_environment(self.environment, missing=self._missing())
        return self._db

    def redis(self) -> redis_source.RedisTarget:
        """The environment's Redis, with socket timeouts, read commands only."""
        if self._redis is None:
            self._redis = redis_source.RedisTarget.from_environment(self.environment, missing=self._missing())
        return self._redis

    def history(self, names: Sequence[str]) -> pd.DataFrame | SourceError:
        """Prometheus history of the named queries (``prometheus.DATABASE``, ``QUEUES``, ``SERVICES``) over the
        window and a baseline before it; an empty frame marked not configured when the environment names no
        Prometheus, so the notebook reads as it would without one."""
        if self.window_start is None or self.window_end is None:
            return SourceError(prometheus.SOURCE, "history", "config", "the incident window did not resolve")
        return prometheus.history(prometheus.Prometheus.from_environment(self.environment), names,
                                  self.window_start, self.window_end)

    def service_for(self, role: str, given: str = "") -> str:
        """The service a notebook looks at: ``given`` when the responder named one, else the first service of the
        environment whose role is ``role`` (``services.<name>.role``, or inferred from its name)."""
        if given or self.environment is None:
            return given
        found = self.environment.services_with_role(role)
        return found[0] if found else ""

    def _missing(self) -> str:
        return "; ".join(self.problems) or "no environment"

    def close(self) -> None:
        """Close every source opened for this run."""
        if self._db is not None:
            self._db.close()
        if self._redis is not None:
            self._redis.close()

    def parameters(self) -> dict[str, Any]:
        """The run's parameters as resolved (the window in UTC), as a record states them."""
        return {"incident_id": self.incident_id, "environment": self.environment_name,
                "window_start": self.window_start.isoformat() if self.window_start else None,
                "window_end": self.window_end.isoformat() if self.window_end else None,
                "thresholds": {k: v for k, v in self.thresholds.to_dict().items() if v != getattr(Thresholds(), k)}}

    def archive(self) -> Any:
        """Archive this notebook as the responder sees it (saved with Ctrl+S just before) as a record of the
        incident, through the same sealing as ``runbook run``: see :func:`runbook_lib.lab.archive_what_you_see`."""
        from .lab import archive_what_you_see

        return archive_what_you_see(self.report, self.parameters())

    def watch(self, *panels: str, every_s: float = 2.0, for_s: float = 600.0) -> Any:
        """A live view of ``panels`` that refreshes every ``every_s`` for at most ``for_s``: see
        :func:`runbook_lib.live.watch`."""
        from .live import watch

        return watch(self.environment, self.thresholds, *panels, every_s=every_s, for_s=for_s)

    def _repr_html_(self) -> str:
        window = (f"{self.window_start:%Y-%m-%d %H:%M:%S} to {self.window_end:%Y-%m-%d %H:%M:%S} UTC"
                  if self.window_start and self.window_end else "unresolved")
        changed = {k: v for k, v in self.thresholds.to_dict().items() if v != getattr(Thresholds(), k)}
        rows = [("Incident", self.incident_id), ("Environment", self.environment_name), ("Window", window),
                ("Thresholds changed", ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        probs = "".join(f"<p style='color:#b00020'>{html.escape(p)}</p>" for p in self.problems)
        return f"<table>{body}</table>{probs}"


_current: Incident | None = None  # the kernel's incident: the next start() closes its sources


def start(incident_id: str, environment: str, window_start: str = "-60m", window_end: str = "now",
          thresholds: dict[str, Any] | None = None, notebook: str = "") -> Incident:
    """Resolve a notebook's parameters. Bad configuration becomes an error finding, never an exception. Every
    DataFrame the notebook shows from here on is formatted for people (:mod:`runbook_lib.tables`).

    Running it again is safe: the previous incident's connections are closed (no diagnostic session is left behind
    during a connection-saturation incident) and the summary already on screen keeps updating."""
    global _current
    tables.register()
    report = Report(incident_id=incident_id, notebook=notebook)
    previous, _current = _current, None
    if previous is not None:
        previous.close()
        report.adopt_display(previous.report)
    problems: list[str] = []
    env: Environment | None = None
    try:
        env = load_environment(environment)
    except RunbookError as e:
        problems.append(str(e))
    try:
        start_dt, end_dt = parse_window(window_start, window_end)
    except RunbookError as e:
        problems.append(str(e))
        start_dt = end_dt = None
    try:
        th = Thresholds.from_mapping(env.thresholds if env else None, thresholds)
    except RunbookError as e:
        problems.append(str(e))
        th = Thresholds()
    if problems:
        report.add(Finding("config", "parameters", Severity.ERROR, "The run's configuration is not usable",
                           detail="; ".join(problems), action="Fix the environment file or parameters and re-run",
                           evidence={"problems": problems}))
    _current = Incident(incident_id, environment, env, start_dt, end_dt, th, report, problems)
    return _current
