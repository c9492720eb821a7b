"""The Postgres source on the PostgreSQL major this session runs (``RUNBOOK_PG_VERSION``; ``scripts/pg_matrix`` runs
this file and ``test_postgres_checks.py`` once per major, 12 to 18). What changes across them is read right:
pg_stat_statements 1.7 to 1.12, ``pg_locks.waitstart`` (14+), replication slot columns (13+), and a whole notebook
run finds the staged incident with no check failing on the version.
"""

from __future__ import annotations

import json
import uuid

import pandas as pd
import psycopg

from runbook_lib.sandbox import pg_binaries
from runbook_lib.sandbox import Sandbox, stage_database_pressure
from runbook_lib.sources import postgres as pg
from tests.test_runner import run_cli

# pg_stat_statements as each major ships it
EXTENSION_VERSION = {12: "1.7", 13: "1.8", 14: "1.9", 15: "1.10", 16: "1.10", 17: "1.11", 18: "1.12"}


# each reports a finding on every run, "ok" included, so a check that silently stopped running shows by its absence
EVERY_DATABASE_PRESSURE_CHECK = {
    "pg.blocking", "pg.connections", "pg.counters", "pg.ddl_lock_queue", "pg.ddl_progress", "pg.idle_in_transaction",
    "pg.invalid_index", "pg.long_query", "pg.long_transaction", "pg.replication", "pg.sequence", "pg.slow_statement",
    "pg.vacuum", "pg.wait_events", "pg.xmin_horizon"}


def _major() -> int:
    return pg_binaries.requested_major() or max(pg_binaries.debian_bindirs())


def test_the_sandbox_runs_the_major_asked_for_with_its_own_pg_stat_statements(db, sandbox):
    assert db.server_version // 10000 == _major()
    with psycopg.connect(sandbox.postgres.admin_dsn, autocommit=True) as c:
        ext = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()[0]
    assert ext == EXTENSION_VERSION[_major()]


def test_statement_counters_this_version_keeps_are_read_under_canonical_names(db, sessions):
    table = f"v_{uuid.uuid4().hex[:8]}"
    app = sessions.open("orders-api")
    app.execute(f"CREATE TABLE {table} (id int, note text)")
    for _ in range(3):
        app.execute(f"INSERT INTO {table} SELECT g, repeat('x', 50) FROM generate_series(1, 1000) g")
    stats = pg.statements(db)
    row = stats[stats["query"].str.startswith(f"INSERT INTO {table}")].iloc[0]
    assert int(row["calls"]) == 3 and int(row["rows"]) == 3000 and row["total_ms"] > 0
    assert bool(row["toplevel"])  # a column from 1.9 (PG 14); older versions count top-level statements only
    if _major() >= 13:  # wal_bytes arrived with 1.8
        assert row["wal_bytes"] > 0
    else:
        assert row["wal_bytes"] == 0


def test_lock_queue_orders_waiters_and_times_them_where_the_version_can(db, sessions):
    table = f"q_{uuid.uuid4().hex[:8]}"
    sessions.admin().execute(f"CREATE TABLE {table} (id int)")
    holder = sessions.open("billing-worker", autocommit=False)
    holder.execute(f"SELECT * FROM {table}")  # AccessShareLock held, transaction left open
    ddl = sessions.open("migrate")
    sessions.blocked(ddl, f"ALTER TABLE {table} ADD COLUMN v int")
    reader = sessions.open("portal-api")
    sessions.blocked(reader, f"SELECT count(*) FROM {table}")
    queue = pg.lock_queue(db)
    mine = queue[queue["relation"] == table].set_index("pid")
    assert mine.loc[holder.info.backend_pid, "role"] == "holder"
    assert mine.loc[ddl.info.backend_pid, "role"] == "ddl" and not mine.loc[ddl.info.backend_pid, "granted"]
    assert mine.loc[reader.info.backend_pid, "role"] == "queued"
    waited = mine.loc[ddl.info.backend_pid, "wait_s"]
    if _major() >= 14:  # pg_locks.waitstart
        assert waited >= 0 and mine.loc[ddl.info.backend_pid, "position"] < mine.loc[reader.info.backend_pid,
                                                                                          "position"]
    else:
        assert pd.isna(waited)


def test_replication_slot_columns_by_version(db, sessions):
    name = f"slot_{uuid.uuid4().hex[:8]}"
    admin = sessions.admin()
    admin.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    try:
        slots = pg.replication_slots(db)
        row = slots[slots["slot_name"] == name].iloc[0]
        assert row["slot_type"] == "physical" and not bool(row["active"]) and row["retained_bytes"] >= 0
        if _major() >= 13:
            assert row["wal_status"] in {"reserved", "extended"}
        else:
            assert row["wal_status"] is None or pd.isna(row["wal_status"])
    finally:
        admin.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_database_pressure_notebook_finds_the_staged_incident_with_no_check_failing(tmp_path):
    own = Sandbox.start()
    try:
        staged = stage_database_pressure(own.postgres, readers=3)
        try:
            proc = run_cli("run", "database_pressure", "--incident", f"PG{_major()}", "--archive", str(tmp_path),
                           "-p", "sample_seconds=1", env=own.env())
        finally:
            staged.stop()
    finally:
        own.stop()
    assert proc.returncode == 0, proc.stderr
    records = list(tmp_path.glob(f"PG{_major()}/*/findings.json"))
    assert len(records) == 1
    findings = json.loads(records[0].read_text())
    failed = [f"{f['check']}: {f['title']}" for f in findings if f["severity"] == "error"]
    assert failed == []  # an error finding is a check that could not read this version
    assert {"pg.blocking", "pg.ddl_lock_queue", "pg.idle_in_transaction"} <= {
        f["check"] for f in findings if f["severity"] == "crit"}
    assert EVERY_DATABASE_PRESSURE_CHECK <= {f["check"] for f in findings}, " ".join(sorted({f["check"] for f in findings}))
