"""Service rules for authentication failures and portal outages: health, Supabase, error spikes, changes."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..findings import Finding, Severity, Thresholds, from_source_error, ok
from ..sources import SourceError

AUTH = "Authentication failures"
PORTAL = "Portal outages"


_ok = ok


def health(checks: pd.DataFrame | SourceError, th: Thresholds, playbook: str) -> list[Finding]:
    """Each service's health endpoint: down (no answer, 5xx, health+json fail), degraded (warn, slow)."""
    check = "svc.health"
    if isinstance(checks, SourceError):
        return [from_source_error(checks, check, playbook)]
    if checks.empty:
        return [Finding(check, "config", Severity.WARN, "No service health endpoints are declared",
                        action="Add services.<name>.url and health to the environment file", playbook=playbook)]
    out = []
    for r in checks.itertuples():
        ev = {"url": r.url, "status": r.status, "category": r.category, "latency_ms": r.latency_ms,
              "health": r.health, "failing_checks": list(r.failing_checks)}
        if not r.ok:
            why = (f"health checks failing: {'; '.join(r.failing_checks)}" if r.failing_checks else
                   f"{r.category}" + (f" (HTTP {r.status})" if r.status else "") + (f": {r.error}" if r.error else ""))
            out.append(Finding(check, r.service, Severity.CRIT, f"{r.service} is unhealthy: {why}"[:200],
                               detail=f"GET {r.url} -> {r.status or r.category} in {r.latency_ms:.0f} ms",
                               action=f"Check {r.service}'s own dependencies named above; if a deploy lines up with "
                                      "the onset, roll it back", playbook=playbook, evidence=ev))
        elif r.health == "warn" or r.latency_ms >= th.health_latency_warn_ms:
            out.append(Finding(check, r.service, Severity.WARN,
                               f"{r.service} is degraded: {'; '.join(r.failing_checks) or 'slow health check'} "
                               f"({r.latency_ms:.0f} ms)", playbook=playbook, evidence=ev,
                               action=f"Watch {r.service}; look at the degraded dependency"))
    healthy = [r.service for r in checks.itertuples() if r.ok and r.health != "warn"]
    if healthy and not out:
        return _ok(check, f"Healthy: {', '.join(healthy)}", playbook)
    if healthy:
        out += [Finding(check, s, Severity.OK, f"{s} answers its health check", playbook=playbook) for s in healthy]
    return out


def statuspage(page: pd.DataFrame | SourceError, th: Thresholds, playbook: str, name: str = "Supabase"
               ) -> list[Finding]:
    """The provider's status page: its indicator, components not operational, open incidents."""
    check = "svc.statuspage"
    if isinstance(page, SourceError):
        return [from_source_error(page, check, playbook)]
    indicator = page.attrs.get("indicator", "unknown")
    comps = [f"{r.component}: {r.status}" for r in page.itertuples() if r.component != "(page)"]
    incidents = page.attrs.get("incidents", [])
    if indicator in ("none",) and not comps:
        return _ok(check, f"{name} status page: all systems operational", playbook)
    sev = Severity.CRIT if indicator in ("major", "critical") or any("major_outage" in c for c in comps) \
        else Severity.WARN
    names = "; ".join(i["name"] for i in incidents[:3] if i.get("name"))
    return [Finding(check, name.lower(), sev,
                    f"{name} reports {indicator} problems: {', '.join(comps) or 'see the page'}"[:200],
                    detail=f"open incidents: {names}" if names else "",
                    action=f"The cause may be upstream: follow {name}'s incident, tell users, do not roll back for it",
                    playbook=playbook, evidence={"indicator": indicator, "components": comps, "incidents": incidents})]


def supabase_key(result: pd.DataFrame | SourceError, th: Thresholds, playbook: str) -> list[Finding]:
    """Supabase key validity: rejected (401/403) versus Supabase unreachable or failing."""
    check = "svc.supabase_key"
    if isinstance(result, SourceError):
        return [from_source_error(result, check, playbook)]
    verdicts = set(result["verdict"])
    key_env = result.attrs.get("key_env", "the key variable")
    ev = {"endpoints": result[["endpoint", "status", "verdict"]].to_dict(orient="records")}
    if "key_rejected" in verdicts:
        return [Finding(check, "anon_key", Severity.CRIT, f"Supabase rejects the key in ${key_env} (401/403)",
                        detail="Supabase answers, so the key itself is wrong, rotated or for another project.",
                        action=f"Verify Supabase env keys: set ${key_env} to the project's current anon key and "
                               "redeploy the services that read it", playbook=playbook, evidence=ev)]
    if "outage" in verdicts:
        return [Finding(check, "reachability", Severity.CRIT, "Supabase is unreachable or failing (5xx/no answer)",
                        action="Check Supabase status and the network path to it; keys are not the problem",
                        playbook=playbook, evidence=ev)]
    return _ok(check, f"Supabase accepts the key in ${key_env}", playbook, **ev)


