"""Following findings across runs: compare two records, an incident's finding timeline, the stakeholder
status update and the post-incident review draft. Everything here reads archived records only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from .archive import Record
from .findings import PLAYBOOK

ACTIVE = ("crit", "error", "warn")
RANK = {"crit": 0, "error": 1, "warn": 2, "info": 3, "ok": 4}


def _active(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in findings if f.get("severity") in ACTIVE}


def compare(a: Record, b: Record) -> pd.DataFrame:
    """Findings of run ``a`` against a later run ``b``: ``resolved`` (active in a, not in b), ``new``,
    ``persisting`` (with both severities), evidence side by side."""
    fa, fb = _active(a.findings()), _active(b.findings())
    rows = []
    for key in sorted(set(fa) | set(fb), key=lambda k: RANK.get((fb.get(k) or fa.get(k))["severity"], 9)):
        x, y = fa.get(key), fb.get(key)
        change = "persisting" if x and y else ("resolved" if x else "new")
        rows.append({"change": change, "key": key, "title": (y or x)["title"],
                     "before": x["severity"] if x else "-", "after": y["severity"] if y else "-",
                     "evidence_before": (x or {}).get("evidence", {}), "evidence_after": (y or {}).get("evidence", {})})
    df = pd.DataFrame(rows, columns=["change", "key", "title", "before", "after", "evidence_before", "evidence_after"])
    order = {"new": 0, "persisting": 1, "resolved": 2}
    return df.sort_values("change", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def is_clear(record: Record) -> bool:
    """No warn, crit or error finding in the record."""
    return not _active(record.findings())


def finding_timeline(recs: list[Record]) -> pd.DataFrame:
    """Per finding key across an incident's runs: worst severity, first and last seen (active), and when it
    was first seen cleared by a later run of the same notebook."""
    seen: dict[str, dict[str, Any]] = {}
    by_nb: dict[str, list[Record]] = {}
    for r in recs:
        by_nb.setdefault(r.notebook, []).append(r)
        for f in _active(r.findings()).values():
            row = seen.setdefault(f["key"], {"key": f["key"], "notebook": r.notebook, "title": f["title"],
                                             "worst": f["severity"], "first_seen": r.started_at,
                                             "last_seen": r.started_at, "runs": 0, "action": f.get("action", ""),
                                             "playbook": f.get("playbook", "")})
            row["last_seen"], row["runs"], row["title"] = r.started_at, row["runs"] + 1, f["title"]
            if RANK[f["severity"]] < RANK[row["worst"]]:
                row["worst"] = f["severity"]
    for row in seen.values():
        later = [r for r in by_nb[row["notebook"]] if r.started_at > row["last_seen"] and r.status == "ok"]
        row["resolved_at"] = later[0].started_at if later else pd.NaT
    df = pd.DataFrame(list(seen.values()), columns=["key", "notebook", "title", "worst", "first_seen", "last_seen",
                                                    "resolved_at", "runs", "action", "playbook"])
    if df.empty:
        return df
    df["first_seen"] = pd.to_datetime(df["first_seen"], utc=True)
    df["last_seen"] = pd.to_datetime(df["last_seen"], utc=True)
    df["resolved_at"] = pd.to_datetime(df["resolved_at"], utc=True)
    return df.sort_values(["first_seen", "worst"], key=lambda s: s.map(RANK) if s.name == "worst" else s,
                          ignore_index=True)


def runs_table(recs: list[Record]) -> pd.DataFrame:
    """One row per run: when, notebook, status, worst severity, counts, record id."""
    return pd.DataFrame([{"started_at": r.started_at, "notebook": r.notebook, "status": r.status,
                          "worst": r.run.get("worst_severity", "?"), "findings": r.run.get("finding_counts", {}),
                          "record": r.run_id} for r in recs],
                        columns=["started_at", "notebook", "status", "worst", "findings", "record"])


def latest_per_notebook(recs: list[Record]) -> list[Record]:
    latest: dict[str, Record] = {}
    for r in recs:
        if r.notebook not in ("retro", "triage") or r.notebook not in latest:
            latest[r.notebook] = r
    return sorted(latest.values(), key=lambda r: r.started_at)


def status_update(incident_id: str, recs: list[Record], *, next_update: timedelta = timedelta(minutes=30),
                  now: datetime | None = None) -> str:
    """A short Markdown update for stakeholders from the latest run of each notebook."""
    now = now or datetime.now(timezone.utc)
    latest = [r for r in latest_per_notebook(recs) if r.notebook != "retro"]
    active = [(r, f) for r in latest for f in _active(r.findings()).values()]
    active.sort(key=lambda rf: RANK[rf[1]["severity"]])
    crit = [f for _, f in active if f["severity"] == "crit"]
    state = "ongoing" if active else "no active problems in the latest checks (monitoring)"
    first = min((r.started_at for r in recs), default=now)
    lines = [f"# Status update: incident {incident_id}", "",
             f"*{now:%Y-%m-%d %H:%M} UTC.* Status: **{state}**. Investigating since {first:%H:%M} UTC.", "",
             "## Impact"]
    lines += [f"- {f['title']}" for f in crit[:5]] or ["- No critical impact found by the latest checks."]
    lines += ["", "## What we know"]
    lines += [f"- ({f['severity']}) {f['title']}" for _, f in active[:8] if f["severity"] != "crit"] or \
        ["- Nothing beyond the impact above."]
    lines += ["", "## What we are doing"]
    actions = []
    for _, f in active:
        if f.get("action") and f["action"] not in actions:
            actions.append(f["action"])
    lines += [f"- {a}" for a in actions[:5]] or ["- Watching the metrics until they return to baseline."]
    lines += ["", f"Checks: {', '.join(f'{r.notebook} ({r.started_at:%H:%M})' for r in latest) or 'none yet'}.",
              f"Next update by {now + next_update:%H:%M} UTC."]
    return "\n".join(lines) + "\n"


def retro_draft(incident_id: str, recs: list[Record], timeline: pd.DataFrame) -> str:
    """A post-incident review draft following the playbook's section 6, from the records alone."""
    runs = [r for r in recs if r.notebook != "retro"]
    start = min((r.started_at for r in runs), default=None)
    end = max((r.started_at for r in runs), default=None)
    crit = timeline[timeline["worst"] == "crit"] if len(timeline) else timeline
    lines = [f"# Post-incident review (draft): {incident_id}", "",
             "*Drafted from the archived diagnostic records; edit before the retro.*", "", "## Summary",
             f"- Diagnostics ran {len(runs)} times between {start:%Y-%m-%d %H:%M} and {end:%H:%M} UTC."
             if start and end else "- No diagnostic runs were archived.",
             f"- {len(timeline)} distinct problems were found; {int(timeline['resolved_at'].notna().sum()) if len(timeline) else 0} "
             "were seen resolved by a later run.", "", "## Impact"]
    lines += [f"- {r.title}" for r in crit.itertuples()] or ["- No critical finding was recorded."]
    lines += ["", "## Timeline (UTC)"]
    events = []
    for r in runs:
        events.append((r.started_at, f"{r.notebook} run: {r.status}, worst {r.run.get('worst_severity', '?')}"))
    for t in timeline.itertuples():
        events.append((t.first_seen.to_pydatetime(), f"first seen ({t.worst}): {t.title}"))
        if pd.notna(t.resolved_at):
            events.append((t.resolved_at.to_pydatetime(), f"resolved: {t.title}"))
    lines += [f"- {when:%H:%M:%S} {what}" for when, what in sorted(events, key=lambda e: e[0])]
    causes = [t for t in timeline.itertuples() if "change_lined_up" in t.key or "blocking" in t.key
              or "ddl_lock_queue" in t.key or "stuck_jobs" in t.key or "no live consumer" in t.title]
    lines += ["", "## Root-cause candidates"]
    lines += [f"- {t.title} (next action then: {t.action})" for t in causes] or \
        ["- None singled out by the diagnostics; see the timeline."]
    lines += ["", "## Contributing factors"]
    lines += [f"- {t.title}" for t in timeline.itertuples() if t.worst in ("warn", "error") and t not in causes][:10] \
        or ["- None recorded."]
    lines += ["", "## Action items (playbook section 6)",
              "- [ ] Capture the root cause and contributing factors above, confirmed with the owning teams.",
              "- [ ] Update runbooks, monitoring and tests so this is caught earlier:"]
    for t in timeline.itertuples():
        if t.worst == "crit":
            lines.append(f"  - [ ] alert on: {t.title} ({t.key})")
    plays = sorted({t.playbook for t in timeline.itertuples() if t.playbook})
    lines += [f"- [ ] Review the playbook row *{p}*: {PLAYBOOK.get(p, '')}" for p in plays]
    lines += ["- [ ] If documentation gaps contributed, patch them now (the playbook is a good place).", ""]
    return "\n".join(lines)
