"""Queue-backlog rules: Redis health and job-queue evidence -> findings with the playbook's next action."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..findings import Finding, Severity, Thresholds, duration, from_source_error, ok
from ..sources import SourceError

PLAYBOOK = "Queue backlog"


_age = duration


def _ok(check: str, title: str, **evidence: Any) -> list[Finding]:
    return ok(check, title, PLAYBOOK, **evidence)


def _err(err: SourceError, check: str) -> list[Finding]:
    return [from_source_error(err, check, PLAYBOOK)]


def redis_memory(mem: pd.DataFrame | SourceError, th: Thresholds,
                 queues: pd.DataFrame | SourceError | None = None) -> list[Finding]:
    """Memory against its limit, and an eviction policy that would evict queue data (when queues exist)."""
    check = "redis.memory"
    if isinstance(mem, SourceError):
        return _err(mem, check)
    m = mem.iloc[0]
    out: list[Finding] = []
    ev = {"used_bytes": int(m.used_bytes), "limit_bytes": int(m.limit_bytes), "limit_kind": m.limit_kind,
          "used_pct": m.used_pct, "policy": m.maxmemory_policy}
    if m.used_pct >= th.redis_memory_warn_pct:
        sev = Severity.CRIT if m.used_pct >= th.redis_memory_crit_pct else Severity.WARN
        out.append(Finding(check, "used", sev, f"Redis uses {m.used_pct:.0f}% of {m.limit_kind} "
                           f"({m.used_bytes / (1 << 20):,.0f} MiB)",
                           action="Find what grows (memory by key pattern below): drain or trim completed/failed "
                                  "job sets, then raise maxmemory or scale Redis",
                           playbook=PLAYBOOK, evidence=ev))
    systems = set(queues["system"]) if isinstance(queues, pd.DataFrame) and len(queues) else set()
    if m.maxmemory_policy != "noeviction" and systems:
        out.append(Finding(check, "policy", Severity.CRIT,
                           f"maxmemory-policy is {m.maxmemory_policy}: Redis may evict queue jobs and locks",
                           detail="Queue libraries (BullMQ in particular) need noeviction; an evicted lock makes a "
                                  "running job look stalled and an evicted job is lost.",
                           action="CONFIG SET maxmemory-policy noeviction (and persist it in redis.conf)",
                           playbook=PLAYBOOK, evidence=ev))
    if m.fragmentation_ratio >= th.redis_fragmentation_warn and m.rss_bytes > (100 << 20):
        out.append(Finding(check, "fragmentation", Severity.INFO,
                           f"Memory fragmentation ratio is {m.fragmentation_ratio:.2f}",
                           action="Consider activedefrag yes; a restart reclaims it", playbook=PLAYBOOK, evidence=ev))
    return out or _ok(check, f"Redis memory: {m.used_pct:.1f}% of {m.limit_kind}, policy {m.maxmemory_policy}", **ev)


def redis_clients(summary: pd.DataFrame | SourceError, delta: pd.DataFrame | SourceError,
                  th: Thresholds) -> list[Finding]:
    """Connections near maxclients, connections rejected and keys evicted during the sample."""
    check = "redis.clients"
    out: list[Finding] = []
    if isinstance(summary, SourceError):
        out += _err(summary, check)
    else:
        s = summary.iloc[0]
        if s.clients_pct >= th.redis_clients_warn_pct:
            sev = Severity.CRIT if s.clients_pct >= th.redis_clients_crit_pct else Severity.WARN
            out.append(Finding(check, "maxclients", sev,
                               f"{s.connected_clients} of {s.maxclients} Redis connections in use ({s.clients_pct:.0f}%)",
                               action="Find the client leaking connections (clients table below); lower pool sizes "
                                      "or raise maxclients", playbook=PLAYBOOK,
                               evidence={"connected": int(s.connected_clients), "maxclients": int(s.maxclients)}))
    if isinstance(delta, SourceError):
        out += _err(delta, "redis.counters")
    else:
        d = delta.iloc[0]
        if d.rejected_connections > 0:
            out.append(Finding("redis.counters", "rejected_connections", Severity.CRIT,
                               f"Redis rejected {int(d.rejected_connections)} connections during the sample",
                               action="maxclients is reached: free connections now, then raise maxclients",
                               playbook=PLAYBOOK, evidence={"rejected": int(d.rejected_connections)}))
        if d.evicted_keys > 0:
            out.append(Finding("redis.counters", "evicted_keys", Severity.CRIT,
                               f"Redis evicted {int(d.evicted_keys)} keys during the sample",
                               action="Memory is full and keys are being dropped: free memory or raise maxmemory now",
                               playbook=PLAYBOOK, evidence={"evicted": int(d.evicted_keys)}))
    return out or _ok(check, "Redis connections: below maxclients, none rejected, no keys evicted")


def slowlog(entries: pd.DataFrame | SourceError, th: Thresholds, window_start: Any = None) -> list[Finding]:
    """Slow Redis commands inside the incident window."""
    check = "redis.slowlog"
    if isinstance(entries, SourceError):
        return _err(entries, check)
    df = entries
    if window_start is not None and len(df):
        df = df[df["start"] >= pd.Timestamp(window_start)]
    slow = df[df["duration_ms"] >= th.redis_slowlog_warn_ms] if len(df) else df
    if slow.empty:
        return _ok(check, f"No Redis command over {th.redis_slowlog_warn_ms:.0f} ms in the window")
    worst = slow.sort_values("duration_ms", ascending=False).iloc[0]
    return [Finding(check, "window", Severity.WARN,
                    f"{len(slow)} Redis commands took over {th.redis_slowlog_warn_ms:.0f} ms; worst "
                    f"{worst.duration_ms:,.0f} ms: {worst.command[:80]}",
                    action="A slow command blocks every client: replace KEYS/large range reads with SCAN/bounded ranges",
                    playbook=PLAYBOOK, evidence={"count": len(slow), "worst_ms": worst.duration_ms})]


def backlog(depths: pd.DataFrame | SourceError, consumers: pd.DataFrame | SourceError,
            drains: pd.DataFrame | SourceError | None, th: Thresholds) -> list[Finding]:
    """Per queue: work waiting with no live consumer, a growing backlog, an old head job, a paused queue."""
    check = "queue.backlog"
    if isinstance(depths, SourceError):
        return _err(depths, check)
    if depths.empty:
        return _ok(check, "No job queues found in this Redis")
    alive = {} if isinstance(consumers, SourceError) else \
        {(r.system, r.queue): r for r in consumers.itertuples()}
    rates = {} if drains is None or isinstance(drains, SourceError) else \
        {(r.system, r.queue): r for r in drains.itertuples()}
    out: list[Finding] = []
    for q in depths.itertuples():
        key = (q.system, q.queue)
        c, rate = alive.get(key), rates.get(key)
        growing = bool(rate.growing) if rate is not None else False
        ev = {"system": q.system, "backlog": int(q.backlog), "active": int(q.active), "delayed": int(q.delayed),
              "oldest_waiting_age_s": q.oldest_waiting_age_s,
              "live_workers": int(c.live_workers) if c is not None else None,
              "net_per_s": float(rate.net_per_s) if rate is not None else None,
              "time_to_drain_s": float(rate.time_to_drain_s) if rate is not None else None}
        subject = f"{q.system}:{q.queue}"
        if q.is_paused and q.backlog > 0:
            out.append(Finding(check, subject, Severity.WARN, f"{q.queue} is paused with {q.backlog} jobs waiting",
                               action="Resume the queue if the pause was not deliberate", playbook=PLAYBOOK, evidence=ev))
            continue
        if q.backlog > 0 and c is not None and not c.alive:
            out.append(Finding(check, subject, Severity.CRIT,
                               f"{q.queue} ({q.system}): {q.backlog} jobs waiting and no live consumer"
                               f"{', backlog growing' if growing else ''}",
                               detail=c.evidence,
                               action="Scale the worker horizontally: start or restart workers for this queue, then "
                                      "check why the old ones died (OOM, crash loop, deploy)",
                               playbook=PLAYBOOK, evidence=ev))
            continue
        old = q.oldest_waiting_age_s if q.oldest_waiting_age_s == q.oldest_waiting_age_s else 0.0
        if growing or old >= th.queue_oldest_warn_s:
            sev = Severity.CRIT if old >= th.queue_oldest_crit_s else Severity.WARN
            drain = f", drains in {_age(rate.time_to_drain_s)} at the current rate" if rate is not None and \
                rate.net_per_s < 0 else ""
            out.append(Finding(check, subject, sev,
                               f"{q.queue} ({q.system}): backlog {q.backlog}{' and growing' if growing else ''}, "
                               f"oldest waiting {_age(old)}{drain}",
                               detail=c.evidence if c is not None else "",
                               action="Scale the worker horizontally and inspect stuck jobs (below); if one job type "
                                      "dominates, look at what slowed it", playbook=PLAYBOOK, evidence=ev))
    return out or _ok(check, f"{len(depths)} queues: nothing waiting without a consumer, none growing")


_STUCK = {
    "stalled": (Severity.CRIT, "stalled (active, lock expired: its worker died)",
                "Start a worker: its stalled checker moves these back to wait; if they keep stalling, the job "
                "outlives lockDuration or the worker is CPU-starved"),
    "abandoned": (Severity.CRIT, "abandoned by a dead RQ work-horse",
                  "Restart the RQ workers; StartedJobRegistry cleanup moves these to failed so they can be requeued"),
    "hung": (Severity.WARN, "processing far longer than usual",
             "Inspect what these jobs wait on (external API, database lock); cancel and retry them if needed"),
    "overdue_delayed": (Severity.WARN, "delayed past their due time",
                        "No worker is promoting delayed jobs: start a worker for this queue"),
    "unacked_overdue": (Severity.WARN, "delivered to a worker that never acknowledged them",
                        "Their worker died; a restarted Celery worker restores them after the visibility timeout"),
}


def stuck(jobs: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Stuck jobs grouped per queue and kind, naming the job ids."""
    check = "queue.stuck_jobs"
    if isinstance(jobs, SourceError):
        return _err(jobs, check)
    if jobs.empty:
        return _ok(check, "No stalled, hung, abandoned or overdue jobs")
    out = []
    for (system, queue, kind), g in jobs.groupby(["system", "queue", "kind"], sort=False):
        sev, what, action = _STUCK[kind]
        ids = [str(x) for x in g["job_id"]]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        out.append(Finding(check, f"{system}:{queue}:{kind}", sev,
                           f"{len(ids)} {queue} jobs {what}: {shown}",
                           detail=f"oldest {_age(g['age_s'].max())}; {g.iloc[0]['detail']}",
                           action=action, playbook=PLAYBOOK,
                           evidence={"job_ids": ids[:50], "count": len(ids), "max_age_s": g["age_s"].max(),
                                     "names": sorted({str(n) for n in g["name"] if n})[:10]}))
    return out


