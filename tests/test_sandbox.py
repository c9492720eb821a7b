"""The sandbox starts real servers as an unprivileged user, and says which package is missing."""

from __future__ import annotations

import psycopg
import pytest

from runbook_lib.sandbox import pg_binaries, servers as sandbox
from runbook_lib.errors import RunbookError


def test_missing_postgres_binaries_name_the_package(monkeypatch):
    monkeypatch.delenv(pg_binaries.VERSION_ENV, raising=False)
    monkeypatch.setattr(pg_binaries.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg_binaries.shutil, "which", lambda name: None)
    with pytest.raises(RunbookError, match="apt-get install -y postgresql"):
        sandbox.find_pg_bindir()


@pytest.mark.parametrize("value", ["11", "19", "15.4", "latest"])
def test_an_unsupported_postgres_version_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv(pg_binaries.VERSION_ENV, value)
    with pytest.raises(RunbookError, match=r"supported PostgreSQL majors are 12, 13, 14, 15, 16, 17, 18$"):
        sandbox.find_pg_bindir()


def test_missing_redis_names_the_package(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox, "REDIS_FALLBACK", "/nonexistent/redis-server")
    with pytest.raises(RunbookError, match="apt-get install -y redis-server"):
        sandbox.start_redis()


def test_servers_require_passwords_preload_pg_stat_statements_and_stop_cleanly():
    pg = sandbox.start_postgres(max_connections=20)
    rd = sandbox.start_redis()
    try:
        with psycopg.connect(pg.monitor_dsn) as c:
            assert "pg_stat_statements" in c.execute("SHOW shared_preload_libraries").fetchone()[0]
            assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://runbook_monitor:wrong@127.0.0.1:{pg.port}/app", connect_timeout=5)
        import redis
        assert redis.Redis.from_url(rd.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=rd.port, password="wrong").ping()
    finally:
        pg.stop()
        rd.stop()
    assert not pg.directory.exists() and not rd.directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.monitor_dsn, connect_timeout=2)
