"""Findings: severity, thresholds with documented defaults, playbook actions, and the run's report.

A finding's ``key`` (check plus subject) is stable across runs so one problem can be followed
from run to run. The report writes every finding as it is added to ``$RUNBOOK_FINDINGS_PATH``
(set by the runner), so a run that fails half-way still leaves what it found.
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .redact import redact
from .sources import SourceError

if TYPE_CHECKING:
    import pandas as pd

FINDINGS_PATH_ENV = "RUNBOOK_FINDINGS_PATH"
FINDINGS_MIME = "application/vnd.runbook.findings+json"  # the findings inside a notebook's outputs


class Severity(str, Enum):
    """How bad a finding is. ``error`` means the evidence could not be collected."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    CRIT = "crit"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """Sort order, most urgent first: crit, error, warn, info, ok. The one order every reader uses."""
        return _RANK[self.value]

    @property
    def active(self) -> bool:
        """Something to act on (or evidence missing): crit, error or warn."""
        return self.rank <= _RANK["warn"]

    @property
    def colour(self) -> str:
        """The colour every view gives this severity (notebook summary, charts, reports, the archive site)."""
        return SEVERITY_COLOURS[self.value]

    @classmethod
    def ranked(cls) -> list[Severity]:
        """Every severity, most urgent first."""
        return sorted(cls, key=lambda s: s.rank)


_RANK = {"crit": 0, "error": 1, "warn": 2, "info": 3, "ok": 4}
SEVERITY_COLOURS = {"crit": "#b00020", "error": "#6a1b9a", "warn": "#c77700", "info": "#1565c0", "ok": "#2e7d32"}


def ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Findings most urgent first (then by check and subject): the order every reader shows them in."""
    return sorted(findings, key=lambda f: (f.severity.rank, f.check, f.subject))


