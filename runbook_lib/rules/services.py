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


def error_spikes(onsets: pd.DataFrame, th: Thresholds, playbook: str, what: str = "errors") -> list[Finding]:
    """A service whose error share rose sharply: when it started, how high, how long."""
    check = "svc.error_spike"
    out = []
    for o in onsets.itertuples():
        if o.peak_rate < th.error_rate_warn:
            continue
        sev = Severity.CRIT if o.peak_rate >= th.error_rate_crit else Severity.WARN
        out.append(Finding(check, o.service, sev,
                           f"{o.service}: {what} rose to {100 * o.peak_rate:.0f}% of requests at "
                           f"{o.peak_at:%H:%M} UTC (from {100 * o.baseline_rate:.1f}%), onset {o.onset:%H:%M}",
                           detail=f"{o.errors_since_onset} {what} since the onset; elevated for {o.minutes_elevated} min",
                           action="Find what changed at the onset (changes below) and the new error messages",
                           playbook=playbook, evidence={"onset": o.onset, "peak_rate": o.peak_rate,
                                                        "baseline_rate": o.baseline_rate}))
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
    """Lines that could not be parsed (counted, sampled) and a log source that could not be read."""
    check = "svc.logs"
    if isinstance(frame, SourceError):
        return [from_source_error(frame, check, playbook)]
    skipped = int(frame.attrs.get("skipped", 0))
    if skipped:
        return [Finding(check, f"{service}:skipped", Severity.INFO,
                        f"{service}: {skipped} of {frame.attrs.get('lines', '?')} log lines could not be parsed",
                        detail=" | ".join(frame.attrs.get("skipped_sample", [])[:3]),
                        action="Nothing urgent: they are left out of the rates", playbook=playbook,
                        evidence={"skipped": skipped, "sample": frame.attrs.get("skipped_sample", [])})]
    return _ok(check, f"{service}: {len(frame)} log lines in the window", playbook)
