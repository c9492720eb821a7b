"""A real local PostgreSQL and Redis in temporary directories (the incidents staged on them are in ``database``).

PostgreSQL refuses to run as root, so when this process is root the server programs run as the
unprivileged ``postgres`` user (Debian's) through ``runuser``, in a directory that user owns.
Both servers listen on free loopback ports and require passwords, so the DSNs handed out hold
real secrets (which the archive must never contain).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..errors import RunbookError
from . import pg_binaries

PG_ADMIN = "runbook_admin"
PG_MONITOR = "runbook_monitor"
PG_DATABASE = "app"
REDIS_FALLBACK = "/usr/bin/redis-server"  # Debian's, when /usr/bin is not on PATH


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bindir() -> Path:
    """Server binaries of the major named by ``RUNBOOK_PG_VERSION``, else of the newest Debian PostgreSQL."""
    return pg_binaries.bindir_for(pg_binaries.requested_major())


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RunbookError("running as root and no unprivileged 'postgres' user exists: apt-get install -y postgresql")


@dataclass
class PostgresServer:
    """A running sandbox PostgreSQL. DSNs carry passwords: pass them only through environment variables."""

    directory: Path
    port: int
    admin_password: str
    monitor_password: str
    bindir: Path
    _run_as: pwd.struct_passwd | None = None

    def dsn(self, role: str = PG_MONITOR, database: str = PG_DATABASE) -> str:
        """A URL DSN for ``role`` (the monitor role is pg_monitor, not superuser)."""
        pw = self.admin_password if role == PG_ADMIN else self.monitor_password
        return f"postgresql://{role}:{pw}@127.0.0.1:{self.port}/{database}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(PG_ADMIN)

    @property
    def monitor_dsn(self) -> str:
        return self.dsn(PG_MONITOR)

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as.pw_name, "--", *args] if self._run_as else list(args)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                     "-t", "30", "stop"), capture_output=True, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(*, max_connections: int = 200, max_locks_per_transaction: int = 128,
                   settings: dict[str, str] | None = None) -> PostgresServer:
    """Initialise and start a PostgreSQL with pg_stat_statements preloaded; create the admin and monitor roles."""
    bindir = find_pg_bindir()
    run_as = _unprivileged_user()
    directory = Path(tempfile.mkdtemp(prefix="runbook-pg-"))
    os.chmod(directory, 0o700)
    if run_as:
        os.chown(directory, run_as.pw_uid, run_as.pw_gid)
    port = free_port()
    admin_pw, monitor_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    server = PostgresServer(directory, port, admin_pw, monitor_pw, bindir, run_as)
    pwfile = directory / "pwfile"
    pwfile.write_text(admin_pw + "\n")
    if run_as:
        os.chown(pwfile, run_as.pw_uid, run_as.pw_gid)
    data = directory / "data"
    try:
        _run(server._cmd(str(bindir / "initdb"), "-D", str(data), "-U", PG_ADMIN, "--pwfile", str(pwfile),
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
                         "--locale=C"), "initdb")
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'", "port": str(port), "unix_socket_directories": f"'{directory}'",
            "shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all",
            "max_connections": str(max_connections), "max_locks_per_transaction": str(max_locks_per_transaction),
            "max_prepared_transactions": "10", "fsync": "off", "synchronous_commit": "off",
            "full_page_writes": "off", "shared_buffers": "128MB", "track_io_timing": "on",
            "deadlock_timeout": "200ms", "log_min_messages": "warning", "wal_level": "logical",
            "max_replication_slots": "4", "max_wal_senders": "4",
        }
        conf.update(settings or {})
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# runbook sandbox\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        _run(server._cmd(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                         "-w", "-t", "60", "start"), "pg_ctl start")
        with psycopg.connect(server.dsn(PG_ADMIN, "postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
            conn.execute(f"CREATE ROLE {PG_MONITOR} LOGIN PASSWORD %s IN ROLE pg_monitor".replace("%s", _lit(monitor_pw)))
            conn.execute(f"GRANT CONNECT ON DATABASE {PG_DATABASE} TO {PG_MONITOR}")
        with psycopg.connect(server.admin_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except BaseException:
        server.stop()
        raise
    return server


def start_standby(primary: PostgresServer) -> PostgresServer:
    """A streaming replica of ``primary`` on its own free port: ``pg_basebackup -R`` where the binaries have it,
    else a non-exclusive base backup through SQL and a file copy (the npm builds ship no pg_basebackup)."""
    run_as = primary._run_as
    directory = Path(tempfile.mkdtemp(prefix="runbook-pg-standby-"))
    os.chmod(directory, 0o700)
    if run_as:
        os.chown(directory, run_as.pw_uid, run_as.pw_gid)
    port = free_port()
    standby = PostgresServer(directory, port, primary.admin_password, primary.monitor_password, primary.bindir, run_as)
    data = directory / "data"
    try:
        if (primary.bindir / "pg_basebackup").exists():
            _pg_basebackup(primary, standby, data)
        else:
            _copy_base_backup(primary, data)
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\n# standby\nport = {port}\nunix_socket_directories = '{directory}'\nhot_standby = on\n")
        _run(standby._cmd(str(primary.bindir / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                          "-w", "-t", "60", "start"), "pg_ctl start (standby)")
    except BaseException:
        standby.stop()
        raise
    return standby


def _pg_basebackup(primary: PostgresServer, standby: PostgresServer, data: Path) -> None:
    env = {**os.environ, "PGPASSWORD": primary.admin_password}
    p = subprocess.run(standby._cmd(str(primary.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p",
                                    str(primary.port), "-U", PG_ADMIN, "-D", str(data), "-R", "-X", "stream",
                                    "--no-sync", "-c", "fast"),
                       capture_output=True, text=True, timeout=120, env=env)
    if p.returncode != 0:
        raise RunbookError(f"pg_basebackup failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")


# Left out of a file-level base backup (the PostgreSQL manual, "Making a Base Backup Using the Low Level API").
_NOT_COPIED = {"postmaster.pid", "postmaster.opts", "pg_wal", "pg_replslot", "pg_stat_tmp", "pgsql_tmp",
               "pg_internal.init", "backup_label", "tablespace_map"}


def _copy_base_backup(primary: PostgresServer, data: Path) -> None:
    """Copy ``primary``'s data directory between backup start and stop, then the WAL that makes it consistent."""
    source = primary.directory / "data"
    with psycopg.connect(primary.admin_dsn, autocommit=True, connect_timeout=10) as conn:
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_backup_start('runbook-standby', true)")
            stop = "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)"
        else:
            conn.execute("SELECT pg_start_backup('runbook-standby', true, false)")
            stop = "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        _copy_tree(source, data)
        label, _ = conn.execute(stop).fetchone()
    _copy_tree(source / "pg_wal", data / "pg_wal", skip=set())
    (data / "backup_label").write_text(label)
    (data / "standby.signal").write_text("")
    conninfo = f"host=127.0.0.1 port={primary.port} user={PG_ADMIN} password={primary.admin_password}"
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"primary_conninfo = {_lit(conninfo)}\n")
    os.chmod(data, 0o700)
    if primary._run_as:
        subprocess.run(["chown", "-R", f"{primary._run_as.pw_uid}:{primary._run_as.pw_gid}", str(data)],
                       check=True, timeout=60)


