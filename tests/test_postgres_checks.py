"""Each Postgres check against the real sandbox, with the condition created by real concurrent sessions."""

from __future__ import annotations

import time
import uuid

import pandas as pd
import psycopg
import pytest

from runbook_lib.findings import Severity, Thresholds
from runbook_lib.rules import postgres as rules
from runbook_lib.sandbox import stage_database_pressure
from runbook_lib.sources import SourceError
from runbook_lib.sources import postgres as pg
from tests.helpers import wait_for

TH = Thresholds()


def _table(sessions, rows: int = 1000) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    sessions.admin().execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, v int);"
                             f"INSERT INTO {name} (v) SELECT g FROM generate_series(1, {rows}) g")
    return name


def test_connection_saturation_counts_sessions_by_app_against_usable(db, sessions):
    for _ in range(6):
        sessions.open("saturating-app")
    conns = pg.connection_saturation(db)
    assert isinstance(conns, pd.DataFrame)
    mine = conns[conns["application_name"] == "saturating-app"]
    assert int(mine["sessions"].sum()) == 6
    assert conns.attrs["usable"] == conns.attrs["max_connections"] - conns.attrs["reserved"]
    assert "runbook-diagnostics" not in set(conns["application_name"])  # own pid excluded
    low = Thresholds.from_mapping({"connections_warn_pct": 0.1, "connections_crit_pct": 50})
    sev = {f.severity for f in rules.connection_saturation(conns, low)}
    assert Severity.WARN in sev


def test_own_statements_and_sessions_stay_out_of_the_picture(db, sessions):
    second = pg.Database(db._dsn)  # another diagnostic session (a second notebook, a watch loop), left open
    assert isinstance(pg.connection_saturation(second), pd.DataFrame)
    app = sessions.open("billing-api")
    app.execute("SELECT count(*) FROM pg_class")
    before = pg.statements(db)
    for _ in range(3):
        pg.connection_saturation(db), pg.blocking_tree(db), pg.wraparound_risk(db), pg.lock_queue(db)
    after = pg.statements(db)
    delta = pg.statement_delta(before, after)
    # every statement the diagnostics role ran is the tool's own: none may show, cumulative or sampled
    assert after[after["usename"] == "runbook_monitor"].empty, after[after["usename"] == "runbook_monitor"]["query"]
    assert delta[delta["usename"] == "runbook_monitor"].empty
    assert not after["query"].str.contains("runbook-diagnostics|set_config\\('statement_timeout'", regex=True).any()
    assert (after["usename"] == "runbook_admin").any()  # the application's statements are there
    conns = pg.connection_saturation(db)
    assert int(conns["sessions"].sum()) == conns.attrs["in_use"]  # the breakdown adds up to the count
    assert conns.attrs["own_sessions"] >= 2 and "runbook-diagnostics" not in set(conns["application_name"])
    assert "billing-api" in set(conns["application_name"])
    second.close()


def test_blocking_tree_lock_queue_and_idle_blocker_from_staged_migration(db, sandbox):
    staged = stage_database_pressure(sandbox.postgres, readers=3, slow_statements=False)
    try:
        blocker, ddl, readers = staged.pids["blocker"], staged.pids["ddl"], staged.pids["readers"]
        tree = pg.blocking_tree(db)
        assert isinstance(tree, pd.DataFrame)
        root = tree[tree["depth"] == 0]
        assert list(root["pid"]) == [blocker]
        assert root.iloc[0]["state"] == "idle in transaction"
        assert int(root.iloc[0]["blocked_count"]) == 1 + len(readers)
        by_pid = tree.set_index("pid")
        assert by_pid.loc[ddl, "blocked_by"] == [blocker] and by_pid.loc[ddl, "waiting_mode"] == "AccessExclusiveLock"
        for r in readers:
            assert by_pid.loc[r, "root_pid"] == blocker and by_pid.loc[r, "depth"] == 2

        queue = pg.lock_queue(db)
        orders = queue[queue["relation"] == "orders"]
        assert list(orders[orders["role"] == "holder"]["pid"]) == [blocker]
        assert list(orders[orders["role"] == "ddl"]["pid"]) == [ddl]
        assert sorted(orders[orders["role"] == "queued"]["pid"]) == sorted(readers)

        idle = pg.idle_in_transaction(db)
        row = idle[idle["pid"] == blocker].iloc[0]
        assert row["locks_held"] >= 1 and "orders" in row["relations"]

        findings = rules.blocking(tree, TH) + rules.ddl_lock_queue(queue, TH) + rules.idle_in_transaction(idle, TH, tree)
        keys = {f.key: f for f in findings}
        assert keys[f"pg.blocking:pid:{blocker}"].severity is Severity.CRIT
        assert keys["pg.ddl_lock_queue:relation:orders"].severity is Severity.CRIT
        assert "ALTER TABLE orders" in keys["pg.ddl_lock_queue:relation:orders"].detail
        assert keys[f"pg.idle_in_transaction:pid:{blocker}"].severity is Severity.CRIT

        waits = pg.wait_events(db, seconds=0.5, interval=0.1)
        lock_rows = waits[waits["wait_event_type"] == "Lock"]
        assert float(lock_rows["avg_sessions"].sum()) >= 1 + len(readers) - 0.01
    finally:
        staged.stop()


