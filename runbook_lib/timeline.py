"""Reading records back: compare two runs of one notebook, follow findings across an incident, put the incident in its
own time (changes, error onsets, alerts, findings, runs, notes), and write what people read: the stakeholder status
update and the post-incident review draft. Everything here reads archived records only.

A finding is "resolved" only when a later run of the same notebook ran the same check without error and the finding
was gone; a check that errored or did not run leaves it "unknown", never clear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pandas as pd

from .archive import Note, Record
from .errors import RunbookError
from .findings import PLAYBOOK, Finding, Severity

CheckOutcome = Literal["clear", "errored", "not run"]
CHANGE_ORDER = {"new": 0, "persisting": 1, "unknown": 2, "resolved": 3}


def active(record: Record) -> dict[str, Finding]:
    """The record's findings to act on (crit, error, warn), by key."""
    return {f.key: f for f in record.findings() if f.severity.active}


def check_outcome(record: Record, check: str) -> CheckOutcome:
    """Whether ``check`` ran in this record and produced evidence: ``clear`` when it ran without error (whatever it
    found), ``errored`` when it could not collect its evidence, ``not run`` when it left no finding at all."""
    mine = [f for f in record.findings() if f.check == check]
    if not mine:
        return "not run"
    return "errored" if any(f.severity is Severity.ERROR for f in mine) else "clear"


def _gone_from(later: Record, f: Finding) -> bool:
    """``f`` was looked for in ``later`` (same check, run without error) and not found."""
    return f.key not in active(later) and check_outcome(later, f.check) == "clear"


def compare(a: Record, b: Record) -> pd.DataFrame:
    """Findings of run ``a`` against a later run ``b`` of the same notebook: ``new``, ``persisting`` (both
    severities), ``resolved`` (``b`` ran the check without error and the finding is gone) or ``unknown`` (the check
    errored or did not run in ``b``), with the evidence side by side."""
    if a.notebook != b.notebook:
        raise RunbookError(f"{a.run_id} ran {a.notebook} and {b.run_id} ran {b.notebook}: compare two runs of one "
                           "notebook (give an incident as the second argument for its latest run of the first's)")
    fa, fb = active(a), active(b)
    rows = []
    for key in set(fa) | set(fb):
        x, y = fa.get(key), fb.get(key)
        if x and y:
            change = "persisting"
        elif y:
            change = "new"
        else:
            change = "resolved" if _gone_from(b, x) else "unknown"
        why = "" if change != "unknown" else f"{x.check} {check_outcome(b, x.check)} in the later run"
        f = y or x
        rows.append({"change": change, "key": key, "check": f.check, "title": f.title, "why": why,
                     "before": x.severity.value if x else "-", "after": y.severity.value if y else "-",
                     "rank": f.severity.rank, "evidence_before": x.evidence if x else {},
                     "evidence_after": y.evidence if y else {}})
    df = pd.DataFrame(rows, columns=["change", "key", "check", "title", "why", "before", "after", "rank",
                                     "evidence_before", "evidence_after"])
    df = df.sort_values(["change", "rank"], key=lambda s: s.map(CHANGE_ORDER) if s.name == "change" else s,
                        kind="stable", ignore_index=True)
    return df.drop(columns="rank")


def later_run_of(records: list[Record], first: Record) -> Record:
    """The latest record of ``first``'s notebook among ``records`` (an incident's), started after ``first``."""
    later = [r for r in records if r.notebook == first.notebook and r.started_at > first.started_at]
    if not later:
        raise RunbookError(f"no later {first.notebook} record than {first.run_id} in that incident")
    return later[-1]


def is_clear(record: Record) -> bool:
    """The run completed, at least one check reported, and nothing is crit, error or warn."""
    return record.status == "ok" and bool(record.findings()) and not active(record)


