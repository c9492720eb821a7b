"""Rules are pure functions of frames: each tested at its threshold edges (below, at, above) on hand-built frames.

The frames carry exactly the columns the sources return (their column lists are imported, not retyped); what only a
server can show (the SQL, a library's own data, a lock) is tested against real servers elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pytest

from runbook_lib.findings import Finding, Severity, Thresholds, rule
from runbook_lib.rules import postgres as pg_rules
from runbook_lib.rules import queues as q_rules
from runbook_lib.sources import SourceError
from runbook_lib.sources.queues import CONSUMER_COLUMNS, DEPTH_COLUMNS, DRAIN_COLUMNS, STUCK_COLUMNS

TH = Thresholds()
NAN = float("nan")


def by_subject(findings: list[Finding]) -> dict[str, Finding]:
    return {f.subject: f for f in findings}


# --------------------------------------------------------------------------- the rule decorator

def test_rule_turns_a_source_error_into_an_error_finding_and_silence_into_one_ok():
    @rule("demo.check", playbook="Queue backlog", ok="Nothing over {th.queue_backlog_warn} in {n} rows")
    def demo(df: pd.DataFrame, th: Thresholds):
        for r in df.itertuples():
            if r.x > th.queue_backlog_warn:
                yield Finding("demo.check", f"row:{r.Index}", Severity.WARN, f"x is {r.x}")

    [err] = demo(SourceError("redis", "info", "timeout", "read timed out", hint="retry"), TH)
    assert (err.check, err.severity, err.playbook) == ("demo.check", Severity.ERROR, "Queue backlog")
    assert "timed out" in err.title and err.action == "retry"
    [ok] = demo(pd.DataFrame({"x": [1, 100]}), TH)
    assert (ok.severity, ok.subject, ok.title) == (Severity.OK, "all", "Nothing over 100 in 2 rows")
    [warn] = demo(pd.DataFrame({"x": [1, 101]}), TH)
    assert warn.severity is Severity.WARN and warn.subject == "row:1"
    assert demo.check == "demo.check"


# --------------------------------------------------------------------------- queue backlog

def depths(**over: Any) -> pd.DataFrame:
    row = {c: 0 for c in DEPTH_COLUMNS}
    row.update(system="bullmq", queue="bull:emails", is_paused=False, oldest_waiting_age_s=0.0, created_total=None,
               finished_total=None)
    row.update(over)
    row["backlog"] = over.get("backlog", row["waiting"])
    return pd.DataFrame([row], columns=DEPTH_COLUMNS)


def consumers(verdict: str, holdup: str = "") -> pd.DataFrame:
    return pd.DataFrame([{"system": "bullmq", "queue": "bull:emails", "verdict": verdict, "alive": verdict == "alive",
                          "live_workers": int(verdict == "alive"), "stale_workers": 0, "blocked_clients": 0,
                          "decided_by": f"evidence for {verdict}", "supporting": "", "holdup": holdup}],
                        columns=CONSUMER_COLUMNS)


def drains(backlog: int, consumed: bool | None, net_per_s: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame([{"system": "bullmq", "queue": "bull:emails", "backlog": backlog, "interval_s": 10.0,
                          "net_per_s": net_per_s, "arrivals_per_s": NAN, "finished": None, "completions_per_s": NAN,
                          "time_to_drain_s": backlog / -net_per_s if net_per_s < 0 else float("inf"),
                          "growing": net_per_s > 0, "consumed": consumed}], columns=DRAIN_COLUMNS)


W, C = TH.queue_backlog_warn, TH.queue_oldest_crit_s
BACKLOG_CASES = [
    # id, backlog, oldest age, verdict, consumed, net/s, paused, severity, words in the title
    ("empty queue, dead consumer", 0, 0.0, "none", False, 0.0, False, Severity.OK, "none waits without"),
    ("one job, no consumer", 1, 0.0, "none", False, 0.0, False, Severity.CRIT, "1 jobs waiting and no live consumer"),
    ("below threshold, alive, idle", W - 1, 0.0, "alive", False, 0.0, False, Severity.OK, "none waits"),
    ("at threshold, alive, nothing consumed", W, 0.0, "alive", False, 0.0, False, Severity.WARN,
     "consumers connected but not consuming"),
    ("above threshold, alive, nothing consumed", W + 1, 0.0, "alive", False, 0.0, False, Severity.WARN,
     "connected but not consuming"),
    ("at threshold, consumed", W, 0.0, "alive", True, -1.0, False, Severity.OK, "none waits"),
    ("at threshold, unknown liveness, nothing consumed", W, 0.0, "unknown", None, 0.0, False, Severity.WARN,
     "none consumed during the 10s sample"),
    ("not consuming, oldest just under crit", W, C - 1, "alive", False, 0.0, False, Severity.WARN, "not consuming"),
    ("not consuming, oldest at crit", W, C, "alive", False, 0.0, False, Severity.CRIT, "not consuming"),
    ("small backlog, oldest under warn", 5, TH.queue_oldest_warn_s - 1, "alive", True, 0.0, False, Severity.OK, "none"),
    ("small backlog, oldest at warn", 5, TH.queue_oldest_warn_s, "alive", True, 0.0, False, Severity.WARN,
     "oldest waiting 5m"),
    ("small backlog, oldest at crit", 5, C, "alive", True, 0.0, False, Severity.CRIT, "oldest waiting 30m"),
    ("growing though consumed", 5, 0.0, "alive", True, 2.0, False, Severity.WARN, "and growing"),
    ("paused", 5, 0.0, "alive", False, 0.0, True, Severity.WARN, "is paused with 5 jobs waiting"),
    ("unknown liveness, small backlog", 5, 0.0, "unknown", None, 0.0, False, Severity.INFO, "cannot be told"),
]


@pytest.mark.parametrize("case", BACKLOG_CASES, ids=[c[0] for c in BACKLOG_CASES])
def test_backlog_at_its_edges(case):
    _, backlog, age, verdict, consumed, net, paused, severity, words = case
    [f] = q_rules.backlog(depths(waiting=backlog, oldest_waiting_age_s=age, is_paused=paused), consumers(verdict),
                          drains(backlog, consumed, net), TH)
    assert f.severity is severity and words in f.title, f.title
    if severity is not Severity.OK:
        assert f.subject == "bullmq:bull:emails" and f"Decided by: evidence for {verdict}" in f.detail
        assert f.evidence["verdict"] == verdict and f.evidence["backlog"] == backlog


def test_not_consuming_names_what_holds_connected_consumers():
    [f] = q_rules.backlog(depths(waiting=W), consumers("alive", holdup="the rate limiter is engaged for another 4.0s"),
                          drains(W, False), TH)
    assert "What holds them: the rate limiter is engaged" in f.detail


def test_backlog_with_unreadable_consumers_or_draining_claims_nothing():
    err = SourceError("redis", "observe", "timeout", "read timed out")
    fs = q_rules.backlog(depths(waiting=5), err, err, TH)
    assert [f.severity for f in fs] == [Severity.ERROR, Severity.INFO]
    assert "could not be measured" in fs[0].title and "consumers could not be read" in fs[1].detail
    assert not [f for f in fs if f.severity is Severity.OK]


def test_backlog_source_error_and_no_queues():
    [e] = q_rules.backlog(SourceError("redis", "queue_depths", "unreachable", "refused"), None, None, TH)
    assert e.severity is Severity.ERROR
    [ok] = q_rules.backlog(depths().iloc[0:0], consumers("none").iloc[0:0], None, TH)
    assert ok.severity is Severity.OK and ok.title == "No job queues found in this Redis"


# --------------------------------------------------------------------------- Redis memory

def memory(used_pct: float, policy: str = "noeviction", oom_total: int | None = 0, limit_kind: str = "maxmemory",
           fragmentation: float = 1.0) -> pd.DataFrame:
    limit = 100 << 20
    return pd.DataFrame([{"used_bytes": int(limit * used_pct / 100), "peak_bytes": 0, "rss_bytes": 200 << 20,
                          "limit_bytes": limit, "limit_kind": limit_kind, "used_pct": used_pct,
                          "maxmemory_policy": policy, "fragmentation_ratio": fragmentation, "evicted_keys_total": 0,
                          "latest_fork_usec": 0, "rdb_last_save_age_s": NAN, "rdb_changes_since_last_save": 0,
                          "aof_enabled": False, "redis_version": "7.0.15", "oom_rejected_total": oom_total}])


def delta(oom: int | None, before: int | None = 0) -> pd.DataFrame:
    t0 = datetime(2026, 11, 30, 3, 0, 0, tzinfo=timezone.utc)
    return pd.DataFrame([{"interval_s": 10.0, "evicted_keys": 0, "rejected_connections": 0, "oom_rejected": oom,
                          "oom_rejected_before": before, "started_at": t0, "ended_at": t0.replace(second=10)}])


QUEUES = pd.DataFrame([{"system": "bullmq", "queue": "bull:emails", "base": "bull:emails"}])
MEMORY_CASES = [
    # id, used %, policy, OOM total, OOM during the sample, expected {subject: severity}, words in "used" title
    ("below warn", TH.redis_memory_warn_pct - 0.1, "noeviction", 0, 0, {"all": Severity.OK}, ""),
    ("at warn", TH.redis_memory_warn_pct, "noeviction", 0, 0, {"used": Severity.WARN}, "at the limit it refuses writes"),
    ("just under crit", TH.redis_memory_crit_pct - 0.1, "noeviction", 0, 0, {"used": Severity.WARN}, "refuses writes"),
    ("at crit", TH.redis_memory_crit_pct, "noeviction", 0, 0, {"used": Severity.CRIT}, "refuses writes"),
    ("refusing now", 99.0, "noeviction", 40, 12, {"used": Severity.CRIT}, "Redis is refusing writes: 12 rejected"),
    ("refused now though below warn", 50.0, "noeviction", 12, 12, {"used": Severity.CRIT}, "refusing writes"),
    ("refused before only", 50.0, "noeviction", 7, 0, {"rejected_writes": Severity.INFO}, ""),
    ("evicting policy, low memory", 10.0, "allkeys-lru", 0, 0, {"policy": Severity.WARN}, ""),
    ("evicting policy, near the limit", 85.0, "allkeys-lru", 0, 0, {"used": Severity.WARN, "policy": Severity.CRIT},
     "allkeys-lru evicts any key, queue data included"),
    ("volatile policy names locks", 95.0, "volatile-lru", 0, 0, {"used": Severity.CRIT, "policy": Severity.CRIT},
     "BullMQ job locks and stalled-check"),
]


@pytest.mark.parametrize("case", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_redis_memory_at_its_edges(case):
    _, pct, policy, total, now, expected, words = case
    found = by_subject(q_rules.redis_memory(memory(pct, policy, total), TH, QUEUES, delta(now, total - now)))
    assert {k: f.severity for k, f in found.items()} == expected
    if words:
        assert words in found["used"].title


def test_refusals_that_began_during_the_sample_say_when():
    [f] = q_rules.redis_memory(memory(99.0, oom_total=5), TH, QUEUES, delta(5, before=0))
    assert "refusals began during the sample, between 03:00:00 and 03:00:10 UTC" in f.detail
    [g] = q_rules.redis_memory(memory(99.0, oom_total=9), TH, QUEUES, delta(4, before=5))
    assert "5 had been refused before the sample began at 03:00:00 UTC" in g.detail


def test_memory_ok_claims_only_what_the_server_reports():
    [ok] = q_rules.redis_memory(memory(10.0, oom_total=None), TH)
    assert ok.severity is Severity.OK and "refused writes not reported by this server" in ok.title
    [ok] = q_rules.redis_memory(memory(10.0, oom_total=0), TH)
    assert "no write refused since the server started" in ok.title


def keyspace(pattern: str, mib: float) -> pd.DataFrame:
    return pd.DataFrame([{"pattern": pattern, "type": "hash", "keys": 1000, "sampled": 200, "mean_bytes": 1.0,
                          "bytes": int(mib * (1 << 20)), "exact": False, "share_pct": 80.0}])


FILL_CASES = [
    ("waiting jobs", depths(waiting=900, completed=100), "bull:emails:*", "need consumers, not trimming"),
    ("retained finished jobs", depths(waiting=100, completed=700, failed=200), "bull:emails:*",
     "keeps 900 finished jobs (700 completed, 200 failed)"),
    ("someone else's keys", depths(waiting=900), "session:*", "is not queue data"),
]


@pytest.mark.parametrize("case", FILL_CASES, ids=[c[0] for c in FILL_CASES])
def test_memory_action_fits_what_fills_it(case):
    _, d, pattern, words = case
    action, _ = q_rules.memory_fill(keyspace(pattern, 80), d)
    assert words in action
    [used] = q_rules.redis_memory(memory(95.0), TH, QUEUES, delta(0), d, keyspace(pattern, 80))
    assert used.action == action


# --------------------------------------------------------------------------- clients, counters, slowlog, stuck, failures

@pytest.mark.parametrize("pct,severity", [(TH.redis_clients_warn_pct - 0.1, Severity.OK),
                                          (TH.redis_clients_warn_pct, Severity.WARN),
                                          (TH.redis_clients_crit_pct - 0.1, Severity.WARN),
                                          (TH.redis_clients_crit_pct, Severity.CRIT)])
def test_redis_clients_at_edges(pct, severity):
    summary = pd.DataFrame([{"connected_clients": int(pct * 10), "blocked_clients": 0, "maxclients": 1000,
                             "clients_pct": pct, "rejected_connections_total": 0, "instantaneous_ops_per_sec": 0}])
    [f] = q_rules.redis_clients(summary, TH)
    assert f.severity is severity


@pytest.mark.parametrize("ms,severity", [(TH.redis_slowlog_warn_ms - 0.1, Severity.OK),
                                         (TH.redis_slowlog_warn_ms, Severity.WARN)])
def test_slowlog_at_edges(ms, severity):
    entries = pd.DataFrame([{"id": 1, "start": pd.Timestamp.now(tz="UTC"), "duration_ms": ms, "command": "KEYS *",
                             "client_name": ""}])
    [f] = q_rules.slowlog(entries, TH)
    assert f.severity is severity


@pytest.mark.parametrize("kind,severity", [("stalled", Severity.CRIT), ("abandoned", Severity.CRIT),
                                           ("lost", Severity.CRIT), ("hung", Severity.WARN),
                                           ("overdue_delayed", Severity.WARN), ("unacked_overdue", Severity.WARN)])
def test_stuck_kinds(kind, severity):
    jobs = pd.DataFrame([{"system": "bullmq", "queue": "bull:emails", "job_id": str(i), "kind": kind, "age_s": 10.0 + i,
                          "name": "send", "detail": "why"} for i in range(12)], columns=STUCK_COLUMNS)
    [f] = q_rules.stuck(jobs, TH)
    assert f.severity is severity and f.title.startswith("12 bull:emails jobs") and "and 2 more" in f.title
    assert f.evidence["count"] == 12


@pytest.mark.parametrize("count,severity", [(TH.failed_reason_warn - 1, Severity.INFO),
                                            (TH.failed_reason_warn, Severity.WARN)])
def test_failures_at_edges(count, severity):
    failed = pd.DataFrame([{"system": "rq", "queue": "reports", "reason": "ValueError: bad", "count": count,
                            "last_failed_at": pd.Timestamp.now(tz="UTC"), "example_job": "j1"}])
    [f] = q_rules.failures(failed, TH)
    assert f.severity is severity and f"{count} recent reports failures" in f.title


# --------------------------------------------------------------------------- Postgres

def connections(in_use: int, usable: int = 100) -> pd.DataFrame:
    df = pd.DataFrame([{"state": "active", "application_name": "app", "usename": "app", "datname": "app",
                        "sessions": in_use, "max_state_age_s": 1.0, "hidden": 0}])
    df.attrs.update(max_connections=usable + 3, reserved=3, usable=usable, in_use=in_use, own_sessions=1,
                    hidden_sessions=0)
    return df


@pytest.mark.parametrize("in_use,severity", [(74, Severity.OK), (75, Severity.WARN), (89, Severity.WARN),
                                             (90, Severity.CRIT)])
def test_connection_saturation_at_edges(in_use, severity):
    [f] = pg_rules.connection_saturation(connections(in_use), TH)
    assert f.severity is severity and f"{in_use}" in f.title


def idle(seconds: float) -> pd.DataFrame:
    return pd.DataFrame([{"pid": 42, "usename": "app", "datname": "app", "application_name": "api",
                          "client_addr": None, "state": "idle in transaction", "xact_age_s": seconds,
                          "idle_s": seconds, "backend_xid": None, "xmin_age": None, "locks_held": 1,
                          "relations": "orders", "last_query": "UPDATE orders SET x = 1"}])


@pytest.mark.parametrize("seconds,severity", [(TH.idle_in_transaction_warn_s - 1, Severity.OK),
                                              (TH.idle_in_transaction_warn_s, Severity.WARN),
                                              (TH.idle_in_transaction_crit_s - 1, Severity.WARN),
                                              (TH.idle_in_transaction_crit_s, Severity.CRIT)])
def test_idle_in_transaction_at_edges(seconds, severity):
    [f] = pg_rules.idle_in_transaction(idle(seconds), TH)
    assert f.severity is severity


def test_idle_in_transaction_blocking_others_is_critical_at_any_age():
    tree = pd.DataFrame([{"pid": 42, "blocked_count": 3}])
    [f] = pg_rules.idle_in_transaction(idle(1.0), TH, tree)
    assert f.severity is Severity.CRIT and "blocking 3 sessions" in f.title


@pytest.mark.parametrize("seconds,severity", [(TH.long_query_warn_s - 1, Severity.OK),
                                              (TH.long_query_warn_s, Severity.WARN),
                                              (TH.long_query_crit_s - 1, Severity.WARN),
                                              (TH.long_query_crit_s, Severity.CRIT)])
def test_long_query_at_edges(seconds, severity):
    q = pd.DataFrame([{"pid": 7, "usename": "app", "datname": "app", "application_name": "report",
                       "query_age_s": seconds, "xact_age_s": seconds, "wait_event_type": None, "wait_event": None,
                       "query": "SELECT 1"}])
    [f] = pg_rules.long_running_queries(q, TH)
    assert f.severity is severity


@pytest.mark.parametrize("seconds,severity", [(TH.long_transaction_warn_s - 1, Severity.OK),
                                              (TH.long_transaction_warn_s, Severity.WARN),
                                              (TH.long_transaction_crit_s, Severity.CRIT)])
def test_long_transaction_at_edges(seconds, severity):
    t = pd.DataFrame([{"pid": 7, "usename": "app", "datname": "app", "application_name": "report", "state": "active",
                       "xact_age_s": seconds, "query": "SELECT 1"}])
    [f] = pg_rules.long_transactions(t, TH)
    assert f.severity is severity


@pytest.mark.parametrize("age,severity", [(TH.xmin_age_warn - 1, Severity.OK), (TH.xmin_age_warn, Severity.WARN),
                                          (TH.xmin_age_crit, Severity.CRIT)])
def test_xmin_horizon_at_edges(age, severity):
    h = pd.DataFrame([{"holder_kind": "backend", "holder": "42", "owner": "app", "detail": "active",
                       "xmin_age": age, "held_s": 5.0}])
    [f] = pg_rules.xmin_horizon(h, TH)
    assert f.severity is severity
