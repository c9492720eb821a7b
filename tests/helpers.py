"""Helpers that create real conditions on the sandbox Postgres: sessions held open, statements left waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from runbook_lib.sandbox import end_sessions


class SessionPool:
    """Application sessions opened by a test; ``close()`` terminates every one (and its waiting statements)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def open(self, app: str = "test-app", autocommit: bool = True, dsn: str | None = None) -> psycopg.Connection:
        conn = psycopg.connect(dsn or self.dsn, autocommit=autocommit, application_name=app, connect_timeout=10)
        self.conns.append(conn)
        return conn

    def background(self, conn: psycopg.Connection, sql: str, params: Any = None) -> threading.Thread:
        """Run ``sql`` on ``conn`` in a thread (it may block); errors are kept in ``errors``."""
        def run() -> None:
            try:
                conn.execute(sql, params)
            except psycopg.Error as e:
                self.errors.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def blocked(self, conn: psycopg.Connection, sql: str) -> threading.Thread:
        """Run ``sql`` on ``conn`` in the background; return once it waits on a lock."""
        thread = self.background(conn, sql)
        wait_for(lambda: waiting_on_lock(self.dsn, conn.info.backend_pid))
        return thread

    def admin(self) -> psycopg.Connection:
        return self.open("test-admin")

    def close(self) -> None:
        end_sessions(self.dsn, self.conns, self.threads)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout}s")


def waiting_on_lock(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        return bool(c.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)).fetchone()[0])