def _copy_tree(source: Path, target: Path, skip: set[str] = _NOT_COPIED) -> None:
    """Copy a live directory: what the server removes while we copy is skipped; skipped directories stay empty."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(source):
        dest = target / entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name in skip:
                    dest.mkdir(exist_ok=True)
                else:
                    _copy_tree(Path(entry.path), dest, skip)
            elif entry.name not in skip:
                shutil.copy2(entry.path, dest)
        except FileNotFoundError:
            continue


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _run(cmd: list[str], what: str) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise RunbookError(f"{what}: {e.filename} not found") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RunbookError(f"{what} failed: {tail[0]}")


@dataclass
class RedisServer:
    """A running sandbox redis-server with a password."""

    directory: Path
    port: int
    password: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis(*, extra_args: list[str] | None = None) -> RedisServer:
    """Start ``redis-server`` on a free loopback port with a password, no persistence."""
    binary = shutil.which("redis-server") or (REDIS_FALLBACK if Path(REDIS_FALLBACK).exists() else None)
    if not binary:
        raise RunbookError("redis-server not found: apt-get install -y redis-server")
    directory = Path(tempfile.mkdtemp(prefix="runbook-redis-"))
    port, password = free_port(), secrets.token_urlsafe(18)
    conf = directory / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\nsave \"\"\nappendonly no\n"
                    f"requirepass {password}\nprotected-mode yes\nlogfile {directory / 'redis.log'}\n")
    os.chmod(conf, 0o600)
    proc = subprocess.Popen([binary, str(conf), *(extra_args or [])], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = RedisServer(directory, port, password, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RunbookError(f"redis-server exited at start (code {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                if b"PONG" in s.recv(100):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RunbookError("redis-server did not answer PING within 20 s")


@dataclass
class Sandbox:
    """Both servers together; ``env()`` gives the variables the ``local`` environment reads."""

    postgres: PostgresServer
    redis: RedisServer

    @classmethod
    def start(cls, **pg_options: Any) -> Sandbox:
        pg = start_postgres(**pg_options)
        try:
            rd = start_redis()
        except BaseException:
            pg.stop()
            raise
        return cls(pg, rd)

    def env(self) -> dict[str, str]:
        return {"RUNBOOK_PG_DSN": self.postgres.monitor_dsn, "RUNBOOK_REDIS_URL": self.redis.url}

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