def redis_reachable(info: Any, playbook: str) -> list[Finding]:
    """Redis connectivity (sessions, rate limits and token caches live there)."""
    check = "svc.redis"
    if isinstance(info, SourceError):
        f = from_source_error(info, check, playbook)
        return [Finding(f.check, f.subject, Severity.CRIT if info.kind in ("unreachable", "timeout", "permission")
                        else f.severity, f"Redis is not reachable from here: {info.kind}", detail=info.message,
                        action="Restore Redis connectivity (identity sessions and rate limits depend on it)",
                        playbook=playbook, evidence=f.evidence)]
    return _ok(check, f"Redis answers (version {info.get('redis_version', '?')}, "
                      f"{info.get('connected_clients', '?')} clients)", playbook)


def spike_severity(o: Any, th: Thresholds) -> Severity | None:
    """A spike's severity by the measure its logs allow: the failing share of requests, or error events a minute
    for a service that logs no requests."""
    if o.denominator == "requests":
        if o.peak_rate < th.error_rate_warn:
            return None
        return Severity.CRIT if o.peak_rate >= th.error_rate_crit else Severity.WARN
    if o.peak_rate < th.error_events_warn_per_min:
        return None
    return Severity.CRIT if o.peak_rate >= th.error_events_crit_per_min else Severity.WARN


def error_spikes(onsets: pd.DataFrame, th: Thresholds, playbook: str, what: str = "errors",
                 details: pd.DataFrame | None = None) -> list[Finding]:
    """A service whose errors rose sharply: when, how high, against which denominator (requests, or error events a
    minute for a server that logs no requests), the failing status codes and the top reasons before and after."""
    check = "svc.error_spike"
    extra = {r.service: r for r in details.itertuples()} if details is not None and len(details) else {}
    out = []
    for o in onsets.itertuples():
        sev = spike_severity(o, th)
        if sev is None:
            continue
        d = extra.get(o.service)
        codes = ", ".join(f"{k}: {v:,}" for k, v in sorted(d.statuses.items())) if d is not None and d.statuses else ""
        if o.denominator == "requests":
            title = (f"{o.service}: {what} rose to {100 * o.peak_rate:.0f}% of {o.peak_total:,} requests at "
                     f"{o.peak_at:%H:%M} UTC (from {100 * o.baseline_rate:.1f}%), onset {o.onset:%H:%M}"
                     + (f"; {codes}" if codes else ""))
            measure = "failing requests over requests, per minute"
        else:
            title = (f"{o.service}: {o.peak_rate:.0f} error events a minute at {o.peak_at:%H:%M} UTC (baseline "
                     f"{o.baseline_rate:.1f}/min), onset {o.onset:%H:%M}; it logs no requests, so no share of "
                     "requests can be given")
            measure = "error events per minute against the minutes before the onset"
        reasons = "; ".join(f"{r} ({n}x)" for r, n in (d.reasons_after if d is not None else [])[:3])
        before = "; ".join(f"{r} ({n}x)" for r, n in (d.reasons_before if d is not None else [])[:3])
        out.append(Finding(check, o.service, sev, title[:300],
                           detail=f"Measured as {measure}. {o.errors_since_onset} since the onset; elevated for "
                                  f"{o.minutes_elevated} min. Top reasons since: {reasons or 'none logged'}. "
                                  f"Before: {before or 'none'}.",
                           action="Find what changed at the onset (changes below) and the new reasons",
                           playbook=playbook,
                           evidence={"onset": o.onset, "denominator": o.denominator, "peak_rate": o.peak_rate,
                                     "baseline_rate": o.baseline_rate, "peak_total": o.peak_total,
                                     "statuses": d.statuses if d is not None else {},
                                     "reasons_after": d.reasons_after if d is not None else [],
                                     "reasons_before": d.reasons_before if d is not None else []}))
    return out or _ok(check, f"No {what} spike in the window", playbook)


def new_error_templates(templates: pd.DataFrame, th: Thresholds, playbook: str, limit: int = 5) -> list[Finding]:
    """Error messages first seen at or after the onset: what broke, in the service's own words."""
    check = "svc.new_errors"
    new = templates[templates["new"]].head(limit) if len(templates) else templates
    out = []
    for r in new.itertuples():
        out.append(Finding(check, r.template[:80], Severity.WARN,
                           f"New error since the onset ({r.count}x, {r.services}): {r.template[:120]}",
                           detail=f"first seen {r.first_seen:%H:%M:%S} UTC; example: {r.example[:200]}",
                           action="Read the example against the change that lines up", playbook=playbook,
                           evidence={"count": int(r.count), "first_seen": r.first_seen}))
    return out or _ok(check, "No error message new since the onset", playbook)