def failures(failed: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Recent failures grouped by reason: one finding per frequent reason, the rest as information."""
    check = "queue.failures"
    if isinstance(failed, SourceError):
        return _err(failed, check)
    if failed.empty:
        return _ok(check, "No recent failed jobs")
    out = []
    for r in failed.itertuples():
        sev = Severity.WARN if r.count >= th.failed_reason_warn else Severity.INFO
        out.append(Finding(check, f"{r.system}:{r.queue}:{r.reason[:60]}", sev,
                           f"{r.count} recent {r.queue} failures: {r.reason[:120]}",
                           action="Fix the cause before retrying them; a retry storm re-grows the backlog",
                           playbook=PLAYBOOK, evidence={"count": int(r.count), "example_job": r.example_job}))
    return out[:20]


def selection(selected: pd.DataFrame | SourceError, name: str) -> list[Finding]:
    """A queue named by the alert or the responder that does not exist in this Redis."""
    if isinstance(selected, SourceError) or not name or len(selected):
        return []
    avail = selected.attrs.get("available", [])
    return [Finding("queue.selection", name, Severity.WARN, f"No queue called {name!r} in this Redis",
                    detail=f"queues found: {', '.join(avail[:10]) or 'none'}",
                    action="Check the queue name in the alert or the parameter; the checks below cover no queue",
                    playbook=PLAYBOOK, evidence={"available": avail[:20]})]
