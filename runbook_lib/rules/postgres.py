"""Database-pressure rules: each takes one Postgres check's evidence and returns findings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..findings import Finding, Severity, Thresholds, duration, from_source_error, ok, rule
from ..sources import Evidence, SourceError

PLAYBOOK = "Database pressure"


_secs = duration


def _query(q: Any, n: int = 80) -> str:
    text = " ".join(str(q or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _ok(check: str, title: str, **evidence: Any) -> list[Finding]:
    return ok(check, title, PLAYBOOK, **evidence)


def _err(err: SourceError, check: str) -> list[Finding]:
    return [from_source_error(err, check, PLAYBOOK)]


def connection_saturation(conns: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Client connections against max_connections minus reserved slots."""
    check = "pg.connections"
    if isinstance(conns, SourceError):
        return _err(conns, check)
    usable, in_use = conns.attrs["usable"], conns.attrs["in_use"]
    pct = 100.0 * in_use / usable if usable else 100.0
    by_state = conns.groupby("state")["sessions"].sum().sort_values(ascending=False).to_dict()
    top_apps = conns.groupby("application_name")["sessions"].sum().sort_values(ascending=False).head(5).to_dict()
    out: list[Finding] = []
    ev = {"in_use": in_use, "usable": usable, "pct": pct, "by_state": by_state, "top_applications": top_apps}
    if pct >= th.connections_warn_pct:
        sev = Severity.CRIT if pct >= th.connections_crit_pct else Severity.WARN
        idle = by_state.get("idle", 0) + by_state.get("idle in transaction", 0)
        out.append(Finding(check, "server", sev,
                           f"{in_use} of {usable} usable connections in use ({pct:.0f}%)",
                           detail=f"by state: {by_state}; top applications: {top_apps}",
                           action=("Most are idle: put a pooler (PgBouncer) in front or lower the apps' pool sizes"
                                   if idle > in_use / 2 else
                                   "Find what is holding connections (table below); limit new writes or scale vertically"),
                           playbook=PLAYBOOK, evidence=ev))
    else:
        out += _ok(check, f"Connections: {in_use} of {usable} usable in use ({pct:.0f}%)", **ev)
    hidden = conns.attrs.get("hidden_sessions", 0)
    if hidden:
        out.append(visibility_finding(hidden))
    return out


def visibility_finding(hidden: int) -> Finding:
    """Sessions whose details this role may not see ('<insufficient privilege>')."""
    return Finding("pg.privileges", "pg_read_all_stats", Severity.WARN,
                   f"{hidden} sessions are hidden from the diagnostics role (<insufficient privilege>)",
                   detail="Queries, states and waits of other roles' sessions cannot be read, so blockers may be missed.",
                   action="GRANT pg_monitor (or pg_read_all_stats) TO the diagnostics role, then re-run",
                   playbook=PLAYBOOK, evidence={"hidden_sessions": int(hidden)})