def finding_timeline(recs: list[Record]) -> pd.DataFrame:
    """Per finding key across an incident's runs: worst severity, first and last seen (active), and when a later run
    of the same notebook ran its check without error and no longer found it (``resolved_at``)."""
    seen: dict[str, dict[str, Any]] = {}
    by_nb: dict[str, list[Record]] = {}
    for r in recs:
        by_nb.setdefault(r.notebook, []).append(r)
        for f in active(r).values():
            row = seen.setdefault(f.key, {"key": f.key, "check": f.check, "notebook": r.notebook, "title": f.title,
                                          "worst": f.severity.value, "first_seen": r.started_at,
                                          "last_seen": r.started_at, "runs": 0, "action": f.action,
                                          "playbook": f.playbook, "finding": f})
            row.update(last_seen=r.started_at, runs=row["runs"] + 1, title=f.title, finding=f)
            if f.severity.rank < Severity(row["worst"]).rank:
                row["worst"] = f.severity.value
    for row in seen.values():
        later = [r for r in by_nb[row["notebook"]] if r.started_at > row["last_seen"] and _gone_from(r, row["finding"])]
        row["resolved_at"] = later[0].started_at if later else pd.NaT
    columns = ["key", "check", "notebook", "title", "worst", "first_seen", "last_seen", "resolved_at", "runs",
               "action", "playbook"]
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "finding"} for r in seen.values()], columns=columns)
    if df.empty:
        return df
    for col in ("first_seen", "last_seen", "resolved_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df["_rank"] = df["worst"].map(lambda s: Severity(s).rank)
    return df.sort_values(["first_seen", "_rank"], ignore_index=True).drop(columns="_rank")


def runs_table(recs: list[Record]) -> pd.DataFrame:
    """One row per run: when, notebook, status, worst severity, counts, record id."""
    return pd.DataFrame([{"started_at": r.started_at, "notebook": r.notebook, "status": r.status,
                          "worst": r.run.get("worst_severity", "?"), "findings": r.run.get("finding_counts", {}),
                          "record": r.run_id} for r in recs],
                        columns=["started_at", "notebook", "status", "worst", "findings", "record"])


def latest_per_notebook(recs: list[Record]) -> list[Record]:
    """The latest record of each notebook, oldest first."""
    latest: dict[str, Record] = {}
    for r in recs:
        latest[r.notebook] = r
    return sorted(latest.values(), key=lambda r: r.started_at)


# --------------------------------------------------------------------------- the incident in its own time

EVENT_COLUMNS = ["at", "kind", "what", "severity", "source"]


def _ts(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if pd.isna(ts):
        return None
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def incident_events(recs: list[Record], notes: Iterable[Note] = ()) -> pd.DataFrame:
    """One timeline in incident time: changes and error onsets the evidence dates, alerts as they started firing,
    each finding's first sighting and resolution, the diagnostic runs, and people's notes. Columns: at (UTC), kind
    (change, onset, alert, finding, resolved, run, note), what, severity, source (record id or ``note``)."""
    events: dict[tuple[str, str, datetime], dict[str, Any]] = {}

    def add(at: datetime | None, kind: str, what: str, severity: str = "", source: str = "") -> None:
        if at is not None:
            events.setdefault((kind, what, at), {"at": at, "kind": kind, "what": what, "severity": severity,
                                                 "source": source})
    for r in recs:
        add(r.started_at, "run", f"{r.notebook} ran: {r.status}, worst {r.run.get('worst_severity', '?')}",
            r.run.get("worst_severity", ""), r.run_id)
        alert = r.run.get("alert") or {}
        if alert:
            add(_ts(alert.get("starts_at")) or r.started_at, "alert",
                f"alert {alert.get('labels', {}).get('alertname', '?')} {alert.get('status', 'firing')} "
                f"({alert.get('source', '?')})", "", r.run_id)
        for f in r.findings():
            ev = f.evidence
            if f.check == "svc.change_lined_up" and f.severity.active:
                add(_ts(ev.get("change_time")), "change", f"{ev.get('change_service', '?')} {ev.get('version', '')} "
                                                         "landed".replace("  ", " "), "", r.run_id)
            if f.check in ("svc.error_spike", "svc.change_lined_up") and f.severity.active:
                add(_ts(ev.get("onset")), "onset", f"{f.subject.split(':')[0]}: errors began", f.severity.value,
                    r.run_id)
    timeline = finding_timeline(recs)
    for t in timeline.itertuples():
        add(t.first_seen.to_pydatetime(), "finding", t.title, t.worst, t.notebook)
        if pd.notna(t.resolved_at):
            add(t.resolved_at.to_pydatetime(), "resolved", t.title, "ok", t.notebook)
    for n in notes:
        add(n.at, "note", n.text, "", "note")
    df = pd.DataFrame(list(events.values()), columns=EVENT_COLUMNS)
    if df.empty:
        return df
    df["at"] = pd.to_datetime(df["at"], utc=True)
    order = {"change": 0, "onset": 1, "alert": 2, "note": 3, "run": 4, "finding": 5, "resolved": 6}
    return df.sort_values(["at", "kind"], key=lambda s: s.map(order) if s.name == "kind" else s,
                          ignore_index=True)


def onset(events: pd.DataFrame) -> datetime | None:
    """When the incident began by the evidence: the earliest error onset, alert or note (people's first sign);
    else the first finding."""
    if events.empty:
        return None
    for kinds in (("onset", "alert", "note"), ("finding",)):
        e = events[events["kind"].isin(kinds)]
        if len(e):
            return e["at"].min().to_pydatetime()
    return None


# --------------------------------------------------------------------------- what people read

@dataclass(frozen=True)
class Impact:
    """One user-facing service and what its users see."""

    service: str
    what: str
    since: datetime | None
    severity: Severity


def describe_service(name: str) -> str:
    """A service as stakeholders know it."""
    low = name.lower()
    for words, label in ((("identity", "auth", "login", "sso"), "Sign-in"), (("portal", "web", "frontend", "app"),
                         "The portal"), (("worker", "tasks", "jobs"), "Background jobs"), (("api",), "The API")):
        if any(w in low for w in words):
            return f"{label} ({name})"
    return name


def impacts(latest: list[Record], events: pd.DataFrame) -> list[Impact]:
    """User-facing impact from the latest run of each notebook: failing health checks, error spikes, outages,
    delayed background work; one line per service (its facts combined), worst first, with the onset the evidence
    gives."""
    onsets = {row.what.split(":")[0]: row.at.to_pydatetime() for row in events.itertuples() if row.kind == "onset"} \
        if len(events) else {}
    first_seen = {row.what: row.at.to_pydatetime() for row in events.itertuples() if row.kind == "finding"} \
        if len(events) else {}
    facts: dict[str, dict[str, Any]] = {}
    for r in latest:
        for f in active(r).values():
            if f.check == "svc.health" and f.severity is Severity.CRIT:
                service, fact = f.subject, "health"
            elif f.check in ("svc.error_spike", "svc.prolonged_outage"):
                service, fact = f.subject, "errors"
            elif f.check == "queue.backlog" and f.severity in (Severity.CRIT, Severity.WARN):
                service, fact = f"jobs:{f.subject.split(':', 1)[-1]}", "backlog"
            else:
                continue
            known = facts.setdefault(service, {"severity": f.severity, "since": None})
            if fact != "errors" or "peak_rate" in f.evidence or "errors" not in known:
                known[fact] = f  # an error spike's share of failing requests beats an outage's duration
            known["severity"] = min(known["severity"], f.severity, key=lambda s: s.rank)
            seen = onsets.get(service) or first_seen.get(f.title)
            if seen and (known["since"] is None or seen < known["since"]):
                known["since"] = seen
    return sorted((Impact(s, _impact_words(s, k), k["since"], k["severity"]) for s, k in facts.items()),
                  key=lambda i: (i.severity.rank, i.service))


def _impact_words(service: str, known: dict[str, Any]) -> str:
    if "backlog" in known:
        return f"Background jobs on {service.split(':', 1)[1]} are delayed ({known['backlog'].evidence.get('backlog', '?')} " \
               "waiting)"
    rate = known["errors"].evidence.get("peak_rate") if "errors" in known else None
    share = f"{100 * rate:.0f}% of requests fail at the peak" if isinstance(rate, (int, float)) else ""
    if "health" in known:
        return f"{describe_service(service)} is failing: its health check does not pass" + (f" and {share}" if share else "")
    return f"{describe_service(service)} is returning errors" + (f" ({share})" if share else "")


CAUSE_CHECKS = ("svc.change_lined_up", "svc.supabase_key", "svc.statuspage", "svc.new_errors", "pg.blocking",
                "pg.ddl_lock_queue", "pg.idle_in_transaction", "pg.connections", "queue.backlog", "queue.stuck_jobs",
                "redis.memory", "svc.redis")

# What a finding's check means for what the responders are doing, in words for stakeholders (no SQL, no shell).
PEOPLE_ACTIONS: dict[str, str] = {
    "svc.change_lined_up": "Rolling back {change_service} {version}, the change that lines up with the errors",
    "svc.health": "Restoring {subject} and the dependencies its health check names",
    "svc.supabase_key": "Correcting the Supabase key the services use",
    "svc.statuspage": "Following the provider's (Supabase) own incident",
    "svc.prolonged_outage": "Putting up the maintenance page while the fix rolls out",
    "svc.redis": "Restoring the connection to Redis, which holds sessions and job queues",
    "pg.blocking": "Ending the database session that blocks the others",
    "pg.ddl_lock_queue": "Pausing the database migration that waits behind other sessions",
    "pg.idle_in_transaction": "Ending database sessions left open mid-transaction",
    "pg.connections": "Freeing database connections",
    "pg.long_query": "Stopping database queries that run far too long",
    "pg.slow_statement": "Finding what made database queries slow",
    "queue.backlog": "Restarting and adding background workers",
    "queue.stuck_jobs": "Re-queueing the jobs a failed worker left behind",
    "redis.memory": "Freeing memory in Redis, which holds the job queues",
}


def _people_action(f: Finding) -> str:
    template = PEOPLE_ACTIONS.get(f.check)
    if template is None:
        return f"Working through the playbook's \"{f.playbook}\" steps" if f.playbook else ""
    values = {"subject": describe_service(f.subject), **{k: v for k, v in f.evidence.items() if isinstance(v, str)}}
    try:
        return template.format(**values).replace("  ", " ")
    except KeyError:
        return template.split(" {")[0]


def _distinct(findings: list[Finding]) -> list[Finding]:
    """One finding per title (two notebooks often see the same cause), first kept."""
    seen: set[str] = set()
    return [f for f in findings if not (f.title in seen or seen.add(f.title))]


def status_update(incident_id: str, recs: list[Record], notes: Iterable[Note] = (), *,
                  next_update: timedelta = timedelta(minutes=30), now: datetime | None = None) -> str:
    """A short Markdown update for stakeholders from the latest run of each notebook: impact first, one line per
    affected user-facing service with the onset the evidence gives; then what we know (causes); then what we are
    doing, in plain words. "Since" is the earliest onset in the evidence."""
    now = now or datetime.now(timezone.utc)
    notes = list(notes)
    latest = [r for r in latest_per_notebook(recs) if r.notebook not in ("retro", "triage")] or \
        [r for r in latest_per_notebook(recs) if r.notebook == "triage"]
    events = incident_events(recs, notes)
    since = onset(events)
    hurt = impacts(latest, events)
    problems = _distinct(sorted((f for r in latest for f in active(r).values() if not f.check.startswith("triage.")),
                                key=lambda f: f.severity.rank))
    state = "ongoing" if problems else "no active problems in the latest checks (monitoring)"
    lines = [f"# Status update: incident {incident_id}", "",
             f"*{now:%Y-%m-%d %H:%M} UTC.* Status: **{state}**."
             + (f" Since {since:%H:%M} UTC." if since else ""), "", "## Impact"]
    lines += [f"- {i.what}" + (f", since {i.since:%H:%M} UTC" if i.since else "") + "." for i in hurt] or \
        (["- No failing user-facing service was measured; the problems below may slow or fail requests."]
         if problems else ["- No user-facing impact in the latest checks."])
    causes = [f for f in problems if f.check in CAUSE_CHECKS]
    lines += ["", "## What we know"]
    lines += [f"- {f.title}" for f in causes[:6]] or ["- The cause is not yet clear; diagnosis continues."]
    lines += ["", "## What we are doing"]
    specific = [f for f in problems if f.check in PEOPLE_ACTIONS] + [f for f in problems if f.check not in PEOPLE_ACTIONS]
    actions: list[str] = []
    for f in specific:
        a = _people_action(f)
        if a and a not in actions:
            actions.append(a)
    human = [n for n in notes if n.at <= now][-3:]
    lines += [f"- {a}." for a in actions[:6]] or ["- Watching the systems until they return to normal."]
    lines += [f"- {n.at:%H:%M} UTC: {n.text}" for n in human]
    lines += ["", f"Latest checks: {', '.join(f'{r.notebook} at {r.started_at:%H:%M}' for r in latest) or 'none yet'}"
                  " UTC.", f"Next update by {now + next_update:%H:%M} UTC."]
    return "\n".join(lines) + "\n"


def retro_draft(incident_id: str, recs: list[Record], timeline: pd.DataFrame, notes: Iterable[Note] = ()) -> str:
    """A post-incident review draft following the playbook's section 6, from the records and notes alone; its
    timeline is in incident time (changes, onsets, alerts, findings, resolutions, runs, notes)."""
    notes = list(notes)
    runs = [r for r in recs if r.notebook != "retro"]
    events = incident_events(runs, notes)
    start, end = onset(events), (events["at"].max().to_pydatetime() if len(events) else None)
    crit = timeline[timeline["worst"] == "crit"] if len(timeline) else timeline
    resolved = int(timeline["resolved_at"].notna().sum()) if len(timeline) else 0
    lines = [f"# Post-incident review (draft): {incident_id}", "",
             "*Drafted from the archived diagnostic records and notes; edit before the retro.*", "", "## Summary",
             f"- The incident ran from {start:%Y-%m-%d %H:%M} UTC (first sign in the evidence) to at least "
             f"{end:%H:%M} UTC." if start and end else "- No diagnostic runs were archived.",
             f"- Diagnostics ran {len(runs)} times; {len(timeline)} distinct problems were found, {resolved} seen "
             "resolved by a later run of the same check.", "", "## Impact"]
    hurt = impacts(latest_per_notebook(runs), events) if runs else []
    lines += [f"- {i.what}" + (f", from {i.since:%H:%M} UTC" if i.since else "") for i in hurt] or \
        [f"- {r.title}" for r in crit.itertuples()] or ["- No critical finding was recorded."]
    lines += ["", "## Timeline (UTC)"]
    lines += [f"- {e.at:%H:%M:%S} {e.kind}: {e.what}" for e in events.itertuples()] or ["- No events."]
    causes = [t for t in timeline.itertuples() if t.check in CAUSE_CHECKS and t.worst == "crit"]
    lines += ["", "## Root-cause candidates"]
    lines += [f"- {t.title} (next action then: {t.action})" for t in causes] or \
        ["- None singled out by the diagnostics; see the timeline."]
    lines += ["", "## Contributing factors"]
    lines += [f"- {t.title}" for t in timeline.itertuples() if t.worst in ("warn", "error")][:10] or \
        ["- None recorded."]
    lines += ["", "## Action items (playbook section 6)",
              "- [ ] Capture the root cause and contributing factors above, confirmed with the owning teams.",
              "- [ ] Update runbooks, monitoring and tests so this is caught earlier:"]
    lines += [f"  - [ ] alert on: {t.title} ({t.key})" for t in crit.itertuples()]
    plays = sorted({t.playbook for t in timeline.itertuples() if t.playbook})
    lines += [f"- [ ] Review the playbook row *{p}*: {PLAYBOOK.get(p, '')}" for p in plays]
    lines += ["- [ ] If documentation gaps contributed, patch them now (the playbook is a good place).", ""]
    return "\n".join(lines)
