"""Metric history from a real Prometheus (Debian's) scraping the real postgres_exporter and redis_exporter of a
sandbox every second, with conditions induced over a minute: connections climbing then released, a lock queue
forming, a backlog (RQ's own) growing then draining while Redis memory fills. Onsets and trends are checked against
what Postgres and RQ themselves reported at the time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import redis

from runbook_lib import charts
from runbook_lib.config import Environment
from runbook_lib.findings import Severity
from runbook_lib.rules import history as rules
from runbook_lib.sandbox import Sandbox, free_port, stage_database_pressure
from runbook_lib.sandbox.metrics import start_metrics
from runbook_lib.sources import SourceError
from runbook_lib.sources import prometheus as prom
from tests.helpers import wait_for
from tests.test_runner import only_record, run_cli

SCRAPE_S = 1.0
BASELINE_S = 10.0


@pytest.fixture(scope="module")
def stack():
    sb = Sandbox.start()
    metrics = start_metrics(sb, scrape_s=SCRAPE_S, check_keys="rq:queue:*")
    try:
        metrics.wait_for_series("pg_stat_activity_count")
        metrics.wait_for_series("redis_memory_used_bytes")
        yield sb, metrics
    finally:
        metrics.stop()
        sb.stop()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _baseline() -> datetime:
    """Let ``BASELINE_S`` of quiet scrapes land; returns the window start (the end of that quiet)."""
    time.sleep(BASELINE_S)
    return _now()


def _history(metrics, names, start: datetime):
    return prom.history(prom.Prometheus(metrics.url), names, start, _now(), baseline=timedelta(seconds=BASELINE_S))


def _by_subject(findings, check: str):
    return {f.subject: f for f in findings if f.check == check}


def _idle_sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle'").fetchone()[0]


def test_connections_climbing_are_rising_since_their_onset_then_back_to_baseline(stack):
    sb, metrics = stack
    start = _baseline()
    climb_at = _now()
    conns = []
    counted = []  # (when, idle sessions) as Postgres itself counts them while the climb goes on
    try:
        for _ in range(12):
            conns += [psycopg.connect(sb.postgres.admin_dsn, application_name="checkout-api") for _ in range(2)]
            counted.append((time.monotonic(), _idle_sessions(sb.postgres.admin_dsn)))
            time.sleep(0.75)
        mid = _history(metrics, ["pg_connections"], start)
        recent = [n for at, n in counted if at >= time.monotonic() - 4 * SCRAPE_S]
        found = _by_subject(rules.history(mid, "Database pressure"), "history.pg_connections")
        climbing = found["state=idle"]
        assert climbing.severity is Severity.WARN and "still rising" in climbing.title
        departed = climbing.evidence["departed_at"]
        assert climb_at - timedelta(seconds=SCRAPE_S) <= departed <= climb_at + timedelta(seconds=5)
        assert climbing.evidence["baseline_from"] == "baseline"
        # what Postgres itself counted in the last few scrape intervals (a busy machine delays scrapes, not values)
        assert min(recent) - 2 <= climbing.evidence["last"] <= max(recent) + 2, (climbing.evidence["last"], recent)
    finally:
        for c in conns:
            c.close()
    released_at = _now()
    time.sleep(6)
    after = _by_subject(rules.history(_history(metrics, ["pg_connections"], start), "x"), "history.pg_connections")
    back = after["state=idle"]
    assert back.severity is Severity.OK and "back to baseline since" in back.title
    assert released_at - timedelta(seconds=SCRAPE_S) <= back.evidence["returned_at"] <= released_at + \
        timedelta(seconds=4)
    assert back.evidence["peak"] >= climbing.evidence["last"]  # the climb's top, as Prometheus scraped it


def test_a_lock_queue_forming_shows_the_ddl_lock_and_the_idle_transaction_growing(stack):
    sb, metrics = stack
    start = _baseline()
    staged_at = _now()
    staged = stage_database_pressure(sb.postgres, readers=3, slow_statements=False)
    try:
        time.sleep(14)  # the blocker's transaction passes the 10 s a transaction must add to its baseline
        hist = _history(metrics, ["pg_exclusive_locks", "pg_longest_transaction"], start)
        findings = rules.history(hist, "Database pressure")
    finally:
        staged.stop()
    lock = _by_subject(findings, "history.pg_exclusive_locks")["pg_exclusive_locks"]
    assert lock.severity in (Severity.INFO, Severity.WARN) and "above baseline since" in lock.title
    assert staged_at - timedelta(seconds=SCRAPE_S) <= lock.evidence["departed_at"] <= staged_at + timedelta(seconds=5)
    idle_tx = _by_subject(findings, "history.pg_longest_transaction")["state=idle in transaction"]
    assert idle_tx.severity is Severity.WARN and "still rising" in idle_tx.title  # the blocker's transaction ages
    assert idle_tx.evidence["last"] >= 11 and idle_tx.evidence["departed_at"] >= staged_at + timedelta(seconds=9)


def test_a_backlog_grows_then_drains_with_a_time_to_drain_and_memory_fills(stack, procs):
    from rq import Queue

    sb, metrics = stack
    conn = redis.Redis.from_url(sb.redis.url)
    q = Queue("reports", connection=conn)
    start = _baseline()
    grow_at = _now()
    for _ in range(20):  # 400 jobs over 10 s, each carrying 50 kB
        for _ in range(20):
            q.enqueue("time.sleep", 0, description="x" * 50_000)
        time.sleep(0.5)
    peak = q.count
    time.sleep(2)
    worker = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "reports", "--burst",
                               "--url", sb.redis.url, "--name", "reports-drain"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    worker._group = True
    procs.append(worker)
    wait_for(lambda: q.count < peak * 0.75, timeout=60)
    time.sleep(3)
    asked_at, left = _now(), q.count
    draining = rules.history(_history(metrics, ["queue_depth", "redis_memory"], start), "Queue backlog")
    emptied_at = wait_for(lambda: _now() if q.count == 0 else None, timeout=120)
    depth = _by_subject(draining, "history.queue_depth")["key=rq:queue:reports"]
    assert depth.severity is Severity.INFO and "falling; at this rate it drains in" in depth.title, depth.title
    assert grow_at - timedelta(seconds=SCRAPE_S) <= depth.evidence["departed_at"] <= grow_at + timedelta(seconds=5)
    assert depth.evidence["peak"] == peak  # what RQ counted once the producer stopped
    actual = (emptied_at - asked_at).total_seconds() + 1.0
    assert 0.25 * actual <= depth.evidence["drain_s"] <= 4 * actual, (depth.evidence["drain_s"], actual, left)
    memory = _by_subject(draining, "history.redis_memory")["redis_memory"]
    assert memory.evidence["departed_at"] is not None and memory.evidence["peak"] - memory.evidence["baseline"] > 16e6

    time.sleep(5)
    after = _by_subject(rules.history(_history(metrics, ["queue_depth"], start), "x"), "history.queue_depth")
    done = after["key=rq:queue:reports"]
    assert done.severity is Severity.OK and "back to baseline since" in done.title
    assert done.evidence["returned_at"] <= emptied_at + timedelta(seconds=2 * SCRAPE_S + 1)


def test_missing_series_a_rejected_query_and_an_unreachable_prometheus_are_findings(stack):
    _, metrics = stack
    now = _now()
    p = prom.Prometheus(metrics.url, queries={"pg_connections": "sum(", "custom_depth": "sum(app_queue_depth)"})
    hist = prom.history(p, ["pg_connections", "custom_depth", "http_error_ratio", "redis_clients", "redis_oom_errors"],
                        now - timedelta(minutes=1), now)
    assert hist.attrs["failed"].keys() == {"pg_connections"} and "parse error" in hist.attrs["failed"]["pg_connections"]
    assert set(hist.attrs["missing"]) == {"custom_depth", "http_error_ratio"}
    findings = {f.check: f for f in rules.history(hist, "x")}
    assert findings["history.pg_connections"].severity is Severity.WARN
    assert findings["history.custom_depth"].severity is Severity.INFO and "app_queue_depth" in \
        findings["history.custom_depth"].detail
    assert findings["history.redis_clients"].severity is Severity.OK  # it has series, and they are steady
    assert findings["history.redis_oom_errors"].severity is Severity.OK  # zero, read from a Redis that is up
    assert charts.history(hist).figure is not None

    down = prom.history(prom.Prometheus(f"http://127.0.0.1:{free_port()}"), prom.DATABASE, now - timedelta(hours=1), now)
    assert isinstance(down, SourceError) and down.kind == "unreachable"
    [err] = rules.history(down, "Database pressure")
    assert err.severity is Severity.ERROR and "prometheus.url" in err.action


def test_without_prometheus_in_the_environment_nothing_changes(monkeypatch):
    env = Environment("local", None, raw={})
    p = prom.Prometheus.from_environment(env)
    now = _now()
    hist = prom.history(p, prom.DATABASE, now - timedelta(hours=1), now)
    assert not p.configured and hist.empty and hist.attrs["configured"] is False
    assert rules.history(hist, "Database pressure") == []
    assert "no prometheus" in charts.history(hist).note.lower()


def test_environment_headers_come_from_a_variable_and_never_show(monkeypatch, stack):
    _, metrics = stack
    monkeypatch.setenv("PROM_HEADERS", '{"Authorization": "Bearer s3cret-token-value"}')
    env = Environment("prod", None, raw={"prometheus": {"url": metrics.url, "headers_env": "PROM_HEADERS",
                                                        "queries": {"queue_depth": "sum(redis_db_keys)"}}})
    p = prom.Prometheus.from_environment(env)
    assert p.configured and "s3cret" not in repr(p)
    assert p.queries["queue_depth"].promql == "sum(redis_db_keys)" and p.queries["queue_depth"].drains
    now = _now()
    hist = prom.history(p, ["queue_depth"], now - timedelta(seconds=30), now)
    assert not hist.empty and hist.attrs["step_s"] >= 1
    monkeypatch.setenv("PROM_HEADERS", "Authorization: Bearer x")
    broken = prom.Prometheus.from_environment(env)
    assert not broken.configured and "JSON object" in broken.unavailable


def test_the_step_keeps_about_three_hundred_points_and_the_baseline_is_bounded():
    t = datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert prom.choose_step(t - timedelta(hours=12), t) == 144
    assert prom.choose_step(t - timedelta(seconds=30), t) == 1
    assert prom.baseline_for(t - timedelta(minutes=1), t) == timedelta(minutes=10)
    assert prom.baseline_for(t - timedelta(days=2), t) == timedelta(hours=6)


@pytest.fixture
def fresh_stack():
    """A Prometheus of the test's own: a run's baseline is at least 10 minutes, which on the module's stack would
    hold the other tests' incidents."""
    sb = Sandbox.start()
    metrics = start_metrics(sb, scrape_s=SCRAPE_S)
    try:
        metrics.wait_for_series("pg_locks_count")
        yield sb, metrics
    finally:
        metrics.stop()
        sb.stop()