def wait_events(waits: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """What active sessions spent the sample waiting on (a Lock share means blocking)."""
    check = "pg.wait_events"
    if isinstance(waits, SourceError):
        return _err(waits, check)
    if waits.empty:
        return _ok(check, "No active sessions during the sample")
    total = float(waits["avg_sessions"].sum())
    lock = float(waits.loc[waits["wait_event_type"] == "Lock", "avg_sessions"].sum())
    top = waits.iloc[0]
    ev = {"avg_active_sessions": total, "lock_sessions": lock,
          "top": waits.head(5)[["wait_event_type", "wait_event", "avg_sessions"]]}
    if lock >= 1 and lock >= total / 2:
        return [Finding(check, "Lock", Severity.WARN,
                        f"{lock:.1f} of {total:.1f} active sessions on average were waiting on locks",
                        detail=f"top wait: {top.wait_event_type}/{top.wait_event}",
                        action="See the blocking tree below for who holds the locks", playbook=PLAYBOOK, evidence=ev)]
    return [Finding(check, f"{top.wait_event_type}", Severity.INFO,
                    f"Active sessions: {total:.1f} on average, mostly {top.wait_event_type}/{top.wait_event}",
                    playbook=PLAYBOOK, evidence=ev)]


def blocking(tree: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """One finding per root blocker: who it is, what it is doing, how many wait behind it."""
    check = "pg.blocking"
    if isinstance(tree, SourceError):
        return _err(tree, check)
    if tree.empty:
        return _ok(check, "No session is waiting on a lock")
    out: list[Finding] = []
    roots = tree[tree["depth"] == 0].sort_values("blocked_count", ascending=False)
    for r in roots.itertuples():
        chain = tree[(tree["root_pid"] == r.pid) & (tree["depth"] > 0)]
        longest = float(chain["query_age_s"].max()) if len(chain) else 0.0
        relations = sorted({str(x) for x in chain["waiting_relation"].dropna()})
        # a DDL waiting for AccessExclusiveLock with sessions behind it turns one blocker into a table outage
        ddl_queue = bool((chain["waiting_mode"] == "AccessExclusiveLock").any()) and r.blocked_count >= 2
        sev = Severity.CRIT if (r.blocked_count >= th.blocked_sessions_crit or longest >= th.blocked_wait_crit_s
                                or ddl_queue) else Severity.WARN
        who = "a prepared transaction" if r.pid == 0 else f"pid {r.pid} ({r.application_name or 'no app'}, {r.usename})"
        state = r.state or "unknown state"
        if str(state).startswith("idle in transaction"):
            doing = f"idle in transaction for {_secs(r.state_age_s)} (transaction open {_secs(r.xact_age_s)})"
            action = (f"Ask the owner of {r.application_name or 'the session'} to commit or roll back; if it cannot, "
                      f"end it: SELECT pg_terminate_backend({r.pid});")
        elif r.pid == 0:
            doing = "holding locks"
            action = "COMMIT PREPARED or ROLLBACK PREPARED the transaction (see pg_prepared_xacts)"
        else:
            doing = f"{state}, running {_secs(r.query_age_s)}: {_query(r.query)}"
            action = (f"If it is not essential, cancel it: SELECT pg_cancel_backend({r.pid}); "
                      "if migrations just ran, this may be the long-running DDL")
        on = f" on {', '.join(relations)}" if relations else ""
        out.append(Finding(
            check, f"pid:{r.pid}", sev,
            f"{who} blocks {r.blocked_count} session{'s' if r.blocked_count != 1 else ''}{on}",
            detail=f"Root blocker is {doing}. Longest wait behind it: {_secs(longest)}. Query: {_query(r.query, 200)}",
            action=action, playbook=PLAYBOOK,
            evidence={"root_pid": int(r.pid), "state": state, "application_name": r.application_name,
                      "usename": r.usename, "blocked_count": int(r.blocked_count), "xact_age_s": r.xact_age_s,
                      "longest_wait_s": longest, "relations": relations, "query": _query(r.query, 300),
                      "blocked_pids": [int(p) for p in chain["pid"]][:50]}))
    return out


def ddl_lock_queue(queue: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """A DDL waiting for (or holding) an AccessExclusiveLock, and the sessions queued behind it."""
    check = "pg.ddl_lock_queue"
    if isinstance(queue, SourceError):
        return _err(queue, check)
    if queue.empty:
        return _ok(check, "No DDL is waiting for or holding an AccessExclusiveLock")
    out: list[Finding] = []
    for relation, rows in queue.groupby("relation", sort=False):
        ddl = rows[rows["role"] == "ddl"]
        if ddl.empty:
            continue
        d = ddl.iloc[0]
        holders = rows[rows["role"] == "holder"]
        queued = rows[rows["role"] == "queued"]
        waiting = not bool(d["granted"])
        wait_s = d["wait_s"] if pd.notna(d["wait_s"]) else d["query_age_s"]
        holder_txt = ", ".join(f"pid {h.pid} ({h.application_name or '?'}, {h.state})" for h in holders.itertuples())
        if waiting:
            title = (f"DDL on {relation} (pid {d['pid']}, {d['application_name'] or '?'}) has waited {_secs(wait_s)} "
                     f"for its lock; {len(queued)} sessions queued behind it")
            detail = f"DDL: {_query(d['query'], 200)}. Held up by: {holder_txt or 'unknown'}."
            action = (f"Cancel the DDL to release the queue: SELECT pg_cancel_backend({d['pid']}); then end the holder "
                      "or re-run the migration with SET lock_timeout = '2s' and retries")
        else:
            title = (f"DDL on {relation} (pid {d['pid']}, {d['application_name'] or '?'}) holds an AccessExclusiveLock "
                     f"for {_secs(d['query_age_s'])}; {len(queued)} sessions queued behind it")
            detail = f"DDL: {_query(d['query'], 200)}. Every read and write of {relation} waits until it finishes."
            action = (f"If the migration is not close to done, cancel it: SELECT pg_cancel_backend({d['pid']}); "
                      "rewrite it to avoid a table rewrite (add column without default, CREATE INDEX CONCURRENTLY)")
        if len(queued) > 0:
            sev = Severity.CRIT
        elif waiting and float(wait_s or 0) >= th.ddl_wait_crit_s:
            sev = Severity.WARN
        else:
            sev = Severity.INFO
        out.append(Finding(check, f"relation:{relation}", sev, title, detail=detail, action=action,
                           playbook=PLAYBOOK,
                           evidence={"relation": relation, "ddl_pid": int(d["pid"]), "ddl_query": _query(d["query"], 300),
                                     "ddl_waiting": waiting, "wait_s": wait_s,
                                     "holder_pids": [int(p) for p in holders["pid"].dropna()],
                                     "queued_pids": [int(p) for p in queued["pid"].dropna()][:50],
                                     "queued": int(len(queued))}))
    return out or _ok(check, "No DDL is waiting for or holding an AccessExclusiveLock")


def ddl_progress(progress: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Index builds and CLUSTER/VACUUM FULL in flight (information for the DDL question)."""
    check = "pg.ddl_progress"
    if isinstance(progress, SourceError):
        return _err(progress, check)
    out = []
    for r in progress.itertuples():
        pct = f"{100 * r.done / r.total:.0f}%" if r.total else "?"
        waiting = f"; waiting for pid {int(r.waiting_for_pid)}" if pd.notna(r.waiting_for_pid) else ""
        out.append(Finding(check, f"pid:{r.pid}", Severity.INFO,
                           f"{r.command} on {r.relation} in phase '{r.phase}' ({pct}, {_secs(r.running_s)}){waiting}",
                           action="Let it finish unless it blocks others; cancelling a CONCURRENTLY build leaves an "
                                  "invalid index to drop", playbook=PLAYBOOK,
                           evidence={"pid": int(r.pid), "relation": r.relation, "phase": r.phase}))
    return out or _ok(check, "No index build or CLUSTER in progress")


@rule("pg.idle_in_transaction", playbook=PLAYBOOK,
      ok=lambda sessions, th, *a: f"No session idle in a transaction past {_secs(th.idle_in_transaction_warn_s)}"
                                  f" ({len(sessions)} briefly idle)")
def idle_in_transaction(sessions: pd.DataFrame, th: Thresholds, tree: Evidence | None = None) -> Iterable[Finding]:
    """Sessions idle inside a transaction: long ones, and any that block others."""
    check = "pg.idle_in_transaction"
    blocking_counts: dict[int, int] = {}
    if isinstance(tree, pd.DataFrame) and not tree.empty:
        blocking_counts = {int(r.pid): int(r.blocked_count) for r in tree.itertuples() if r.blocked_count}
    for r in sessions.itertuples():
        blocked = blocking_counts.get(int(r.pid), 0)
        if blocked:
            sev = Severity.CRIT
        elif r.idle_s >= th.idle_in_transaction_crit_s:
            sev = Severity.CRIT
        elif r.idle_s >= th.idle_in_transaction_warn_s:
            sev = Severity.WARN
        else:
            continue
        also = f", blocking {blocked} sessions" if blocked else ""
        yield (Finding(check, f"pid:{r.pid}", sev,
                           f"pid {r.pid} ({r.application_name or 'no app'}, {r.usename}) idle in transaction "
                           f"for {_secs(r.idle_s)}{also}",
                           detail=f"Transaction open {_secs(r.xact_age_s)}, holds {r.locks_held} locks"
                                  f"{' on ' + r.relations if r.relations else ''}. Last statement: {_query(r.last_query, 200)}",
                           action=f"Have the application commit or roll back; otherwise SELECT pg_terminate_backend({r.pid}); "
                                  "and set idle_in_transaction_session_timeout for that role",
                           playbook=PLAYBOOK,
                           evidence={"pid": int(r.pid), "application_name": r.application_name, "idle_s": r.idle_s,
                                     "xact_age_s": r.xact_age_s, "locks_held": int(r.locks_held),
                                     "relations": r.relations, "blocking": blocked}))


@rule("pg.long_query", playbook=PLAYBOOK, ok=lambda q, th: f"No statement running longer than {_secs(th.long_query_warn_s)}")
def long_running_queries(queries: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Statements active past the thresholds (lock waits are reported by the blocking rule)."""
    check = "pg.long_query"
    for r in queries.itertuples():
        if r.wait_event_type == "Lock" or r.query_age_s < th.long_query_warn_s:
            continue
        sev = Severity.CRIT if r.query_age_s >= th.long_query_crit_s else Severity.WARN
        yield (Finding(check, f"pid:{r.pid}", sev,
                           f"pid {r.pid} ({r.application_name or 'no app'}) has run one statement for {_secs(r.query_age_s)}",
                           detail=_query(r.query, 300),
                           action=f"If it is not expected, SELECT pg_cancel_backend({r.pid}); look at its plan (EXPLAIN) "
                                  "before re-running", playbook=PLAYBOOK,
                           evidence={"pid": int(r.pid), "query_age_s": r.query_age_s, "wait": f"{r.wait_event_type}/{r.wait_event}",
                                     "query": _query(r.query, 300)}))


@rule("pg.long_transaction", playbook=PLAYBOOK,
      ok=lambda t, th: f"No transaction open longer than {_secs(th.long_transaction_warn_s)}")
def long_transactions(txns: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Transactions open past the thresholds (they hold locks and the xmin horizon)."""
    check = "pg.long_transaction"
    for r in txns.itertuples():
        if r.xact_age_s < th.long_transaction_warn_s:
            continue
        sev = Severity.CRIT if r.xact_age_s >= th.long_transaction_crit_s else Severity.WARN
        yield (Finding(check, f"pid:{r.pid}", sev,
                           f"pid {r.pid} ({r.application_name or 'no app'}) has kept a transaction open for "
                           f"{_secs(r.xact_age_s)} ({r.state})",
                           detail=_query(r.query, 300),
                           action="End the transaction (commit, roll back, or pg_terminate_backend) so vacuum and DDL can proceed",
                           playbook=PLAYBOOK, evidence={"pid": int(r.pid), "xact_age_s": r.xact_age_s, "state": r.state}))


@rule("pg.xmin_horizon", playbook=PLAYBOOK, ok="Nothing holds the xmin horizon back unusually")
def xmin_horizon(holders: pd.DataFrame, th: Thresholds) -> Iterable[Finding]:
    """Backends, slots and prepared transactions holding the xmin horizon back."""
    check = "pg.xmin_horizon"
    for r in holders.itertuples():
        age = int(r.xmin_age or 0)
        stale_prepared = r.holder_kind == "prepared_xact" and (r.held_s or 0) >= th.long_transaction_warn_s
        inactive_slot = r.holder_kind == "replication_slot" and r.detail == "inactive"
        if age < th.xmin_age_warn and not stale_prepared and not (inactive_slot and age >= th.xmin_age_warn / 10):
            continue
        sev = Severity.CRIT if age >= th.xmin_age_crit else Severity.WARN
        fix = {"backend": f"end the transaction of pid {r.holder}",
               "replication_slot": f"drop or re-attach slot {r.holder} (SELECT pg_drop_replication_slot('{r.holder}'))",
               "prepared_xact": f"COMMIT PREPARED or ROLLBACK PREPARED '{r.holder}'"}[r.holder_kind]
        yield (Finding(check, f"{r.holder_kind}:{r.holder}", sev,
                           f"{r.holder_kind.replace('_', ' ')} {r.holder} holds the xmin horizon back by {age:,} transactions",
                           detail="Vacuum cannot remove rows newer than this horizon; tables bloat and wraparound nears.",
                           action=fix, playbook=PLAYBOOK,
                           evidence={"holder_kind": r.holder_kind, "holder": r.holder, "xmin_age": age, "held_s": r.held_s}))


def slow_statements(delta: pd.DataFrame | SourceError, th: Thresholds, limit: int = 5) -> list[Finding]:
    """Statements whose mean time during the sample interval passed the threshold, and the top consumer."""
    check = "pg.slow_statement"
    if isinstance(delta, SourceError):
        return _err(delta, check)
    if delta.empty:
        return _ok(check, "No statement completed during the sample interval")
    total = float(delta["total_ms"].sum()) or 1.0
    slow = delta[delta["mean_ms"] >= th.slow_statement_mean_ms].sort_values("total_ms", ascending=False).head(limit)
    out = []
    for r in slow.itertuples():
        sev = Severity.CRIT if r.mean_ms >= th.slow_statement_crit_mean_ms else Severity.WARN
        out.append(Finding(check, f"queryid:{r.queryid}", sev,
                           f"Slow statement: {r.mean_ms:,.0f} ms per call, {int(r.calls)} calls in the interval "
                           f"({100 * r.total_ms / total:.0f}% of statement time)",
                           detail=_query(r.query, 300),
                           action="EXPLAIN (ANALYZE, BUFFERS) it on a replica; add the missing index or rate-limit its caller",
                           playbook=PLAYBOOK,
                           evidence={"queryid": int(r.queryid), "calls": int(r.calls), "mean_ms": r.mean_ms,
                                     "total_ms": r.total_ms, "rows": r.rows, "user": r.usename, "database": r.datname,
                                     "query": _query(r.query, 300)}))
    if out:
        return out
    top = delta.iloc[0]
    return [Finding(check, "all", Severity.OK,
                    f"No statement averaged over {th.slow_statement_mean_ms:,.0f} ms; top by time: "
                    f"{_query(top['query'], 60)} ({top['mean_ms']:,.1f} ms mean)", playbook=PLAYBOOK,
                    evidence={"top_queryid": int(top["queryid"]), "top_mean_ms": top["mean_ms"]})]


def statements_visibility(stats: pd.DataFrame | SourceError) -> list[Finding]:
    """pg_stat_statements missing, or its texts hidden from this role: a finding that says how to fix it."""
    check = "pg.statements"
    if isinstance(stats, SourceError):
        return _err(stats, check)
    hidden = int(stats.attrs.get("hidden", 0))
    if hidden:  # its own check: pg.privileges belongs to the connections cell, whose re-run replaces it
        return [Finding(check, "hidden_texts", Severity.WARN,
                        f"{hidden} statements' texts are hidden from the diagnostics role (<insufficient privilege>)",
                        detail="Slow statements of other roles cannot be named, only counted.",
                        action="GRANT pg_monitor (or pg_read_all_stats) TO the diagnostics role, then re-run",
                        playbook=PLAYBOOK, evidence={"hidden_statements": hidden})]
    return []


def replication(lag: pd.DataFrame | SourceError, slots: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Standby replay lag, and slots that retain too much WAL or sit inactive."""
    out: list[Finding] = []
    if isinstance(lag, SourceError):
        out += _err(lag, "pg.replication_lag")
    else:
        for r in lag.itertuples():
            secs = r.replay_lag_s if pd.notna(r.replay_lag_s) else 0.0
            if r.state == "replay paused" and (r.replay_lag_bytes or 0) > 0:
                out.append(Finding("pg.replication_lag", f"standby:{r.application_name}", Severity.WARN,
                                   f"WAL replay is paused with {int(r.replay_lag_bytes):,} bytes waiting",
                                   action="Resume it if nobody paused it on purpose: SELECT pg_wal_replay_resume();",
                                   playbook=PLAYBOOK, evidence={"replay_lag_s": secs, "bytes": r.replay_lag_bytes}))
            elif secs >= th.replication_lag_warn_s:
                sev = Severity.CRIT if secs >= th.replication_lag_crit_s else Severity.WARN
                out.append(Finding("pg.replication_lag", f"standby:{r.application_name}", sev,
                                   f"Standby {r.application_name} replays {_secs(secs)} behind",
                                   action="Check the standby's I/O and network; long queries on it cause replay conflicts",
                                   playbook=PLAYBOOK, evidence={"replay_lag_s": secs, "bytes": r.replay_lag_bytes}))
    if isinstance(slots, SourceError):
        out += _err(slots, "pg.replication_slots")
    else:
        for r in slots.itertuples():
            retained = int(r.retained_bytes or 0)
            if retained >= th.slot_retained_warn_bytes or (not r.active and retained >= th.slot_retained_warn_bytes / 16):
                sev = Severity.CRIT if retained >= th.slot_retained_crit_bytes or r.wal_status == "lost" else Severity.WARN
                out.append(Finding("pg.replication_slots", f"slot:{r.slot_name}", sev,
                                   f"Replication slot {r.slot_name} ({'active' if r.active else 'inactive'}) retains "
                                   f"{retained / (1 << 20):,.0f} MiB of WAL",
                                   action=f"Reconnect its consumer or drop it: SELECT pg_drop_replication_slot('{r.slot_name}')",
                                   playbook=PLAYBOOK, evidence={"retained_bytes": retained, "active": bool(r.active),
                                                                "wal_status": r.wal_status}))
    return out or _ok("pg.replication", "Replication: no lagging standby or WAL-retaining slot")


def vacuum(activity: pd.DataFrame | SourceError, wrap: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Long or anti-wraparound vacuums, and databases/tables (TOAST included) nearing xid wraparound."""
    out: list[Finding] = []
    if isinstance(activity, SourceError):
        out += _err(activity, "pg.autovacuum")
    else:
        for r in activity.itertuples():
            long = (r.running_s or 0) >= th.vacuum_running_warn_s
            if r.anti_wraparound or long:
                out.append(Finding("pg.autovacuum", f"relation:{r.relation}",
                                   Severity.WARN if long else Severity.INFO,
                                   f"{'Anti-wraparound ' if r.anti_wraparound else ''}vacuum of {r.relation} running "
                                   f"{_secs(r.running_s)} (phase {r.phase})",
                                   detail="An anti-wraparound autovacuum does not yield its lock to DDL.",
                                   action="Let it finish; if DDL is queued behind it, postpone the migration",
                                   playbook=PLAYBOOK, evidence={"pid": int(r.pid), "relation": r.relation}))
    if isinstance(wrap, SourceError):
        out += _err(wrap, "pg.wraparound")
    else:
        freeze_max = wrap.attrs.get("autovacuum_freeze_max_age", 200_000_000)
        for r in wrap.itertuples():
            if r.pct_to_wraparound >= th.wraparound_warn_pct or r.xid_age >= 2 * freeze_max:
                sev = Severity.CRIT if r.pct_to_wraparound >= th.wraparound_crit_pct else Severity.WARN
                part = " (its TOAST table is the oldest part)" if r.oldest_part == "toast" else ""
                out.append(Finding("pg.wraparound", f"{r.scope}:{r.name}", sev,
                                   f"{r.scope} {r.name}{part} is at {r.pct_to_wraparound:.0f}% of transaction-ID "
                                   f"wraparound (age {int(r.xid_age):,})",
                                   action=f"VACUUM (FREEZE, VERBOSE) {r.name} off-peak; end what holds the xmin horizon",
                                   playbook=PLAYBOOK, evidence={"xid_age": int(r.xid_age), "scope": r.scope}))
    return out or _ok("pg.vacuum", "Vacuum: no long or anti-wraparound vacuum, no wraparound risk")


def counters(delta: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Cache-hit ratio, temp files and deadlocks over the sample interval, per database."""
    check = "pg.counters"
    if isinstance(delta, SourceError):
        return _err(delta, check)
    out = []
    for r in delta.itertuples():
        if r.deadlocks >= th.deadlocks_warn:
            out.append(Finding("pg.deadlocks", f"db:{r.datname}", Severity.WARN,
                               f"{int(r.deadlocks)} deadlock(s) in {r.datname} during the interval",
                               action="Find the pair in the server log (log_lock_waits); make both paths lock rows in the same order",
                               playbook=PLAYBOOK, evidence={"deadlocks": int(r.deadlocks)}))
        if r.temp_bytes >= th.temp_bytes_warn:
            out.append(Finding("pg.temp_files", f"db:{r.datname}", Severity.WARN,
                               f"{r.temp_bytes / (1 << 20):,.0f} MiB of temp files written in {r.datname} during the interval",
                               action="Sorts/hashes spill to disk: find them in top statements (temp_blks_written); "
                                      "raise work_mem for that role or add an index",
                               playbook=PLAYBOOK, evidence={"temp_files": int(r.temp_files), "temp_bytes": int(r.temp_bytes)}))
        blocks = r.blks_hit + r.blks_read
        if blocks >= th.cache_min_blocks and pd.notna(r.cache_hit_ratio) and r.cache_hit_ratio < th.cache_hit_warn_ratio:
            out.append(Finding("pg.cache_hit", f"db:{r.datname}", Severity.WARN,
                               f"Cache hit ratio in {r.datname} was {100 * r.cache_hit_ratio:.1f}% during the interval",
                               action="Working set exceeds memory: find the scanning statement, or scale vertically",
                               playbook=PLAYBOOK, evidence={"cache_hit_ratio": r.cache_hit_ratio, "blocks": int(blocks)}))
    return out or _ok(check, "No deadlocks, temp-file spill or cache misses of note during the interval")


def invalid_indexes(indexes: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Invalid indexes: a failed CREATE INDEX CONCURRENTLY leaves one that costs writes and serves no reads."""
    check = "pg.invalid_index"
    if isinstance(indexes, SourceError):
        return _err(indexes, check)
    out = []
    for r in indexes.itertuples():
        if r.build_in_progress:
            continue
        out.append(Finding(check, f"index:{r.schema}.{r.index}", Severity.WARN,
                           f"Index {r.schema}.{r.index} on {r.table} is invalid",
                           action=f"DROP INDEX CONCURRENTLY {r.schema}.{r.index}; then rebuild it with CREATE INDEX CONCURRENTLY",
                           playbook=PLAYBOOK, evidence={"index": f"{r.schema}.{r.index}", "table": r.table,
                                                        "size_bytes": r.size_bytes}))
    return out or _ok(check, "No invalid indexes")


def sequences(seqs: pd.DataFrame | SourceError, th: Thresholds) -> list[Finding]:
    """Sequences close to the maximum of their type or of the column they feed."""
    check = "pg.sequence"
    if isinstance(seqs, SourceError):
        return _err(seqs, check)
    out = []
    for r in seqs.itertuples():
        if pd.isna(r.used_pct) or r.used_pct < th.sequence_warn_pct:
            continue
        sev = Severity.CRIT if r.used_pct >= th.sequence_crit_pct else Severity.WARN
        out.append(Finding(check, f"sequence:{r.schema}.{r.sequence}", sev,
                           f"Sequence {r.schema}.{r.sequence} has used {r.used_pct:.1f}% of its range"
                           f"{' (column ' + str(r.table) + '.' + str(r.column_name) + ' is ' + str(r.column_type) + ')' if r.table else ''}",
                           action=f"ALTER TABLE {r.table} ALTER COLUMN {r.column_name} TYPE bigint (plan it: it rewrites the table)"
                           if r.table else "Widen the sequence type", playbook=PLAYBOOK,
                           evidence={"last_value": r.last_value, "max": r.effective_max, "used_pct": r.used_pct}))
    unread = int(seqs["last_value"].isna().sum()) if len(seqs) else 0
    if not out:
        extra = f" ({unread} not read: locked or no SELECT privilege)" if unread else ""
        return _ok(check, f"No sequence past {th.sequence_warn_pct:.0f}% of its range{extra}")
    return out