def worst(findings: Iterable[Finding]) -> Severity:
    """The most urgent severity among ``findings`` (ok when there are none)."""
    return min((f.severity for f in findings), key=lambda s: s.rank, default=Severity.OK)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings of each severity, most urgent first, severities with none left out."""
    tally = {s.value: 0 for s in Severity.ranked()}
    for f in findings:
        tally[f.severity.value] += 1
    return {k: v for k, v in tally.items() if v}


# The playbook's "Stabilize" actions (../shared/playbook.md), quoted so every finding can cite its row.
PLAYBOOK: dict[str, str] = {
    "Authentication failures": "Check identity /health, Supabase status, Redis connectivity. "
                               "Roll back recent identity deployments if necessary.",
    "Portal outages": "Verify Supabase env keys, identity reachability, and Next.js error logs. "
                      "Redirect traffic to maintenance page if downtime is prolonged.",
    "Queue backlog": "Scale worker horizontally, inspect stuck jobs, confirm Redis memory and connection counts.",
    "Database pressure": "Inspect Postgres metrics (connections, locks, slow queries). Scale vertically or limit "
                         "new writes; if migrations just ran, investigate long-running DDL.",
}


@dataclass(frozen=True)
class Finding:
    """One ranked conclusion with the next action and the small evidence behind it."""

    check: str
    subject: str
    severity: Severity
    title: str
    detail: str = ""
    action: str = ""
    playbook: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity across runs: check plus subject."""
        return f"{self.check}:{self.subject}"

    def to_dict(self) -> dict[str, Any]:
        """The ``findings.json`` object (JSON-safe, redacted)."""
        return {
            "key": self.key,
            "check": self.check,
            "subject": self.subject,
            "severity": self.severity.value,
            "title": redact(self.title),
            "detail": redact(self.detail),
            "action": redact(self.action),
            "playbook": self.playbook,
            "evidence": json_safe(self.evidence),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict` (``key`` is recomputed)."""
        return cls(check=d["check"], subject=d.get("subject", ""), severity=Severity(d["severity"]),
                   title=d.get("title", ""), detail=d.get("detail", ""), action=d.get("action", ""),
                   playbook=d.get("playbook", ""), evidence=dict(d.get("evidence") or {}))


def json_safe(value: Any, *, max_items: int = 50, max_str: int = 500) -> Any:
    """Small, JSON-serialisable, redacted copy of ``value`` (NaN -> None, long lists cut)."""
    pd = sys.modules.get("pandas")  # not imported: no value can be a DataFrame (the runner's parent process)

    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 3)
    if isinstance(value, str):
        return redact(value[:max_str])
    if isinstance(value, datetime) or (pd is not None and isinstance(value, pd.Timestamp)):
        return value.isoformat()
    if pd is not None and isinstance(value, pd.DataFrame):
        return json_safe(value.head(max_items).to_dict(orient="records"), max_items=max_items)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, max_items=max_items) for k, v in list(value.items())[:max_items]}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v, max_items=max_items) for v in list(value)[:max_items]]
    if hasattr(value, "item"):  # numpy scalar
        return json_safe(value.item())
    if pd is not None and pd.isna(value):
        return None
    return redact(str(value)[:max_str])


def from_source_error(err: SourceError, check: str, playbook: str = "") -> Finding:
    """The finding for evidence that could not be collected; says how to fix it where we know."""
    sev = Severity.WARN if err.kind in ("missing_extension", "permission") else Severity.ERROR
    what = {"unreachable": "is unreachable", "timeout": "timed out", "lock_timeout": "gave up waiting on a lock",
            "permission": "lacks a privilege", "missing_extension": "needs an extension",
            "config": "is not configured"}.get(err.kind, "failed")
    return Finding(
        check=check, subject=f"{err.source}.{err.check}", severity=sev,
        title=f"{err.source} {err.check}: {what}",
        detail=err.message, action=err.hint or f"Check the {err.source} target, then re-run this notebook.",
        playbook=playbook, evidence={"kind": err.kind, "source": err.source},
    )


def ok(check: str, title: str, playbook: str = "", **evidence: Any) -> list[Finding]:
    """The single ``ok`` finding a rule returns when its check found nothing wrong."""
    return [Finding(check, "all", Severity.OK, title, playbook=playbook, evidence=evidence)]


RuleFunction = Callable[..., Iterable[Finding]]


def rule(check: str, *, playbook: str = "", ok: str | Callable[..., str] = "") -> Callable[[RuleFunction],
                                                                                              Callable[..., list[Finding]]]:
    """Make a rule of a generator that states only its logic: it takes the check's evidence first, yields what is
    wrong, and nothing when all is well. The rule then returns the ``error`` finding a :class:`SourceError` makes,
    the generator's findings, or one ``ok`` finding (subject ``all``) whose title is ``ok``: a format string over
    ``th`` (the thresholds argument) and ``n`` (rows of evidence), or a function of the rule's arguments."""
    def decorate(fn: RuleFunction) -> Callable[..., list[Finding]]:
        @functools.wraps(fn)
        def apply(evidence: Any, *args: Any, **kwargs: Any) -> list[Finding]:
            if isinstance(evidence, SourceError):
                return [from_source_error(evidence, check, playbook)]
            found = list(fn(evidence, *args, **kwargs))
            if found:
                return found
            if callable(ok):
                title = ok(evidence, *args, **kwargs)
            else:
                th = next((a for a in (*args, *kwargs.values()) if isinstance(a, Thresholds)), Thresholds())
                title = ok.format(th=th, n=len(evidence) if hasattr(evidence, "__len__") else 0)
            return [Finding(check, "all", Severity.OK, title or f"{check}: nothing wrong", playbook=playbook)]
        apply.check = check  # type: ignore[attr-defined]
        return apply
    return decorate


def duration(seconds: Any) -> str:
    """``42s``, ``17m``, ``3.5h`` (``?`` when unknown) for titles a responder reads at a glance."""
    if seconds is None or (isinstance(seconds, float) and (math.isnan(seconds) or math.isinf(seconds))):
        return "?"
    v = float(seconds)
    return f"{v:.0f}s" if v < 120 else (f"{v / 60:.0f}m" if v < 7200 else f"{v / 3600:.1f}h")


# --------------------------------------------------------------------------- thresholds

@dataclass(frozen=True)
class Thresholds:
    """Limits that turn evidence into severities. Defaults below; override per environment file
    (``thresholds:``) or per run (``-p thresholds='{name: value}'``)."""

    connections_warn_pct: float = 75.0        # client backends / (max_connections - reserved)
    connections_crit_pct: float = 90.0
    blocked_sessions_crit: int = 5            # a root blocker with this many sessions behind it is critical
    blocked_wait_crit_s: float = 30.0         # ... or whose chain has waited this long
    idle_in_transaction_warn_s: float = 60.0  # idle inside a transaction this long
    idle_in_transaction_crit_s: float = 600.0
    long_query_warn_s: float = 60.0           # one statement active this long
    long_query_crit_s: float = 600.0
    long_transaction_warn_s: float = 600.0    # a transaction open this long
    long_transaction_crit_s: float = 3600.0
    ddl_wait_crit_s: float = 5.0              # a DDL waiting for its lock with sessions queued behind it
    xmin_age_warn: int = 50_000_000           # xids a horizon holder keeps vacuum from cleaning
    xmin_age_crit: int = 500_000_000
    slow_statement_mean_ms: float = 500.0     # mean time per call during the sample interval
    slow_statement_crit_mean_ms: float = 5000.0
    replication_lag_warn_s: float = 30.0
    replication_lag_crit_s: float = 300.0
    slot_retained_warn_bytes: int = 1 << 30
    slot_retained_crit_bytes: int = 10 << 30
    wraparound_warn_pct: float = 50.0         # xid age as a share of 2^31
    wraparound_crit_pct: float = 75.0
    vacuum_running_warn_s: float = 3600.0
    cache_hit_warn_ratio: float = 0.95        # over the interval, when at least cache_min_blocks were read
    cache_min_blocks: int = 1000
    temp_bytes_warn: int = 100 << 20          # temp-file bytes written during the interval
    deadlocks_warn: int = 1                   # deadlocks during the interval
    sequence_warn_pct: float = 75.0
    sequence_crit_pct: float = 90.0
    # Redis and queues
    redis_memory_warn_pct: float = 80.0       # used_memory / maxmemory (system memory when maxmemory is 0)
    redis_memory_crit_pct: float = 90.0
    redis_clients_warn_pct: float = 80.0      # connected_clients / maxclients
    redis_clients_crit_pct: float = 95.0
    redis_fragmentation_warn: float = 1.5     # mem_fragmentation_ratio, when RSS is over 100 MiB
    redis_slowlog_warn_ms: float = 100.0      # a SLOWLOG entry this slow inside the window
    queue_oldest_warn_s: float = 300.0        # the oldest waiting job has waited this long
    queue_oldest_crit_s: float = 1800.0
    job_hung_after_s: float = 600.0           # a locked job processing this long
    delayed_overdue_after_s: float = 60.0     # a delayed job this far past its due time
    worker_stale_after_s: float = 60.0        # a worker heartbeat/beat older than this is not alive
    celery_visibility_timeout_s: float = 3600.0
    failed_reason_warn: int = 10              # recent failures sharing one reason
    queue_backlog_warn: int = 100             # waiting jobs above which a backlog nothing consumed during the sample
                                              # is a finding, whatever the consumers' liveness
    # services, logs, changes
    health_latency_warn_ms: float = 1000.0    # a health endpoint answering slower than this
    error_rate_warn: float = 0.05             # share of a minute's requests that failed at the spike's peak
    error_rate_crit: float = 0.20
    error_events_warn_per_min: float = 3.0    # error events a minute at the peak, for a service that logs no requests
    error_events_crit_per_min: float = 10.0
    change_lead_s: float = 1800.0             # a change this long before an error onset "lines up" with it
    outage_prolonged_min: float = 15.0        # minutes of elevated errors before the maintenance page

    @classmethod
    def from_mapping(cls, *overrides: Mapping[str, Any] | None) -> Thresholds:
        """Defaults updated by each mapping in turn; unknown names or non-numbers are a :class:`ConfigError`."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for mapping in overrides:
            if not mapping:
                continue
            if not isinstance(mapping, Mapping):
                raise ConfigError(f"thresholds must be a mapping of name: number, not {type(mapping).__name__}")
            for k, v in mapping.items():
                if k not in known:
                    raise ConfigError(f"unknown threshold {k!r} (known: {', '.join(sorted(known))})")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"threshold {k} must be a number, got {v!r}")
                values[k] = int(v) if known[k] == "int" else float(v)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- report

@dataclass(frozen=True)
class CheckChange:
    """What one re-evaluation of a check changed: findings to act on that are gone (only when the check ran without
    error; otherwise they are ``unknown``), that are new, that persist."""

    at: datetime
    resolved: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    persisting: tuple[str, ...] = ()

    @classmethod
    def between(cls, before: Mapping[str, Finding], after: Mapping[str, Finding], at: datetime) -> CheckChange:
        was = {k: f for k, f in before.items() if f.severity.active}
        now = {k: f for k, f in after.items() if f.severity.active}
        errored = any(f.severity is Severity.ERROR for f in after.values())
        gone = [was[k].title for k in was if k not in now]
        return cls(at, resolved=() if errored else tuple(gone), unknown=tuple(gone) if errored else (),
                   new=tuple(now[k].title for k in now if k not in was),
                   persisting=tuple(now[k].title for k in now if k in was))

    @property
    def empty(self) -> bool:
        return not (self.resolved or self.unknown or self.new)


class Report:
    """The run's findings, ranked; persisted on every add when ``$RUNBOOK_FINDINGS_PATH`` is set."""

    DISPLAY_ID = "runbook-findings-summary"

    def __init__(self, incident_id: str = "", notebook: str = "", sink: str | Path | None = None) -> None:
        self.incident_id = incident_id
        self.notebook = notebook
        env_sink = os.environ.get(FINDINGS_PATH_ENV)
        self.sink = Path(sink) if sink else (Path(env_sink) if env_sink else None)
        self._by_key: dict[str, Finding] = {}
        self._evaluated: dict[str, datetime] = {}
        self._family: dict[str, frozenset[str]] = {}
        self.changes: dict[str, CheckChange] = {}  # by the checks evaluated together ("pg.blocking")
        self._display: Any = None
        self._progress = ""

    def add(self, *items: Finding | Iterable[Finding] | None) -> None:
        """Record one evaluation (one cell's checks). It replaces every earlier finding of each check it holds, and
        of the checks reported together with those before (a rule that reported ``pg.replication_slots`` beside
        ``pg.replication`` and now reports only the latter): a problem whose subject is gone leaves with its check.
        What changed since the previous evaluation is kept in :attr:`changes`. Returns nothing, so a notebook cell
        ending in ``report.add(...)`` shows nothing extra."""
        found = [f for item in items if item is not None
                 for f in ([item] if isinstance(item, Finding) else list(item))]
        if not found:
            return
        checks = frozenset(f.check for f in found)
        family = checks.union(*(self._family.get(c, ()) for c in checks))
        before = {k: f for k, f in self._by_key.items() if f.check in family}
        for k in before:
            del self._by_key[k]
        self._by_key.update((f.key, f) for f in found)
        now = datetime.now(timezone.utc)
        label = ", ".join(sorted(family))
        if any(c in self._evaluated for c in family):
            self.changes[label] = CheckChange.between(before, {f.key: f for f in found}, now)
        for c in family:
            self._family[c], self._evaluated[c] = family, now
        self._persist()
        self._refresh()

    @contextlib.contextmanager
    def sampling(self, what: str, seconds: float) -> Iterator[None]:
        """Say in the summary, while the block runs, that ``what`` is being sampled and until when (a responder
        looking at the top of the notebook sees why nothing moves); the line leaves when the block ends."""
        until = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        self._progress = f"{what}: sampling for {seconds:.0f} s, until about {until:%H:%M:%S} UTC"
        self._refresh()
        try:
            yield
        finally:
            self._progress = ""
            self._refresh()

    def _refresh(self) -> None:
        if self._display is not None:
            self._display.update(self)

    def evaluated_at(self, check: str) -> datetime | None:
        """When ``check`` last reported."""
        return self._evaluated.get(check)

    def adopt_display(self, previous: Report | None) -> None:
        """Take over the summary display of the report this one replaces (the start cell run again): the summary
        at the top keeps updating without re-running its cell."""
        if previous is not None and previous._display is not None:
            self._display = previous._display
            self._refresh()

    @property
    def findings(self) -> list[Finding]:
        """All findings, most urgent first."""
        return ranked(self._by_key.values())

    def worst(self) -> Severity:
        """The most urgent severity recorded (ok when nothing was found)."""
        return worst(self._by_key.values())

    def frame(self) -> pd.DataFrame:
        """Findings as a table: severity, title, action, key."""
        import pandas as pd

        rows = [{"severity": f.severity.value, "title": f.title, "action": f.action, "key": f.key}
                for f in self.findings]
        return pd.DataFrame(rows, columns=["severity", "title", "action", "key"])

    def summary(self) -> None:
        """Show the ranked findings; the output updates in place as later cells add findings."""
        try:
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with ipykernel
            print(self)
            return
        self._display = display(self, display_id=self.DISPLAY_ID)

    def _persist(self) -> None:
        if self.sink is None:
            return
        data = json.dumps([f.to_dict() for f in self.findings], indent=2, sort_keys=False)
        self.sink.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.sink.parent, prefix=".findings-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.sink)

    def __str__(self) -> str:
        lines = [f"{len(self._by_key)} findings for incident {self.incident_id or '-'}"]
        for f in self.findings:
            if f.severity is not Severity.OK:
                lines.append(f"[{f.severity.value.upper():5}] {f.title} -> {f.action}")
        ok = sum(1 for f in self.findings if f.severity is Severity.OK)
        if ok:
            lines.append(f"[ OK  ] {ok} checks found nothing wrong")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The findings as JSON beside the HTML table, so a notebook executed by any engine (papermill alone,
        Airflow's PapermillOperator) carries them and ``runbook record`` can make it a record."""
        return {FINDINGS_MIME: {"incident_id": self.incident_id, "notebook": self.notebook,
                                "findings": [f.to_dict() for f in self.findings]}}

    def _repr_html_(self) -> str:
        fs = self.findings
        bad = [f for f in fs if f.severity is not Severity.OK]
        ok = [f for f in fs if f.severity is Severity.OK]
        latest = max(self._evaluated.values(), default=None)
        head = (f"<h3>Findings: {len(bad)} to act on, {len(ok)} checks clear"
                f"{' (incident ' + html.escape(self.incident_id) + ')' if self.incident_id else ''}</h3>"
                + (f"<p><small>as of {latest:%H:%M:%S} UTC; each finding says when its check last ran</small></p>"
                   if latest else "")
                + (f"<p><b>&#8987; {html.escape(self._progress)}</b></p>" if self._progress else ""))
        if not fs:
            return head + "<p>No checks have reported yet.</p>"
        rows = []
        for f in bad:
            c = f.severity.colour
            at = self._evaluated.get(f.check)
            rows.append(
                f'<tr><td style="text-align:left;vertical-align:top"><b style="color:{c}">{f.severity.value.upper()}'
                f'</b></td><td style="text-align:left;vertical-align:top"><b>{html.escape(redact(f.title))}</b>'
                f"<br><small>{html.escape(redact(f.detail))}</small>"
                f"<br><small style='color:#888'>{html.escape(f.key)}"
                f"{f' · as of {at:%H:%M:%S}' if at else ''}</small></td>"
                f'<td style="text-align:left;vertical-align:top">{html.escape(redact(f.action))}'
                f"{'<br><small><i>Playbook, ' + html.escape(f.playbook) + '</i></small>' if f.playbook else ''}</td>"
                "</tr>")
        table = ("<table><thead><tr><th>severity</th><th>finding</th><th>next action</th></tr></thead>"
                 f"<tbody>{''.join(rows)}</tbody></table>") if rows else "<p>Nothing to act on.</p>"
        moved = [(check, ch) for check, ch in sorted(self.changes.items(), key=lambda kv: kv[1].at, reverse=True)
                 if not ch.empty]
        changes = ("<details open><summary>Since each check's previous run</summary><ul>" + "".join(
            f"<li><code>{html.escape(check)}</code> at {ch.at:%H:%M:%S}: "
            + "; ".join(p for p in (
                f"<b>resolved</b>: {html.escape(', '.join(ch.resolved))}" if ch.resolved else "",
                f"<b>unknown</b> (the check failed): {html.escape(', '.join(ch.unknown))}" if ch.unknown else "",
                f"<b>new</b>: {html.escape(', '.join(ch.new))}" if ch.new else "",
                f"{len(ch.persisting)} persisting" if ch.persisting else "") if p) + "</li>"
            for check, ch in moved) + "</ul></details>") if moved else ""
        clear = ("<details><summary>Checks with nothing wrong</summary><ul>"
                 + "".join(f"<li>{html.escape(redact(f.title))}</li>" for f in ok) + "</ul></details>") if ok else ""
        # MathJax (JupyterLab) must not read "$1 ... $2" in a query as mathematics
        return f"<div class='tex2jax_ignore mathjax_ignore'>{head}{changes}{table}{clear}</div>"


def load_findings(path: str | Path) -> list[Finding]:
    """Read a ``findings.json`` written by :class:`Report`, most urgent first; entries that are not findings (a
    hand-edited or truncated file) are skipped."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for d in data if isinstance(data, list) else []:
        try:
            out.append(Finding.from_dict(d))
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
    return ranked(out)