def test_every_check_finishes_while_a_granted_access_exclusive_lock_is_held(db, sessions):
    """The pghero #444 case: DDL holds AccessExclusiveLock; size/sequence reads must not queue behind it."""
    table = _table(sessions)
    sessions.admin().execute(f"CREATE INDEX {table}_v ON {table} (v)")
    ddl = sessions.open("migrate", autocommit=False)
    ddl.execute(f"ALTER TABLE {table} ADD COLUMN w int")  # AccessExclusiveLock granted, transaction left open
    reader = sessions.open("reader")
    sessions.blocked(reader, f"SELECT count(*) FROM {table}")
    results = {
        "invalid_indexes": pg.invalid_indexes(db), "sequences": pg.sequence_exhaustion(db),
        "lock_queue": pg.lock_queue(db), "tree": pg.blocking_tree(db), "wrap": pg.wraparound_risk(db),
        "vacuum": pg.autovacuum_activity(db), "xmin": pg.xmin_horizon(db), "idle": pg.idle_in_transaction(db),
        "progress": pg.ddl_progress(db), "statements": pg.statements(db),
    }
    for name, r in results.items():  # a lock_timeout SourceError would mean a check queued behind the DDL
        assert isinstance(r, pd.DataFrame), f"{name}: {r}"
    seq = results["sequences"]
    row = seq[seq["sequence"] == f"{table}_id_seq"].iloc[0]
    assert bool(row["locked"]) and pd.isna(row["last_value"])
    queue = results["lock_queue"]
    mine = queue[queue["relation"] == table]
    assert list(mine[mine["role"] == "ddl"]["pid"]) == [ddl.info.backend_pid]
    assert bool(mine[mine["role"] == "ddl"]["granted"].iloc[0])
    f = rules.ddl_lock_queue(queue, TH)
    hit = [x for x in f if x.subject == f"relation:{table}"][0]
    assert hit.severity is Severity.CRIT and "holds an AccessExclusiveLock" in hit.title


def test_every_check_finishes_while_an_access_exclusive_lock_is_pending(db, sessions):
    """A migration waiting for its AccessExclusiveLock queues every later lock on the table, so a size read would
    wait behind it (and time out): the checks must skip the table rather than queue."""
    table = _table(sessions)
    holder = sessions.open("report", autocommit=False)
    holder.execute(f"SELECT count(*) FROM {table}")  # AccessShareLock held, transaction left open
    ddl = sessions.open("migrate")
    sessions.blocked(ddl, f"ALTER TABLE {table} ADD COLUMN w int")  # AccessExclusiveLock pending behind it
    results = {"invalid_indexes": pg.invalid_indexes(db), "sequences": pg.sequence_exhaustion(db),
               "lock_queue": pg.lock_queue(db), "tree": pg.blocking_tree(db), "wrap": pg.wraparound_risk(db)}
    for name, r in results.items():  # a lock_timeout SourceError would mean the check queued behind the DDL
        assert isinstance(r, pd.DataFrame), f"{name}: {r}"
    seq = results["sequences"]
    row = seq[seq["sequence"] == f"{table}_id_seq"].iloc[0]
    assert bool(row["locked"]) and pd.isna(row["last_value"])
    mine = results["lock_queue"][results["lock_queue"]["relation"] == table]
    ddl_row = mine[mine["pid"] == ddl.info.backend_pid].iloc[0]
    assert ddl_row["mode"] == "AccessExclusiveLock" and not bool(ddl_row["granted"])


