"""Full Postgres collection on a busy server: 300 sessions, ~20,000 granted locks, a DDL lock queue,
5,000 distinct statements. Prints the median wall time of the whole collection and its ratio to a
baseline measured in the same run (one plain read of pg_locks + pg_stat_activity over a fresh connection).

Target: collection under 1 s, and no check gives up on (or waits for) a lock.
Usage: .venv/bin/python bench/pg_collect.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_lib.sandbox import stage_database_pressure, start_postgres  # noqa: E402
from runbook_lib.sources import SourceError  # noqa: E402
from runbook_lib.sources import postgres as pg  # noqa: E402

SESSIONS, TABLES, LOCKS_PER_SESSION, STATEMENTS = 300, 100, 67, 5000


def collect(db: pg.Database) -> dict[str, object]:
    """Every check the database_pressure notebook runs, with no sampling sleep."""
    before = pg.snapshot(db)
    out: dict[str, object] = {
        "connections": pg.connection_saturation(db), "waits": pg.wait_events(db, seconds=0),
        "tree": pg.blocking_tree(db), "queue": pg.lock_queue(db), "progress": pg.ddl_progress(db),
        "idle": pg.idle_in_transaction(db), "long_queries": pg.long_running_queries(db, 30),
        "long_txns": pg.long_transactions(db, 60), "horizon": pg.xmin_horizon(db),
        "lag": pg.replication_lag(db), "slots": pg.replication_slots(db), "vacuum": pg.autovacuum_activity(db),
        "wrap": pg.wraparound_risk(db), "invalid": pg.invalid_indexes(db), "sequences": pg.sequence_exhaustion(db),
    }
    after = pg.snapshot(db)
    out["statement_delta"] = pg.statement_delta(before.statements, after.statements)
    out["counter_delta"] = pg.counter_delta(before.counters, after.counters)
    return out


PROFILE = {
    "statements": pg.statements, "database_counters": pg.database_counters,
    "connection_saturation": pg.connection_saturation, "wait_events": lambda d: pg.wait_events(d, seconds=0),
    "blocking_tree": pg.blocking_tree, "lock_queue": pg.lock_queue, "ddl_progress": pg.ddl_progress,
    "idle_in_transaction": pg.idle_in_transaction, "long_running_queries": lambda d: pg.long_running_queries(d, 30),
    "long_transactions": lambda d: pg.long_transactions(d, 60), "xmin_horizon": pg.xmin_horizon,
    "replication_lag": pg.replication_lag, "replication_slots": pg.replication_slots,
    "autovacuum_activity": pg.autovacuum_activity, "wraparound_risk": pg.wraparound_risk,
    "invalid_indexes": pg.invalid_indexes, "sequence_exhaustion": pg.sequence_exhaustion,
}


def baseline(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT * FROM pg_locks").fetchall()
        c.execute("SELECT * FROM pg_stat_activity").fetchall()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="also time each check once")
    args = ap.parse_args()
    server = start_postgres(max_connections=SESSIONS + 50, max_locks_per_transaction=128,
                            settings={"pg_stat_statements.max": "10000"})
    conns: list[psycopg.Connection] = []
    staged = None
    try:
        admin = psycopg.connect(server.admin_dsn, autocommit=True)
        conns.append(admin)
        for t in range(TABLES):
            admin.execute(f"CREATE TABLE bench_{t} (id int PRIMARY KEY, v int)")
        print(f"creating {STATEMENTS} distinct statements ...", flush=True)
        admin.execute("SELECT pg_stat_statements_reset()")
        for i in range(STATEMENTS):
            width = 1 + i // TABLES
            admin.execute(f"SELECT * FROM bench_{i % TABLES} WHERE id IN ({', '.join(['%s'] * width)})",
                          list(range(width)))
        print(f"opening {SESSIONS} sessions holding {LOCKS_PER_SESSION} table locks each ...", flush=True)
        for s in range(SESSIONS):
            c = psycopg.connect(server.admin_dsn, application_name=f"app-{s % 7}")
            tables = ", ".join(f"bench_{(s + k) % TABLES}" for k in range(LOCKS_PER_SESSION))
            c.execute(f"LOCK TABLE {tables} IN ACCESS SHARE MODE")
            conns.append(c)
        staged = stage_database_pressure(server, readers=5, slow_statements=False)
        db = pg.Database(server.monitor_dsn)
        with psycopg.connect(server.admin_dsn, autocommit=True) as c:
            locks = c.execute("SELECT count(*) FROM pg_locks WHERE granted").fetchone()[0]
            stmts = c.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0]
        print(f"server: {locks} granted locks, {stmts} statements, lock queue on orders")

        collect(db)  # warm the connection and column cache
        coll_t, base_t = [], []
        failures: list[str] = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            baseline(server.monitor_dsn)
            base_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = collect(db)
            coll_t.append(time.perf_counter() - t0)
            failures += [f"{k}: {v}" for k, v in result.items() if isinstance(v, SourceError)]
        c_med, b_med = statistics.median(coll_t), statistics.median(base_t)
        print(f"collection   median {c_med * 1000:8.1f} ms  (min {min(coll_t) * 1000:.1f}, max {max(coll_t) * 1000:.1f})")
        print(f"baseline     median {b_med * 1000:8.1f} ms  (connect + read pg_locks and pg_stat_activity once)")
        print(f"ratio collection/baseline: {c_med / b_med:.2f}x")
        if args.profile:
            for name, fn in PROFILE.items():
                t0 = time.perf_counter()
                fn(db)
                print(f"  {name:22} {1000 * (time.perf_counter() - t0):7.1f} ms")
        print(f"target under 1 s: {'met' if c_med < 1.0 else 'MISSED'}; checks that failed or hit a lock: "
              f"{len(failures)}{' ' + '; '.join(sorted(set(failures))) if failures else ''}")
        db.close()
    finally:
        if staged:
            staged.stop()
        for c in conns:
            c.close()
        server.stop()


if __name__ == "__main__":
    main()
