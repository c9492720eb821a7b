"""A database-pressure incident staged on the sandbox PostgreSQL: a migration's ALTER TABLE queued behind an
idle-in-transaction session, reads piling up behind it, and slow statements; ``stop()`` ends every session."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..errors import RunbookError
from .servers import PostgresServer

@dataclass
class StagedIncident:
    """Sessions kept alive to reproduce an incident; ``stop()`` ends them all."""

    description: str
    pids: dict[str, Any] = field(default_factory=dict)
    _conns: list[psycopg.Connection] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _admin_dsn: str = ""

    def stop(self) -> None:
        """Cancel waiting statements, roll back held transactions, close every session."""
        self._stop.set()
        end_sessions(self._admin_dsn, self._conns, self._threads)


def end_sessions(admin_dsn: str, conns: list[psycopg.Connection], threads: list[threading.Thread]) -> None:
    """Terminate the backends of ``conns`` (their waiting or idle-in-transaction work ends with them), wait for
    the threads that were running statements on them, and close them."""
    pids = [c.info.backend_pid for c in conns if not c.closed]
    if pids and admin_dsn:
        try:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as c:
                c.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p WHERE p <> pg_backend_pid()",
                          (pids,))
        except psycopg.Error:
            pass
    for t in threads:
        t.join(timeout=10)
    for c in conns:
        try:
            c.close()
        except psycopg.Error:
            pass


def _session(dsn: str, app: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, application_name=app, connect_timeout=10)


def _wait_until(dsn: str, sql: str, params: tuple[Any, ...], expect: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while time.monotonic() < deadline:
            if c.execute(sql, params).fetchone()[0] >= expect:
                return
            time.sleep(0.05)
    raise RunbookError(f"staging did not reach its state within {timeout:.0f}s")


def seed_app_schema(admin_dsn: str, rows: int = 20000) -> None:
    """Create the demo application's tables (orders, customers) with data."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute("""
            CREATE TABLE IF NOT EXISTS customers (id serial PRIMARY KEY, name text NOT NULL);
            CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer_id int NOT NULL,
                                               total numeric(12,2) NOT NULL, created_at timestamptz DEFAULT now());
            CREATE TABLE IF NOT EXISTS report_runs (id serial PRIMARY KEY, ran_at timestamptz DEFAULT now());""")
        if c.execute("SELECT count(*) FROM customers").fetchone()[0] == 0:
            c.execute("INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 500) g")
            c.execute("INSERT INTO orders (customer_id, total) SELECT 1 + g %% 500, (g %% 997) / 10.0 "
                      "FROM generate_series(1, %s) g", (rows,))
            c.execute("ANALYZE")


def stage_database_pressure(server: PostgresServer, *, readers: int = 4, slow_statements: bool = True
                            ) -> StagedIncident:
    """A migration's ``ALTER TABLE orders`` queued behind an idle-in-transaction session, reads piling up
    behind the DDL, and slow reporting statements running meanwhile.

    ``pids``: blocker, ddl, readers (list), reporter.
    """
    admin = server.admin_dsn
    seed_app_schema(admin)
    inc = StagedIncident("ALTER TABLE orders queued behind an idle-in-transaction session", _admin_dsn=admin)
    try:
        blocker = _session(admin, "billing-worker", autocommit=False)
        inc._conns.append(blocker)
        blocker.execute("UPDATE orders SET total = total WHERE id = 1")  # holds RowExclusiveLock, then idles
        inc.pids["blocker"] = blocker.info.backend_pid

        ddl = _session(admin, "migrate")
        inc._conns.append(ddl)
        ddl.execute("SET lock_timeout = 0")
        inc.pids["ddl"] = ddl.info.backend_pid
        _in_thread(inc, ddl, "ALTER TABLE orders ADD COLUMN discount numeric(12,2)")
        _wait_until(admin, "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (inc.pids["ddl"],), 1)

        inc.pids["readers"] = []
        for _ in range(readers):
            r = _session(admin, "portal-api")
            inc._conns.append(r)
            inc.pids["readers"].append(r.info.backend_pid)
            _in_thread(inc, r, "SELECT count(*) FROM orders WHERE customer_id = 42")
        _wait_until(admin, "SELECT count(*) FROM pg_locks WHERE pid = ANY(%s) AND NOT granted",
                    (inc.pids["readers"],), readers)

        if slow_statements:
            rep = _session(admin, "reports-api")
            inc._conns.append(rep)
            inc.pids["reporter"] = rep.info.backend_pid
            # warm pg_stat_statements with a genuinely slow statement before the diagnostics start
            rep.execute("SELECT pg_sleep(0.7), count(*) FROM generate_series(1, 200000) g, customers c "
                        "WHERE c.id = 1 + g % 500")
            t = threading.Thread(target=_report_loop, args=(inc, rep), daemon=True)
            t.start()
            inc._threads.append(t)
    except BaseException:
        inc.stop()
        raise
    return inc


def _in_thread(inc: StagedIncident, conn: psycopg.Connection, sql: str) -> None:
    def run() -> None:
        try:
            conn.execute(sql)
        except psycopg.Error:
            pass  # cancelled or terminated when the incident is stopped
    t = threading.Thread(target=run, daemon=True)
    t.start()
    inc._threads.append(t)


def _report_loop(inc: StagedIncident, conn: psycopg.Connection) -> None:
    while not inc._stop.is_set():
        try:
            conn.execute("SELECT pg_sleep(0.7), count(*) FROM generate_series(1, 200000) g, customers c "
                         "WHERE c.id = 1 + g % 500")
        except psycopg.Error:
            return