def test_idle_in_transaction_and_long_transactions_are_found_with_ages(db, sessions):
    conn = sessions.open("forgetful-worker", autocommit=False)
    conn.execute("SELECT 1")
    time.sleep(1.2)
    idle = pg.idle_in_transaction(db)
    row = idle[idle["pid"] == conn.info.backend_pid].iloc[0]
    assert row["idle_s"] >= 1.0 and row["application_name"] == "forgetful-worker"
    th = Thresholds.from_mapping({"idle_in_transaction_warn_s": 1, "long_transaction_warn_s": 1})
    f = {x.key: x for x in rules.idle_in_transaction(idle, th)}
    assert f[f"pg.idle_in_transaction:pid:{conn.info.backend_pid}"].severity is Severity.WARN
    txns = pg.long_transactions(db, min_seconds=1)
    assert conn.info.backend_pid in set(txns["pid"])
    assert any(x.subject == f"pid:{conn.info.backend_pid}" for x in rules.long_transactions(txns, th))


def test_long_running_query_is_found_and_the_statement_delta_counts_it(db, sessions):
    before = pg.statements(db)
    conn = sessions.open("slow-report")
    sessions.background(conn, "SELECT pg_sleep(1.5) /* slow-report-marker */")
    wait_for(lambda: conn.info.backend_pid in set(pg.long_running_queries(db, min_seconds=0.5)["pid"]), timeout=5)
    queries = pg.long_running_queries(db, min_seconds=0.5)
    assert "slow-report-marker" in queries[queries["pid"] == conn.info.backend_pid].iloc[0]["query"]
    sessions.threads[-1].join(timeout=5)
    after = pg.statements(db)
    delta = pg.statement_delta(before, after)
    row = delta[delta["query"].str.contains("slow-report-marker")].iloc[0]
    assert row["calls"] == 1 and row["mean_ms"] >= 1400
    assert not delta["query"].str.contains("runbook-diagnostics").any()  # our own statements left out
    slow = rules.slow_statements(delta, TH)
    assert any(f.severity is Severity.WARN and "slow-report-marker" in f.detail for f in slow)
    th = Thresholds.from_mapping({"long_query_warn_s": 0.1})
    assert rules.long_running_queries(queries, th)[0].severity is Severity.WARN


def test_statement_columns_are_canonical_for_this_server_version(db):
    stats = pg.statements(db)
    for col in ["queryid", "calls", "total_ms", "mean_ms", "max_ms", "rows", "io_read_ms", "query", "datname"]:
        assert col in stats.columns
    assert (stats["total_ms"] >= 0).all()


def test_missing_pg_stat_statements_is_a_finding_that_says_how_to_fix(sandbox, sessions):
    name = f"noext_{uuid.uuid4().hex[:6]}"
    sessions.admin().execute(f"CREATE DATABASE {name}")
    d = pg.Database(sandbox.postgres.dsn("runbook_admin", name))
    try:
        stats = pg.statements(d)
        assert isinstance(stats, SourceError) and stats.kind == "missing_extension"
        assert "CREATE EXTENSION pg_stat_statements" in stats.hint
        [f] = rules.statements_visibility(stats)
        assert f.severity is Severity.WARN and "CREATE EXTENSION" in f.action
    finally:
        d.close()
        admin = sessions.admin()  # DROP DATABASE ... WITH (FORCE) is PostgreSQL 13+
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        wait_for(lambda: admin.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = %s",
                                       (name,)).fetchone()[0])
        admin.execute(f"DROP DATABASE {name}")