def test_a_database_pressure_run_records_when_the_lock_queue_began_and_charts_it(fresh_stack, tmp_path):
    sb, metrics = fresh_stack
    start = _baseline()
    staged_at = _now()
    staged = stage_database_pressure(sb.postgres, readers=3, slow_statements=False)
    try:
        time.sleep(5)
        env_file = tmp_path / "prod.yaml"
        env_file.write_text(f"postgres: {{dsn_env: PROD_PG_DSN}}\nprometheus: {{url: '{metrics.url}'}}\n")
        proc = run_cli("run", "database_pressure", "--incident", "PROM-1", "--env-file", str(env_file), "--archive",
                       str(tmp_path / "arch"), "-p", f"window_start={start.isoformat()}", "-p", "sample_seconds=0.5",
                       env={"PROD_PG_DSN": sb.postgres.monitor_dsn})
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr
    record = only_record(tmp_path / "arch", "PROM-1")
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    lock = findings.get("history.pg_exclusive_locks:pg_exclusive_locks")
    assert lock, sorted(k for k in findings if k.startswith("history"))
    assert "above baseline since" in lock["title"]
    departed = datetime.fromisoformat(lock["evidence"]["departed_at"])
    assert staged_at - timedelta(seconds=SCRAPE_S) <= departed <= staged_at + timedelta(seconds=5)
    assert findings["pg.ddl_lock_queue:relation:orders"]["severity"] == "crit"  # the snapshot still decides
    assert "The incident window in Prometheus" in (record / "report.html").read_text()
    notebook = json.loads((record / "notebook.ipynb").read_text())
    [cell] = [c for c in notebook["cells"] if c.get("id") == "cell-history"]
    assert any("image/png" in o.get("data", {}) for o in cell["outputs"])  # the chart, not a note
