"""Queue-backlog rules: Redis health and job-queue evidence -> findings with the playbook's next action.

Each rule states only its logic (see :func:`findings.rule`): a SourceError becomes an ``error`` finding and a rule
that yields nothing gives one ``ok`` finding whose words claim no more than the evidence showed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..findings import Finding, Severity, Thresholds, duration, rule
from ..sources import Evidence, SourceError

PLAYBOOK = "Queue backlog"
MIB = 1 << 20

# How each library stops keeping finished jobs: the action when completed/failed jobs fill memory.
RETENTION = {
    "bullmq": "removeOnComplete/removeOnFail (job options, or the worker's defaults), then Queue.clean for what is kept",
    "bull": "removeOnComplete/removeOnFail in the job options, then Queue.clean for what is kept",
    "rq": "result_ttl/failure_ttl on enqueue (and the FailedJobRegistry's cleanup)",
    "sidekiq": "dead_max_jobs/dead_timeout_in_seconds, and clear the dead and retry sets of what will not be retried",
    "celery": "result_expires for the result backend",
}


def _frame(x: Any) -> pd.DataFrame | None:
    return x if isinstance(x, pd.DataFrame) else None


# --------------------------------------------------------------------------- Redis memory

def _memory_ok(mem: pd.DataFrame, th: Thresholds, *args: Any, **kwargs: Any) -> str:
    m = mem.iloc[0]
    refused = "no write refused since the server started" if m.oom_rejected_total == 0 else \
        "refused writes not reported by this server" if m.oom_rejected_total is None else ""
    return f"Redis memory: {m.used_pct:.1f}% of {m.limit_kind}, policy {m.maxmemory_policy}; {refused}".rstrip("; ")


@rule("redis.memory", playbook=PLAYBOOK, ok=_memory_ok)
def redis_memory(mem: pd.DataFrame, th: Thresholds, queues: Evidence | None = None, delta: Evidence | None = None,
                 depths: Evidence | None = None, keyspace: Evidence | None = None) -> Iterable[Finding]:
    """Memory against its limit and what that means under the eviction policy (writes refused, or which queue keys
    are evicted); writes refused for memory during the sample; an evicting policy under queues; fragmentation.
    The action follows what fills memory (``keyspace`` by pattern against the queues' ``depths``)."""
    m = mem.iloc[0]
    systems = set(queues["system"]) if _frame(queues) is not None and len(queues) else set()
    d = _frame(delta)
    refused_now = int(d.iloc[0]["oom_rejected"]) if d is not None and pd.notna(d.iloc[0]["oom_rejected"]) else None
    action, fill = memory_fill(keyspace, depths)
    ev = {"used_bytes": int(m.used_bytes), "limit_bytes": int(m.limit_bytes), "limit_kind": m.limit_kind,
          "used_pct": m.used_pct, "policy": m.maxmemory_policy, "oom_rejected_total": m.oom_rejected_total,
          "oom_rejected_during_sample": refused_now, **fill}
    if m.used_pct >= th.redis_memory_warn_pct or refused_now:
        yield _memory_used(m, th, refused_now, d, systems, action, ev)
    elif m.oom_rejected_total:
        yield Finding("redis.memory", "rejected_writes", Severity.INFO,
                      f"Redis refused {m.oom_rejected_total:,} writes for memory since it started (none during the "
                      "sample)", detail="Producers' adds failed then; their jobs were never queued.",
                      action="Check the producers' error logs for the lost jobs; keep memory headroom", playbook=PLAYBOOK,
                      evidence=ev)
    if systems and m.maxmemory_policy != "noeviction":
        near = m.used_pct >= th.redis_memory_warn_pct
        yield Finding("redis.memory", "policy", Severity.CRIT if near else Severity.WARN,
                      f"maxmemory-policy is {m.maxmemory_policy}: at the limit Redis evicts {_at_risk(m.maxmemory_policy, systems)}",
                      detail="Queue libraries (BullMQ in particular) need noeviction: an evicted lock makes a running "
                             "job look stalled and run twice, an evicted job is lost without a trace.",
                      action="CONFIG SET maxmemory-policy noeviction (and persist it in redis.conf)", playbook=PLAYBOOK,
                      evidence=ev)
    if m.fragmentation_ratio >= th.redis_fragmentation_warn and m.rss_bytes > (100 << 20):
        yield Finding("redis.memory", "fragmentation", Severity.INFO,
                      f"Memory fragmentation ratio is {m.fragmentation_ratio:.2f}",
                      action="Consider activedefrag yes; a restart reclaims it", playbook=PLAYBOOK, evidence=ev)


def _memory_used(m: Any, th: Thresholds, refused_now: int | None, d: pd.DataFrame | None, systems: set[str],
                 action: str, ev: dict[str, Any]) -> Finding:
    size = f"{m.used_bytes / MIB:,.0f} MiB of {m.limit_bytes / MIB:,.0f} MiB"
    if m.limit_kind != "maxmemory":
        return Finding("redis.memory", "used", Severity.CRIT if m.used_pct >= th.redis_memory_crit_pct else Severity.WARN,
                       f"Redis uses {m.used_pct:.0f}% of system memory ({size}) with no maxmemory",
                       detail="With maxmemory 0 Redis grows until the operating system kills it, losing every queue.",
                       action=action, playbook=PLAYBOOK, evidence=ev)
    if m.maxmemory_policy == "noeviction":
        meaning = "with noeviction Redis refuses every write that needs memory, so producers' adds fail and jobs are lost"
        if refused_now:
            when = _onset(d, m)
            return Finding("redis.memory", "used", Severity.CRIT,
                           f"Redis is refusing writes: {refused_now:,} rejected for memory (OOM) during the sample, "
                           f"{m.used_pct:.0f}% of maxmemory ({size})", detail=f"{meaning}; {when}",
                           action=action, playbook=PLAYBOOK, evidence=ev)
        return Finding("redis.memory", "used", Severity.CRIT if m.used_pct >= th.redis_memory_crit_pct else Severity.WARN,
                       f"Redis uses {m.used_pct:.0f}% of maxmemory ({size}); at the limit it refuses writes",
                       detail=f"{meaning}; none refused during the sample", action=action, playbook=PLAYBOOK,
                       evidence=ev)
    return Finding("redis.memory", "used", Severity.CRIT if m.used_pct >= th.redis_memory_crit_pct else Severity.WARN,
                   f"Redis uses {m.used_pct:.0f}% of maxmemory ({size}); at the limit {m.maxmemory_policy} evicts "
                   f"{_at_risk(m.maxmemory_policy, systems)}",
                   detail="Evicted queue keys are lost silently: no error reaches the producer or the worker.",
                   action=action, playbook=PLAYBOOK, evidence=ev)


def _onset(d: pd.DataFrame | None, m: Any) -> str:
    if d is None:
        return "when it began is not known"
    r = d.iloc[0]
    if r.get("oom_rejected_before") == 0:
        return (f"refusals began during the sample, between {r['started_at']:%H:%M:%S} and {r['ended_at']:%H:%M:%S} "
                "UTC (none before it since the server started)")
    return (f"{int(r['oom_rejected_before']):,} had been refused before the sample began at {r['started_at']:%H:%M:%S} "
            "UTC, and refusals go on")


def _at_risk(policy: str, systems: set[str]) -> str:
    """What an eviction policy drops from the queue libraries present."""
    if policy.startswith("allkeys"):
        return "any key, queue data included: waiting jobs and job hashes can vanish"
    if policy.startswith("volatile"):
        held = [w for s, w in (("bullmq", "BullMQ job locks and stalled-check"), ("bull", "Bull job locks"),
                               ("rq", "RQ worker keys"), ("sidekiq", "Sidekiq process keys")) if s in systems]
        return "keys with a TTL" + (f": {', '.join(held)} (running jobs then look stalled or workers dead)"
                                    if held else "")
    return "keys"


def memory_fill(keyspace: Evidence | None, depths: Evidence | None) -> tuple[str, dict[str, Any]]:
    """The action that fits what fills memory, and its evidence: the largest key pattern and, where it holds a
    queue's jobs, whether they wait (they need consumers; trimming loses work) or are finished and retained (they
    need retention settings)."""
    k = _frame(keyspace)
    if k is None or k.empty:
        return ("Find what grows (memory by key pattern): waiting jobs need consumers, completed/failed sets need "
                "retention; then raise maxmemory or scale Redis"), {}
    top = k.iloc[0]
    ev = {"top_pattern": str(top.pattern), "top_pattern_bytes": int(top.bytes), "top_pattern_share_pct": top.share_pct}
    owner = _owner(str(top.pattern), _frame(depths))
    size = f"{top.bytes / MIB:,.0f} MiB, {top.share_pct:.0f}% of what was measured"
    if owner is None:
        return (f"The largest key pattern, {top.pattern} ({size}), is not queue data: find the code that writes it and "
                "expire or trim it; then raise maxmemory or scale Redis"), ev
    pending = int(owner.backlog + owner.active + owner.delayed + owner.waiting_children + owner.retry + owner.scheduled)
    finished = int(owner.completed + owner.failed + owner.dead)
    ev.update(queue=owner.queue, pending_jobs=pending, finished_jobs_retained=finished)
    if finished > pending:
        return (f"{owner.queue} keeps {finished:,} finished jobs ({owner.completed:,} completed, {owner.failed + owner.dead:,} "
                f"failed) in {top.pattern} ({size}): set {RETENTION[owner.system]}"), ev
    return (f"{owner.queue}'s {pending:,} unprocessed jobs fill {top.pattern} ({size}): they need consumers, not trimming "
            "(trimming loses work): scale the workers, then raise maxmemory to buy time"), ev


def _owner(pattern: str, depths: pd.DataFrame | None) -> Any:
    if depths is None or depths.empty:
        return None
    for q in depths.itertuples():
        prefixes = {"bullmq": (f"{q.queue}:",), "bull": (f"{q.queue}:",), "rq": ("rq:job:", f"rq:queue:{q.queue}"),
                    "sidekiq": (f"queue:{q.queue}", "dead", "retry", "schedule"),
                    "celery": (q.queue, "celery-task-meta-", "unacked")}[q.system]
        if any(_within(pattern, p) for p in prefixes):
            return q
    return None


def _within(pattern: str, prefix: str) -> bool:
    """``pattern`` is the key ``prefix`` names, one of its kombu priority lists, or under it when it ends a segment."""
    return pattern == prefix or pattern.startswith(prefix + "\x06\x16") or (prefix[-1] in ":-" and pattern.startswith(prefix))


# --------------------------------------------------------------------------- Redis clients, counters, slowlog

@rule("redis.clients", playbook=PLAYBOOK, ok="Redis connections below {th.redis_clients_warn_pct:.0f}% of maxclients")
def redis_clients(summary: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Connections near maxclients."""
    s = summary.iloc[0]
    if s.clients_pct >= th.redis_clients_warn_pct:
        sev = Severity.CRIT if s.clients_pct >= th.redis_clients_crit_pct else Severity.WARN
        yield Finding("redis.clients", "maxclients", sev,
                      f"{s.connected_clients} of {s.maxclients} Redis connections in use ({s.clients_pct:.0f}%)",
                      action="Find the client leaking connections (clients table below); lower pool sizes or raise "
                             "maxclients", playbook=PLAYBOOK,
                      evidence={"connected": int(s.connected_clients), "maxclients": int(s.maxclients)})


@rule("redis.counters", playbook=PLAYBOOK, ok="During the sample Redis rejected no connection and evicted no key")
def redis_counters(delta: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Connections rejected and keys evicted during the sample."""
    d = delta.iloc[0]
    if d.rejected_connections > 0:
        yield Finding("redis.counters", "rejected_connections", Severity.CRIT,
                      f"Redis rejected {int(d.rejected_connections)} connections during the sample",
                      action="maxclients is reached: free connections now, then raise maxclients",
                      playbook=PLAYBOOK, evidence={"rejected": int(d.rejected_connections)})
    if d.evicted_keys > 0:
        yield Finding("redis.counters", "evicted_keys", Severity.CRIT,
                      f"Redis evicted {int(d.evicted_keys)} keys during the sample",
                      detail="Evicted queue keys are lost silently: jobs, locks, worker registrations.",
                      action="Memory is full and keys are being dropped: free memory or raise maxmemory now, and set "
                             "maxmemory-policy noeviction", playbook=PLAYBOOK, evidence={"evicted": int(d.evicted_keys)})


@rule("redis.slowlog", playbook=PLAYBOOK, ok="No Redis command over {th.redis_slowlog_warn_ms:.0f} ms in the window")
def slowlog(entries: pd.DataFrame, th: Thresholds, window_start: Any = None) -> Iterable[Finding]:
    """Slow Redis commands inside the incident window."""
    df = entries
    if window_start is not None and len(df):
        df = df[df["start"] >= pd.Timestamp(window_start)]
    slow = df[df["duration_ms"] >= th.redis_slowlog_warn_ms] if len(df) else df
    if slow.empty:
        return
    worst = slow.sort_values("duration_ms", ascending=False).iloc[0]
    yield Finding("redis.slowlog", "window", Severity.WARN,
                  f"{len(slow)} Redis commands took over {th.redis_slowlog_warn_ms:.0f} ms; worst "
                  f"{worst.duration_ms:,.0f} ms: {worst.command[:80]}",
                  action="A slow command blocks every client: replace KEYS/large range reads with SCAN/bounded ranges",
                  playbook=PLAYBOOK, evidence={"count": len(slow), "worst_ms": worst.duration_ms})


# --------------------------------------------------------------------------- backlog

def _backlog_ok(depths: pd.DataFrame, *args: Any, **kwargs: Any) -> str:
    if depths.empty:
        return "No job queues found in this Redis"
    return (f"{len(depths)} queues: none waits without a live consumer, none grows or holds work nothing consumed, "
            "none has a job waiting too long")


@rule("queue.backlog", playbook=PLAYBOOK, ok=_backlog_ok)
def backlog(depths: pd.DataFrame, consumers: Evidence, drains: Evidence | None, th: Thresholds) -> Iterable[Finding]:
    """Per queue: work waiting with no live consumer (crit); a backlog nothing consumed during the sample, whatever
    liveness says (warn, crit past the age threshold), named "connected but not consuming" when consumers are live;
    a growing backlog or an old head job; a paused queue; a queue whose consumers nothing here can see (info)."""
    live = {(r.system, r.queue): r for r in consumers.itertuples()} if _frame(consumers) is not None else {}
    rates = {(r.system, r.queue): r for r in drains.itertuples()} if _frame(drains) is not None else {}
    if isinstance(drains, SourceError) and len(depths):
        yield Finding("queue.backlog", "draining", Severity.ERROR, "Whether queues drain could not be measured",
                      detail=str(drains), action="Re-run this section; check Redis from here", playbook=PLAYBOOK)
    for q in depths.itertuples():
        c, rate = live.get((q.system, q.queue)), rates.get((q.system, q.queue))
        found = _queue_backlog(q, c, rate, th, None if _frame(consumers) is not None else str(consumers))
        if found is not None:
            yield found


def _queue_backlog(q: Any, c: Any, rate: Any, th: Thresholds, consumers_error: str | None) -> Finding | None:
    verdict = c.verdict if c is not None else "unknown"
    decided = c.decided_by if c is not None else f"consumers could not be read: {consumers_error or 'not sampled'}"
    consumed = None if rate is None or rate.consumed is None or pd.isna(rate.consumed) else bool(rate.consumed)
    growing = bool(rate.growing) if rate is not None else False
    old = q.oldest_waiting_age_s if q.oldest_waiting_age_s == q.oldest_waiting_age_s else 0.0
    name, subject = f"{q.queue} ({q.system})", f"{q.system}:{q.queue}"
    ev = {"system": q.system, "backlog": int(q.backlog), "active": int(q.active), "delayed": int(q.delayed),
          "oldest_waiting_age_s": q.oldest_waiting_age_s, "verdict": verdict, "decided_by": decided,
          "supporting": c.supporting if c is not None else "", "live_workers": int(c.live_workers) if c is not None else None,
          "consumed_during_sample": consumed, "net_per_s": float(rate.net_per_s) if rate is not None else None,
          "time_to_drain_s": float(rate.time_to_drain_s) if rate is not None else None}
    detail = "; ".join(x for x in (f"Decided by: {decided}", f"Also seen: {c.supporting}" if c is not None and
                                   c.supporting else "") if x)

    def finding(sev: Severity, title: str, action: str, more: str = "") -> Finding:
        return Finding("queue.backlog", subject, sev, title, detail=f"{detail}{'; ' + more if more else ''}",
                       action=action, playbook=PLAYBOOK, evidence=ev)

    if q.backlog <= 0:
        return None
    if q.is_paused:
        return finding(Severity.WARN, f"{name} is paused with {q.backlog} jobs waiting",
                       "Resume the queue if the pause was not deliberate" +
                       ("; no live consumer would take them: start workers too" if verdict == "none" else ""))
    if verdict == "none":
        return finding(Severity.CRIT, f"{name}: {q.backlog} jobs waiting and no live consumer"
                                      f"{', backlog growing' if growing else ''}",
                       "Scale the worker horizontally: start or restart workers for this queue, then check why the old "
                       "ones died (OOM kill, crash loop, deploy)")
    sev = Severity.CRIT if old >= th.queue_oldest_crit_s else Severity.WARN
    if q.backlog >= th.queue_backlog_warn and rate is not None and consumed is not True:
        secs = f"the {rate.interval_s:.0f}s sample"
        if verdict == "alive":
            holdup = c.holdup or "nothing in Redis says why: look at what the workers wait on (a slow dependency, a " \
                                 "lock, CPU)"
            return finding(sev, f"{name}: {q.backlog} jobs waiting; consumers connected but not consuming (none "
                                f"finished during {secs})",
                           "Inspect the workers: resume a paused queue, lift a rate limit, or find the dependency the "
                           "active jobs wait on; restart workers that are stuck", more=f"What holds them: {holdup}")
        return finding(sev, f"{name}: {q.backlog} jobs waiting and none consumed during {secs}",
                       "Check that workers run for this queue and take jobs (logs, process list); scale them out")
    if growing or old >= th.queue_oldest_warn_s:
        drain = f", drains in {duration(rate.time_to_drain_s)} at the current rate" \
            if rate is not None and rate.net_per_s < 0 else ""
        return finding(sev, f"{name}: backlog {q.backlog}{' and growing' if growing else ''}, oldest waiting "
                            f"{duration(old)}{drain}",
                       "Scale the worker horizontally and inspect stuck jobs (below); if one job type dominates, look "
                       "at what slowed it")
    if verdict == "unknown":
        return finding(Severity.INFO, f"{name}: {q.backlog} jobs waiting; whether anything consumes them cannot be "
                                      "told from Redis", "Check the workers for this queue directly (process list, logs)")
    return None


# --------------------------------------------------------------------------- stuck jobs and failures

_STUCK = {
    "stalled": (Severity.CRIT, "stalled (active, lock expired: its worker died)",
                "Start a worker: its stalled checker moves these back to wait; if they keep stalling, the job "
                "outlives lockDuration or the worker is CPU-starved"),
    "abandoned": (Severity.CRIT, "abandoned by a dead RQ worker",
                  "Restart the RQ workers; StartedJobRegistry cleanup moves these to failed so they can be requeued"),
    "lost": (Severity.CRIT, "in flight on a Sidekiq process that died",
             "Sidekiq's basic fetch does not requeue these: re-enqueue them from your own records (their ids are here)"),
    "hung": (Severity.WARN, "processing far longer than usual",
             "Inspect what these jobs wait on (external API, database lock); cancel and retry them if needed"),
    "overdue_delayed": (Severity.WARN, "delayed past their due time",
                        "No worker is promoting delayed jobs: start a worker for this queue"),
    "unacked_overdue": (Severity.WARN, "delivered to a worker that never acknowledged them",
                        "Their worker died; a restarted Celery worker restores them after the visibility timeout"),
}


@rule("queue.stuck_jobs", playbook=PLAYBOOK, ok="No stalled, hung, abandoned, lost or overdue jobs")
def stuck(jobs: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Stuck jobs grouped per queue and kind, naming the job ids."""
    for (system, queue, kind), g in jobs.groupby(["system", "queue", "kind"], sort=False):
        sev, what, action = _STUCK[kind]
        ids = [str(x) for x in g["job_id"]]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        yield Finding("queue.stuck_jobs", f"{system}:{queue}:{kind}", sev, f"{len(ids)} {queue} jobs {what}: {shown}",
                      detail=f"oldest {duration(g['age_s'].max())}; {g.iloc[0]['detail']}", action=action,
                      playbook=PLAYBOOK,
                      evidence={"job_ids": ids[:50], "count": len(ids), "max_age_s": g["age_s"].max(),
                                "names": sorted({str(n) for n in g["name"] if n})[:10]})


@rule("queue.failures", playbook=PLAYBOOK, ok="No recent failed jobs")
def failures(failed: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Recent failures grouped by reason: one finding per frequent reason, the rest as information (at most 20)."""
    for r in failed.head(20).itertuples():
        sev = Severity.WARN if r.count >= th.failed_reason_warn else Severity.INFO
        yield Finding("queue.failures", f"{r.system}:{r.queue}:{r.reason[:60]}", sev,
                      f"{r.count} recent {r.queue} failures: {r.reason[:120]}",
                      action="Fix the cause before retrying them; a retry storm re-grows the backlog",
                      playbook=PLAYBOOK, evidence={"count": int(r.count), "example_job": r.example_job})


def selection(selected: Evidence, name: str) -> list[Finding]:
    """A queue named by the alert or the responder that does not exist in this Redis."""
    if isinstance(selected, SourceError) or not name:
        return []
    if len(selected):
        return [Finding("queue.selection", name, Severity.OK, f"Queue {name!r} found: the checks below cover it",
                        playbook=PLAYBOOK)]
    avail = selected.attrs.get("available", [])
    return [Finding("queue.selection", name, Severity.WARN, f"No queue called {name!r} in this Redis",
                    detail=f"queues found: {', '.join(avail[:10]) or 'none'}",
                    action="Check the queue name in the alert or the parameter; the checks below cover no queue",
                    playbook=PLAYBOOK, evidence={"available": avail[:20]})]