def test_insufficient_privilege_becomes_a_visibility_finding(sandbox, sessions):
    role = f"weak_{uuid.uuid4().hex[:6]}"
    admin = sessions.admin()
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'weak-pass-123'")
    admin.execute(f"GRANT CONNECT ON DATABASE app TO {role}")
    other = sessions.open("someone-else", autocommit=False)
    other.execute("SELECT 1")
    d = pg.Database(f"postgresql://{role}:weak-pass-123@127.0.0.1:{sandbox.postgres.port}/app")
    try:
        conns = pg.connection_saturation(d)
        assert conns.attrs["hidden_sessions"] >= 1
        assert any(f.check == "pg.privileges" and "pg_monitor" in f.action for f in rules.connection_saturation(conns, TH))
        stats = pg.statements(d)
        assert stats.attrs["hidden"] >= 1
        [f] = rules.statements_visibility(stats)  # its own check: re-running one cell never wipes the other's
        assert (f.check, f.subject) == ("pg.statements", "hidden_texts") and "pg_monitor" in f.action
        assert f.evidence["hidden_statements"] == stats.attrs["hidden"]
    finally:
        d.close()


def test_deadlock_shows_in_the_counter_delta(db, sessions):
    table = _table(sessions, rows=2)
    before = pg.database_counters(db)
    a, b = sessions.open("deadlock-a", autocommit=False), sessions.open("deadlock-b", autocommit=False)
    a.execute(f"UPDATE {table} SET v = v WHERE id = 1")
    b.execute(f"UPDATE {table} SET v = v WHERE id = 2")
    sessions.blocked(a, f"UPDATE {table} SET v = v WHERE id = 2")
    errors = []
    try:
        b.execute(f"UPDATE {table} SET v = v WHERE id = 1")
    except psycopg.errors.DeadlockDetected as e:
        errors.append(e)
    sessions.threads[-1].join(timeout=5)
    errors += [e for e in sessions.errors if isinstance(e, psycopg.errors.DeadlockDetected)]
    assert len(errors) == 1  # the server chose one victim
    a.close()  # a backend flushes its statistics (the deadlock count) when it exits
    b.close()

    def deadlocks_seen():
        delta = pg.counter_delta(before, pg.database_counters(db))
        return delta if int(delta.loc[delta["datname"] == "app", "deadlocks"].iloc[0]) >= 1 else None
    delta = wait_for(deadlocks_seen, timeout=10, interval=0.3)
    assert any(f.check == "pg.deadlocks" for f in rules.counters(delta, TH))


def test_xmin_horizon_names_snapshot_holders_prepared_xacts_and_slots(db, sessions):
    admin = sessions.admin()
    slot = f"slot_{uuid.uuid4().hex[:6]}"
    # a logical slot waits for running transactions when created, so it comes first
    admin.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    holder = sessions.open("report-snapshot", autocommit=False)
    holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM pg_class")
    table = _table(sessions, rows=1)
    gid = f"gid_{uuid.uuid4().hex[:6]}"
    prep = sessions.open("two-phase", autocommit=False)
    prep.execute(f"UPDATE {table} SET v = v")
    prep.execute(f"PREPARE TRANSACTION '{gid}'")
    try:
        horizon = pg.xmin_horizon(db)
        kinds = set(zip(horizon["holder_kind"], horizon["holder"]))
        assert ("backend", str(holder.info.backend_pid)) in kinds
        assert ("prepared_xact", gid) in kinds
        assert ("replication_slot", slot) in kinds
        slots = pg.replication_slots(db)
        row = slots[slots["slot_name"] == slot].iloc[0]
        assert not row["active"] and row["retained_bytes"] >= 0
        th = Thresholds.from_mapping({"xmin_age_warn": 0, "long_transaction_warn_s": 0})
        subjects = {f.subject for f in rules.xmin_horizon(horizon, th)}
        assert f"prepared_xact:{gid}" in subjects and f"replication_slot:{slot}" in subjects
    finally:
        admin.execute(f"ROLLBACK PREPARED '{gid}'")
        admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_replication_lag_on_a_primary_without_standbys_is_empty(db):
    lag = pg.replication_lag(db)
    assert isinstance(lag, pd.DataFrame) and lag.empty and lag.attrs["is_standby"] is False