def changes_lined_up(lined: pd.DataFrame, changes: pd.DataFrame | SourceError, th: Thresholds, playbook: str
                     ) -> list[Finding]:
    """The change that landed shortly before an error onset: roll it back."""
    check = "svc.change_lined_up"
    if isinstance(changes, SourceError):
        return [from_source_error(changes, check, playbook)]
    lined = lined[(lined["lead_s"] >= -120) & (lined["lead_s"] <= th.change_lead_s)] if len(lined) else lined
    if lined.empty:
        return _ok(check, f"No change in the {len(changes)} recorded lines up with an error onset", playbook)
    out, seen = [], set()
    for r in lined.itertuples():
        if r.service in seen:
            continue
        seen.add(r.service)
        mins = r.lead_s / 60
        sev = Severity.CRIT if r.same_service else Severity.WARN
        target = f"{r.change_service or 'unknown service'} {r.kind} {r.version}".strip()
        verb = "Roll back" if r.kind in ("deploy", "config", "flag") else "Revert"
        out.append(Finding(check, f"{r.service}:{r.change_service}:{r.version}", sev,
                           f"{target} landed {abs(mins):.0f} min {'before' if mins >= 0 else 'after'} "
                           f"{r.service}'s error onset ({r.change_time:%H:%M} vs {r.onset:%H:%M} UTC)",
                           detail=r.description,
                           action=f"{verb} {r.change_service} {r.kind} {r.version}, then watch the error rate",
                           playbook=playbook, evidence={"change_time": r.change_time, "onset": r.onset,
                                                        "version": r.version, "change_service": r.change_service}))
    return out


def prolonged_outage(onsets: pd.DataFrame, checks: pd.DataFrame | SourceError, service: str, th: Thresholds
                     ) -> list[Finding]:
    """Portal errors elevated past the threshold (or portal down): put up the maintenance page."""
    check = "svc.prolonged_outage"
    row = onsets[onsets["service"] == service] if len(onsets) else onsets
    minutes = int(row["minutes_elevated"].max()) if len(row) else 0
    down = isinstance(checks, pd.DataFrame) and bool(((checks["service"] == service) & ~checks["ok"]).any())
    if minutes >= th.outage_prolonged_min or (down and minutes >= th.outage_prolonged_min / 3):
        return [Finding(check, service, Severity.CRIT,
                        f"{service} has been failing for {minutes} min{' and is down now' if down else ''}",
                        action="Redirect traffic to the maintenance page while the fix rolls out; post a status update",
                        playbook=PORTAL, evidence={"minutes_elevated": minutes, "down": down})]
    return _ok(check, f"{service}: no prolonged outage ({minutes} min elevated)", PORTAL)


def log_quality(frame: pd.DataFrame | SourceError, service: str, playbook: str) -> list[Finding]:
    """A log source that could not be read, one mostly unreadable (a copytruncate hole of NUL bytes, binary data,
    the wrong format), and lines that could not be parsed (counted, sampled)."""
    check = "svc.logs"
    if isinstance(frame, SourceError):
        return [from_source_error(frame, check, playbook)]
    a = frame.attrs
    read, bad = int(a.get("read_bytes", 0)) + int(a.get("unreadable_bytes", 0)), int(a.get("unreadable_bytes", 0))
    lines, skipped = int(a.get("lines", 0)), int(a.get("skipped", 0))
    if (read and bad > read / 2) or (lines and skipped > lines / 2):
        share = max(bad / read if read else 0.0, skipped / lines if lines else 0.0)
        return [Finding(check, f"{service}:unreadable", Severity.WARN,
                        f"{service}: its log is mostly unreadable ({100 * share:.0f}%: {bad:,} bytes of NUL or binary "
                        f"data, {skipped:,} of {lines:,} lines unparsed)",
                        detail="A copytruncate rotation leaves a hole of NUL bytes; binary data or the wrong format "
                               "make lines unparseable. What could be read is used; the rest says nothing.",
                        action="Check the file's rotation (copytruncate) and logs.format in the environment file",
                        playbook=playbook, evidence={"unreadable_bytes": bad, "skipped": skipped, "lines": lines,
                                                     "sample": a.get("skipped_sample", [])})]
    if skipped:
        return [Finding(check, f"{service}:skipped", Severity.INFO,
                        f"{service}: {skipped} of {lines} log lines could not be parsed",
                        detail=" | ".join(a.get("skipped_sample", [])[:3]),
                        action="Nothing urgent: they are left out of the rates", playbook=playbook,
                        evidence={"skipped": skipped, "sample": a.get("skipped_sample", [])})]
    events = a.get("events", len(frame))
    return _ok(check, f"{service}: {len(frame)} events in the window ({events} read, from {lines} lines)", playbook)