def test_index_build_in_progress_and_invalid_index(db, sessions):
    table = _table(sessions, rows=200)
    admin = sessions.admin()
    # a failed unique CONCURRENTLY build leaves an invalid index behind
    admin.execute(f"INSERT INTO {table} (v) VALUES (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {table}_v_uniq ON {table} (v)")
    bad = pg.invalid_indexes(db)
    row = bad[bad["index"] == f"{table}_v_uniq"].iloc[0]
    assert not row["build_in_progress"] and pd.notna(row["size_bytes"])  # size read: nothing locks it
    assert any(f.subject == f"index:public.{table}_v_uniq" for f in rules.invalid_indexes(bad, TH))

    # a CONCURRENTLY build waits for an older transaction: visible in progress, and invalid meanwhile
    old = sessions.open("old-snapshot", autocommit=False)
    old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    old.execute(f"SELECT count(*) FROM {table}")
    builder = sessions.open("index-builder")
    sessions.background(builder, f"CREATE INDEX CONCURRENTLY {table}_v_idx ON {table} (v)")
    def waiting_phase():  # the build scans the table first, then waits for the old snapshot
        p = pg.ddl_progress(db)
        mine = p[p["pid"] == builder.info.backend_pid]
        return p if len(mine) and "waiting" in str(mine.iloc[0]["phase"]) else None
    progress = wait_for(waiting_phase, timeout=30)
    row = progress[progress["pid"] == builder.info.backend_pid].iloc[0]
    assert row["operation"] == "create_index" and row["relation"] == table and "waiting" in row["phase"]
    bad = pg.invalid_indexes(db)
    assert bool(bad[bad["index"] == f"{table}_v_idx"].iloc[0]["build_in_progress"])
    assert rules.ddl_progress(progress, TH)[0].severity is Severity.INFO
    old.rollback()


def test_sequence_near_exhaustion_of_an_integer_column_is_critical(db, sessions):
    table = _table(sessions, rows=1)
    sessions.admin().execute(f"GRANT SELECT ON {table}_id_seq TO runbook_monitor")
    sessions.admin().execute(f"SELECT setval('{table}_id_seq', 2000000000)")
    seqs = pg.sequence_exhaustion(db)
    row = seqs[seqs["sequence"] == f"{table}_id_seq"].iloc[0]
    assert row["column_type"] == "integer" and 93 < row["used_pct"] < 94
    f = [x for x in rules.sequences(seqs, TH) if x.subject == f"sequence:public.{table}_id_seq"][0]
    assert f.severity is Severity.CRIT and "bigint" in f.action


def test_wraparound_ages_cover_databases_and_fold_toast_into_its_table(db):
    wrap = pg.wraparound_risk(db, limit=10000)
    assert set(wrap["scope"]) == {"database", "table"}  # no TOAST relation listed on its own
    tables = wrap[wrap["scope"] == "table"]
    assert not tables["name"].str.contains("pg_toast").any() and tables["name"].is_unique
    assert set(tables["oldest_part"]) <= {"table", "toast"}
    with psycopg.connect(db._dsn, autocommit=True) as c:  # a table's age is the older of its own and its TOAST's
        rel, own, toast = c.execute("""
            SELECT t.oid::regclass::text, age(t.relfrozenxid), age(x.relfrozenxid) FROM pg_class t
            JOIN pg_class x ON x.oid = t.reltoastrelid WHERE t.relkind = 'r' AND t.oid::regclass::text = 'pg_proc'
        """).fetchone()
    row = tables[tables["name"] == rel].iloc[0]
    assert row["xid_age"] >= max(own, toast) - 1000
    th = Thresholds.from_mapping({"wraparound_warn_pct": 0.0, "wraparound_crit_pct": 100})
    assert any(f.check == "pg.wraparound" for f in rules.vacuum(pg.autovacuum_activity(db), wrap, th))


def test_vacuum_in_progress_is_reported(db, sessions):
    table = _table(sessions, rows=200000)
    admin = sessions.admin()
    admin.execute(f"DELETE FROM {table} WHERE id % 2 = 0")
    vac = sessions.open("manual-vacuum")
    vac.execute("SET vacuum_cost_delay = 100; SET vacuum_cost_limit = 1")
    sessions.background(vac, f"VACUUM {table}")
    activity = wait_for(lambda: (lambda a: a if (a["relation"] == table).any() else None)(pg.autovacuum_activity(db)))
    row = activity[activity["relation"] == table].iloc[0]
    assert row["heap_blks_total"] > 0 and not row["anti_wraparound"]
    th = Thresholds.from_mapping({"vacuum_running_warn_s": 0})
    assert any(f.subject == f"relation:{table}" for f in rules.vacuum(activity, pg.wraparound_risk(db), th))


def test_diagnostic_sessions_are_read_only_and_time_limited(db):
    wrote = db.frame("probe", "CREATE TABLE runbook_should_not_exist (i int)")
    assert isinstance(wrote, SourceError) and "read-only" in wrote.message
    slow = db.frame("probe", "SELECT pg_sleep(2)", statement_timeout_ms=100)
    assert isinstance(slow, SourceError) and slow.kind == "timeout"
    settings = db.frame("probe", "SELECT current_setting('application_name') AS app,"
                                 " current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st,"
                                 " current_setting('transaction_read_only') AS ro")
    row = settings.iloc[0]
    assert row["app"] == "runbook-diagnostics" and row["ro"] == "on" and row["lt"] != "0" and row["st"] != "0"


def test_unreachable_server_is_an_error_finding_not_an_exception():
    from runbook_lib.sandbox import free_port

    d = pg.Database(f"postgresql://u:secret-pw-xyz@127.0.0.1:{free_port()}/app")
    conns, tree = pg.connection_saturation(d), pg.blocking_tree(d)
    assert isinstance(conns, SourceError) and conns.kind == "unreachable"
    assert isinstance(tree, SourceError) and tree.check == "blocking_tree"
    [f] = rules.connection_saturation(conns, TH)
    assert f.severity is Severity.ERROR and "secret-pw-xyz" not in str(f.to_dict())


def test_replication_lag_with_a_real_streaming_standby(sandbox, sessions):
    from runbook_lib.sandbox import start_standby

    standby = start_standby(sandbox.postgres)
    primary_db, standby_db = pg.Database(sandbox.postgres.monitor_dsn), pg.Database(standby.monitor_dsn)
    try:
        lag = wait_for(lambda: (lambda l: l if len(l) and (l["state"] == "streaming").any() else None)(
            pg.replication_lag(primary_db)), timeout=30)
        assert lag.attrs["is_standby"] is False
        table = _table(sessions, rows=10)
        wait_for(lambda: (lambda l: l if l.iloc[0]["replay_lag_bytes"] == 0 else None)(pg.replication_lag(standby_db)),
                 timeout=30)
        with psycopg.connect(standby.admin_dsn, autocommit=True) as c:
            c.execute("SELECT pg_wal_replay_pause()")
        sessions.admin().execute(f"INSERT INTO {table} (v) SELECT g FROM generate_series(1, 5000) g")
        lagging = wait_for(lambda: (lambda l: l if (l["replay_lag_bytes"] > 0).any() else None)(
            pg.replication_lag(primary_db)), timeout=30)
        assert int(lagging["replay_lag_bytes"].max()) > 0
        time.sleep(1.1)
        mine = pg.replication_lag(standby_db)
        row = mine.iloc[0]
        assert mine.attrs["is_standby"] is True and row["state"] == "replay paused" and row["replay_lag_bytes"] > 0
        findings = rules.replication(mine, pg.replication_slots(standby_db), TH)
        assert any(f.check == "pg.replication_lag" and "pg_wal_replay_resume" in f.action for f in findings)
        with psycopg.connect(standby.admin_dsn, autocommit=True) as c:
            c.execute("SELECT pg_wal_replay_resume()")
    finally:
        primary_db.close()
        standby_db.close()
        standby.stop()


def test_a_sort_spilling_to_disk_shows_as_temp_files_in_the_counter_delta(db, sessions):
    before = pg.database_counters(db)
    spill = sessions.open("report-export")
    spill.execute("SET work_mem = '64kB'")
    spill.execute("SELECT g FROM generate_series(1, 300000) g ORDER BY random() LIMIT 1")  # sorts on disk
    spill.close()  # the backend flushes its statistics when it exits

    def spilled():
        delta = pg.counter_delta(before, pg.database_counters(db))
        row = delta[delta["datname"] == "app"].iloc[0]
        return delta if row["temp_files"] >= 1 and row["temp_bytes"] > 0 else None
    delta = wait_for(spilled, timeout=15, interval=0.3)
    th = Thresholds.from_mapping({"temp_bytes_warn": 1})
    assert any(f.check == "pg.temp_files" and f.subject == "db:app" for f in rules.counters(delta, th))
