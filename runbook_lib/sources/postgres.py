"""PostgreSQL evidence: connections, waits, locks, DDL queues, long transactions, statements, vacuum.

Every check runs in its own read-only transaction with ``SET LOCAL statement_timeout`` and
``lock_timeout``, on an autocommit session that names itself (``application_name``) and
excludes its own pid. Query text is truncated server-side. Size and definition functions
are never called on a relation under a granted or pending ``AccessExclusiveLock`` (a
diagnostic must not queue behind the DDL it is diagnosing). Each check returns a
DataFrame, or a :class:`~runbook_lib.sources.SourceError` that says what failed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import pandas as pd
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from ..config import Environment
from ..redact import redact
from . import SourceError

SOURCE = "postgres"
T = TypeVar("T")

# Largest value a column of each integer type can hold (sequence exhaustion).
INT_TYPE_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}
XID_WRAPAROUND_LIMIT = 2**31


@dataclass(frozen=True)
class Safety:
    """Limits that keep diagnostics from making an incident worse."""

    statement_timeout_ms: int = 3000
    lock_timeout_ms: int = 200
    connect_timeout_s: int = 5
    idle_in_transaction_timeout_ms: int = 30000
    application_name: str = "runbook-diagnostics"
    max_query_chars: int = 400
    row_limit: int = 200


class Database:
    """A lazily opened, read-only, time-limited diagnostic session to one Postgres server.

    A failed connection is remembered: later checks return the same :class:`SourceError`
    at once instead of paying the connect timeout again.
    """

    def __init__(self, dsn: str | None, *, safety: Safety | None = None, unavailable: str = "") -> None:
        self._dsn = dsn
        self.safety = safety or Safety()
        self._conn: psycopg.Connection | None = None
        self._failure: SourceError | None = None
        self._lock = threading.Lock()
        self._stmt_columns: tuple[str, list[str]] | None = None
        if dsn is None:
            self._failure = SourceError(SOURCE, "connect", "config", unavailable or "no Postgres DSN configured",
                                        hint="set the variable named by postgres.dsn_env, or RUNBOOK_PG_DSN")

    @classmethod
    def from_environment(cls, env: Environment | None, safety: Safety | None = None,
                         missing: str = "no environment") -> Database:
        """Open (lazily) the Postgres target of an environment; the DSN comes from an environment variable.
        Without an environment every check reports ``missing``."""
        dsn, origin = env.postgres_dsn() if env is not None else (None, missing)
        return cls(dsn, safety=safety, unavailable=origin)

    def __repr__(self) -> str:  # never show the DSN
        state = "failed" if self._failure else ("open" if self._conn else "not connected")
        return f"<Database {state}>"

    @property
    def server_version(self) -> int | None:
        """``server_version_num`` of the connected server, or None when unreachable."""
        conn = self._connect()
        return None if isinstance(conn, SourceError) else conn.info.server_version

    def _connect(self) -> psycopg.Connection | SourceError:
        if self._failure is not None:
            return self._failure
        if self._conn is not None and not self._conn.closed:
            return self._conn
        s = self.safety
        options = (
            f"-c statement_timeout={s.statement_timeout_ms} -c lock_timeout={s.lock_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={s.idle_in_transaction_timeout_ms}"
            " -c default_transaction_read_only=on"
        )
        try:
            self._conn = psycopg.connect(
                self._dsn or "", autocommit=True, connect_timeout=s.connect_timeout_s,
                application_name=s.application_name, options=options,
            )
        except psycopg.Error as e:
            msg = str(e)
            kind = "permission" if ("password authentication" in msg or "permission denied" in msg) else "unreachable"
            hint = ("check the role and password in the variable the environment names" if kind == "permission"
                    else "is the server up and reachable from here? (a down database is itself the finding)")
            self._failure = SourceError(SOURCE, "connect", kind, _one_line(msg), hint=hint)
            return self._failure
        return self._conn

    def read(self, check: str, work: Callable[[psycopg.Cursor], T], *,
             statement_timeout_ms: int | None = None) -> T | SourceError:
        """Run ``work`` in its own read-only transaction with statement and lock timeouts."""
        with self._lock:
            conn = self._connect()
            if isinstance(conn, SourceError):
                return _as_check(conn, check)
            st = statement_timeout_ms or self.safety.statement_timeout_ms
            try:
                with conn.cursor() as cur:
                    # every statement carries MARKER, so none of ours reaches a statements table
                    cur.execute(
                        f"BEGIN {MARKER} READ ONLY; SELECT {MARKER} set_config('statement_timeout', '{int(st)}', true),"
                        f" set_config('lock_timeout', '{int(self.safety.lock_timeout_ms)}', true)"
                    )
                    try:
                        return work(cur)
                    finally:
                        if not conn.closed and not conn.broken:
                            conn.execute(f"ROLLBACK {MARKER}")
            except pg_errors.LockNotAvailable as e:
                return SourceError(SOURCE, check, "lock_timeout", _one_line(str(e)),
                                   hint="a relation this check reads is locked; the check gave up rather than wait")
            except pg_errors.QueryCanceled as e:
                return SourceError(SOURCE, check, "timeout", _one_line(str(e)),
                                   hint=f"the check exceeded statement_timeout={st}ms; the server may be saturated")
            except pg_errors.InsufficientPrivilege as e:
                return SourceError(SOURCE, check, "permission", _one_line(str(e)),
                                   hint="GRANT pg_monitor TO the diagnostics role")
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self._conn = None
                return SourceError(SOURCE, check, "unreachable", _one_line(str(e)),
                                   hint="the connection was lost during the check")
            except psycopg.Error as e:
                return SourceError(SOURCE, check, "error", _one_line(str(e)))

    def frame(self, check: str, sql: str, params: Sequence[Any] | dict[str, Any] | None = None, *,
              statement_timeout_ms: int | None = None) -> pd.DataFrame | SourceError:
        """One query in its own safe transaction, as a DataFrame."""
        return self.read(check, lambda cur: _fetch_frame(cur, sql, params), statement_timeout_ms=statement_timeout_ms)

    def close(self) -> None:
        """Close the session (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _one_line(msg: str) -> str:
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    return redact(" ".join(lines[:2]))[:400]


def _as_check(err: SourceError, check: str) -> SourceError:
    return SourceError(err.source, check, err.kind, err.message, err.hint)


# Marks our own statements so pg_stat_statements results can leave them out.
MARKER = "/* runbook-diagnostics */"
# Sessions that are not ours: this one, and any other diagnostic session (a second notebook, a watch loop).
NOT_OURS = "(pid <> pg_backend_pid() AND application_name IS DISTINCT FROM 'runbook-diagnostics')"


_FIRST_WORD = re.compile(r"^\s*(\S+)")


def marked(sql: str) -> str:
    """``sql`` with MARKER after its first word. Inside the statement, not before it: PostgreSQL 18 leaves a leading
    comment out of the statement text that pg_stat_statements keeps (a trailing one may go too)."""
    return _FIRST_WORD.sub(lambda m: f"{m.group(1)} {MARKER}", sql.strip(), count=1)


def _exec(cur: psycopg.Cursor, sql: str, params: Any = None) -> psycopg.Cursor:
    return cur.execute(marked(sql), params)


def _fetch_frame(cur: psycopg.Cursor, sql: str, params: Any = None) -> pd.DataFrame:
    _exec(cur, sql, params)
    columns = [d.name for d in cur.description or []]
    return pd.DataFrame(cur.fetchall(), columns=columns)


def _q(db: Database) -> int:
    return int(db.safety.max_query_chars)


def _age(col: str) -> str:
    return f"extract(epoch FROM clock_timestamp() - {col})::float8"


def _with_attrs(df: pd.DataFrame, **attrs: Any) -> pd.DataFrame:
    df.attrs.update(attrs)
    return df


def _redact_queries(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        if c in df.columns:
            df[c] = df[c].map(lambda v: redact(v) if isinstance(v, str) else v)
    return df


# Relations under a granted or pending AccessExclusiveLock in this database: never size or define them.
_LOCKED_CTE = """
locked AS (
  SELECT DISTINCT relation FROM pg_locks
  WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)"""


# --------------------------------------------------------------------------- connections

# Client backends, including other roles' sessions this role may not see (backend_type hidden, user shown).
_CLIENT = "(backend_type = 'client backend' OR (backend_type IS NULL AND usename IS NOT NULL))"


def connection_saturation(db: Database) -> pd.DataFrame | SourceError:
    """Client backends grouped by state, application, user and database, against usable connections.

    The tool's own sessions are left out of the rows and of ``in_use``, so the rows add up to ``in_use`` (up to the
    500 largest groups). ``attrs``: max_connections, reserved, usable (max minus reserved), in_use (client backends
    not ours), own_sessions (ours, which hold slots too), hidden_sessions.
    """
    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        _exec(cur, f"""
            SELECT current_setting('max_connections')::int,
                   current_setting('superuser_reserved_connections')::int
                   + coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int,
                   (SELECT count(*) FROM pg_stat_activity WHERE {_CLIENT} AND {NOT_OURS})::int,
                   (SELECT count(*) FROM pg_stat_activity WHERE {_CLIENT} AND NOT {NOT_OURS})::int""")
        max_conn, reserved, in_use, ours = cur.fetchone()
        df = _fetch_frame(cur, f"""
            SELECT coalesce(state, '(hidden)') AS state,
                   coalesce(nullif(application_name, ''), '(none)') AS application_name,
                   coalesce(usename::text, '(none)') AS usename,
                   coalesce(datname::text, '(none)') AS datname,
                   count(*)::int AS sessions,
                   max({_age('state_change')}) AS max_state_age_s,
                   (count(*) FILTER (WHERE query = '<insufficient privilege>'))::int AS hidden
            FROM pg_stat_activity
            WHERE {_CLIENT} AND {NOT_OURS}
            GROUP BY 1, 2, 3, 4 ORDER BY sessions DESC LIMIT 500""")
        return _with_attrs(df, max_connections=max_conn, reserved=reserved,
                           usable=max_conn - reserved, in_use=in_use, own_sessions=ours,
                           hidden_sessions=int(df["hidden"].sum()) if len(df) else 0)
    return db.read("connection_saturation", work)


def wait_events(db: Database, seconds: float = 2.0, interval: float = 0.25) -> pd.DataFrame | SourceError:
    """Active sessions sampled every ``interval`` seconds for ``seconds``, grouped by wait event.

    ``avg_sessions`` is the average number of active sessions in that state (CPU = not waiting).
    """
    samples = max(1, int(seconds / interval)) if seconds > 0 else 1
    sql = f"""
        SELECT coalesce(wait_event_type, 'CPU') AS wait_event_type, coalesce(wait_event, 'running') AS wait_event,
               count(*)::int AS sessions
        FROM pg_stat_activity
        WHERE state = 'active' AND backend_type = 'client backend' AND {NOT_OURS}
        GROUP BY 1, 2"""
    frames: list[pd.DataFrame] = []
    for i in range(samples):
        got = db.frame("wait_events", sql)
        if isinstance(got, SourceError):
            if not frames:
                return got
            break
        frames.append(got)
        if i < samples - 1:
            time.sleep(interval)
    taken = len(frames)
    all_rows = pd.concat(frames, ignore_index=True) if any(len(f) for f in frames) else \
        pd.DataFrame(columns=["wait_event_type", "wait_event", "sessions"])
    out = (all_rows.groupby(["wait_event_type", "wait_event"], as_index=False)["sessions"].sum()
           .rename(columns={"sessions": "session_samples"}))
    out["avg_sessions"] = out["session_samples"].astype(float) / taken
    out = out.sort_values("avg_sessions", ascending=False, ignore_index=True)
    return _with_attrs(out, samples=taken, interval_s=interval)


# --------------------------------------------------------------------------- locks

def blocking_tree(db: Database) -> pd.DataFrame | SourceError:
    """Sessions waiting on a lock, what blocks each, and the root of each chain.

    ``pg_blocking_pids()`` is called only for sessions whose wait_event_type is Lock.
    One row per session involved: ``depth`` 0 is a root blocker (not itself waiting),
    ``root_pid`` the root of its chain, ``blocked_count`` how many sessions wait behind it
    (transitively). A pid of 0 is a prepared transaction.
    """
    q = _q(db)
    sql = f"""
        WITH waiting AS (
          SELECT pid, pg_blocking_pids(pid) AS blocked_by FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND {NOT_OURS}
        ), involved AS (
          SELECT pid FROM waiting UNION SELECT unnest(blocked_by) FROM waiting
        ), wanted AS (
          SELECT DISTINCT ON (pid) pid, locktype, mode,
                 CASE WHEN relation IS NOT NULL THEN relation::regclass::text END AS relation
          FROM pg_locks WHERE NOT granted AND pid IN (SELECT pid FROM waiting)
          ORDER BY pid
        )
        SELECT i.pid, coalesce(w.blocked_by, '{{}}'::int[]) AS blocked_by,
               a.usename::text AS usename, a.datname::text AS datname, a.application_name,
               a.client_addr::text AS client_addr, a.backend_type, a.state,
               a.wait_event_type, a.wait_event,
               {_age('a.xact_start')} AS xact_age_s, {_age('a.query_start')} AS query_age_s,
               {_age('a.state_change')} AS state_age_s,
               left(a.query, {q}) AS query,
               l.locktype AS waiting_locktype, l.mode AS waiting_mode, l.relation AS waiting_relation
        FROM involved i
        LEFT JOIN waiting w USING (pid)
        LEFT JOIN pg_stat_activity a USING (pid)
        LEFT JOIN wanted l USING (pid)
        LIMIT 5000"""

    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        return _build_tree(_fetch_frame(cur, sql))
    got = db.read("blocking_tree", work)
    return got if isinstance(got, SourceError) else _redact_queries(got, "query")


_TREE_COLUMNS = ["pid", "root_pid", "depth", "blocked_by", "blocked_count", "state", "usename", "application_name",
                 "datname", "client_addr", "backend_type", "wait_event_type", "wait_event", "waiting_mode",
                 "waiting_relation", "xact_age_s", "query_age_s", "state_age_s", "query"]


def _build_tree(raw: pd.DataFrame) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame(columns=_TREE_COLUMNS)
    raw = raw.copy()
    raw["pid"] = raw["pid"].astype(int)
    blocked_by = {int(r.pid): [int(p) for p in (r.blocked_by or [])] for r in raw.itertuples()}
    for pid in list(blocked_by):
        for b in blocked_by[pid]:
            blocked_by.setdefault(b, [])

    def roots_of(pid: int) -> tuple[int, int]:
        """(root pid, depth) following the first blocker; a cycle (deadlock not yet detected) roots at its min pid."""
        seen: list[int] = []
        cur = pid
        while blocked_by.get(cur):
            if cur in seen:
                cyc = seen[seen.index(cur):]
                return min(cyc), len(seen)
            seen.append(cur)
            cur = blocked_by[cur][0]
        return cur, len(seen)

    behind: dict[int, set[int]] = {p: set() for p in blocked_by}
    for pid in blocked_by:
        stack, seen = list(blocked_by[pid]), set()
        while stack:
            b = stack.pop()
            if b in seen or b == pid:
                continue
            seen.add(b)
            behind[b].add(pid)
            stack.extend(blocked_by.get(b, []))
    info = raw.set_index("pid")
    rows = []
    for pid in blocked_by:
        root, depth = roots_of(pid)
        base = info.loc[pid].to_dict() if pid in info.index else {}
        if pid == 0:
            base.update(state="prepared transaction", backend_type="prepared transaction")
        rows.append({**{c: base.get(c) for c in _TREE_COLUMNS}, "pid": pid, "root_pid": root, "depth": depth,
                     "blocked_by": blocked_by[pid], "blocked_count": len(behind[pid])})
    out = pd.DataFrame(rows, columns=_TREE_COLUMNS)
    return out.sort_values(["root_pid", "depth", "pid"], ignore_index=True)


def lock_queue(db: Database) -> pd.DataFrame | SourceError:
    """Every lock on a relation that has an AccessExclusiveLock granted or pending (DDL), in queue order.

    ``role``: ``holder`` (granted, blocks the DDL), ``ddl`` (the AccessExclusiveLock, waiting or running),
    ``queued`` (waiting behind the DDL). ``position`` orders waiters by wait start (PG 14+), else by pid.
    """
    q = _q(db)

    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        has_waitstart = cur.connection.info.server_version >= 140000
        waitstart = f"{_age('l.waitstart')}" if has_waitstart else "NULL::float8"
        order = "l.waitstart NULLS FIRST," if has_waitstart else ""
        df = _fetch_frame(cur, f"""
            WITH ael AS (
              SELECT DISTINCT relation FROM pg_locks
              WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
                AND pid IS DISTINCT FROM pg_backend_pid()
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            )
            SELECT l.relation::regclass::text AS relation, l.pid, l.mode, l.granted,
                   {waitstart} AS wait_s, a.state, a.wait_event_type, a.usename::text AS usename,
                   a.application_name, a.backend_type,
                   {_age('a.xact_start')} AS xact_age_s, {_age('a.query_start')} AS query_age_s,
                   left(a.query, {q}) AS query
            FROM pg_locks l JOIN ael USING (relation)
            LEFT JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'relation' AND l.pid IS DISTINCT FROM pg_backend_pid()
            ORDER BY 1, l.granted DESC, {order} l.pid
            LIMIT 2000""")
        return df
    got = db.read("lock_queue", work)
    if isinstance(got, SourceError):
        return got
    df = _redact_queries(got, "query")
    roles = []
    for r in df.itertuples():
        if r.mode == "AccessExclusiveLock":
            roles.append("ddl")
        elif r.granted:
            roles.append("holder")
        else:
            roles.append("queued")
    df["role"] = roles
    df["position"] = df.groupby("relation").cumcount() if len(df) else []
    cols = ["relation", "role", "position", "pid", "mode", "granted", "wait_s", "state", "wait_event_type",
            "usename", "application_name", "backend_type", "xact_age_s", "query_age_s", "query"]
    return df[cols]


def ddl_progress(db: Database) -> pd.DataFrame | SourceError:
    """Index builds (``pg_stat_progress_create_index``) and CLUSTER/VACUUM FULL (``..._cluster``) in flight."""
    q = _q(db)
    return db.frame("ddl_progress", f"""
        SELECT 'create_index' AS operation, p.pid, p.relid::regclass::text AS relation,
               nullif(p.index_relid, 0)::regclass::text AS index, p.command, p.phase,
               p.blocks_done AS done, p.blocks_total AS total, p.lockers_done, p.lockers_total,
               nullif(p.current_locker_pid, 0) AS waiting_for_pid,
               {_age('a.query_start')} AS running_s, left(a.query, {q}) AS query
        FROM pg_stat_progress_create_index p LEFT JOIN pg_stat_activity a USING (pid)
        UNION ALL
        SELECT 'cluster', p.pid, p.relid::regclass::text, nullif(p.cluster_index_relid, 0)::regclass::text,
               p.command, p.phase, p.heap_blks_scanned, p.heap_blks_total, NULL, NULL, NULL,
               {_age('a.query_start')}, left(a.query, {q})
        FROM pg_stat_progress_cluster p LEFT JOIN pg_stat_activity a USING (pid)
        LIMIT 200""")


# --------------------------------------------------------------------------- sessions

def idle_in_transaction(db: Database) -> pd.DataFrame | SourceError:
    """Sessions idle inside an open transaction, oldest first, with the locks they hold."""
    q = _q(db)
    got = db.frame("idle_in_transaction", f"""
        WITH held AS (
          SELECT pid, count(*)::int AS locks_held,
                 string_agg(DISTINCT relation::regclass::text, ', ')
                   FILTER (WHERE locktype = 'relation' AND relation >= 16384) AS relations
          FROM pg_locks WHERE granted AND pid IS NOT NULL GROUP BY pid
        )
        SELECT a.pid, a.usename::text AS usename, a.datname::text AS datname, a.application_name,
               a.client_addr::text AS client_addr, a.state,
               {_age('a.xact_start')} AS xact_age_s, {_age('a.state_change')} AS idle_s,
               a.backend_xid::text AS backend_xid, age(a.backend_xmin) AS xmin_age,
               coalesce(h.locks_held, 0) AS locks_held, left(h.relations, 300) AS relations,
               left(a.query, {q}) AS last_query
        FROM pg_stat_activity a LEFT JOIN held h USING (pid)
        WHERE a.state LIKE 'idle in transaction%%' AND a.pid <> pg_backend_pid()
          AND a.application_name IS DISTINCT FROM 'runbook-diagnostics'
        ORDER BY a.xact_start LIMIT {int(db.safety.row_limit)}""")
    return got if isinstance(got, SourceError) else _redact_queries(got, "last_query")


def long_running_queries(db: Database, min_seconds: float = 30.0) -> pd.DataFrame | SourceError:
    """Active statements running longer than ``min_seconds``, longest first."""
    q = _q(db)
    got = db.frame("long_running_queries", f"""
        SELECT pid, usename::text AS usename, datname::text AS datname, application_name,
               {_age('query_start')} AS query_age_s, {_age('xact_start')} AS xact_age_s,
               wait_event_type, wait_event, left(query, {q}) AS query
        FROM pg_stat_activity
        WHERE state = 'active' AND backend_type = 'client backend' AND {NOT_OURS}
          AND query_start < clock_timestamp() - make_interval(secs => %s)
        ORDER BY query_start LIMIT {int(db.safety.row_limit)}""", (float(min_seconds),))
    return got if isinstance(got, SourceError) else _redact_queries(got, "query")


def long_transactions(db: Database, min_seconds: float = 60.0) -> pd.DataFrame | SourceError:
    """Transactions open longer than ``min_seconds`` in any state, oldest first."""
    q = _q(db)
    got = db.frame("long_transactions", f"""
        SELECT pid, usename::text AS usename, datname::text AS datname, application_name, state,
               {_age('xact_start')} AS xact_age_s, {_age('state_change')} AS state_age_s,
               backend_xid::text AS backend_xid, age(backend_xmin) AS xmin_age, left(query, {q}) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND {NOT_OURS}
          AND xact_start < clock_timestamp() - make_interval(secs => %s)
        ORDER BY xact_start LIMIT {int(db.safety.row_limit)}""", (float(min_seconds),))
    return got if isinstance(got, SourceError) else _redact_queries(got, "query")


def xmin_horizon(db: Database) -> pd.DataFrame | SourceError:
    """What holds back the xmin horizon (and so vacuum): backends, replication slots, prepared transactions."""
    return db.frame("xmin_horizon", f"""
        SELECT * FROM (
          SELECT 'backend' AS holder_kind, pid::text AS holder, usename::text AS owner, state AS detail,
                 age(backend_xmin)::bigint AS xmin_age, {_age('xact_start')} AS held_s
          FROM pg_stat_activity WHERE backend_xmin IS NOT NULL AND {NOT_OURS}
          UNION ALL
          SELECT 'replication_slot', slot_name::text, slot_type,
                 CASE WHEN active THEN 'active' ELSE 'inactive' END,
                 greatest(age(xmin), age(catalog_xmin))::bigint, NULL::float8
          FROM pg_replication_slots WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL
          UNION ALL
          SELECT 'prepared_xact', gid, owner::text, database::text, age(transaction)::bigint, {_age('prepared')}
          FROM pg_prepared_xacts
        ) h ORDER BY xmin_age DESC NULLS LAST LIMIT 50""")


# --------------------------------------------------------------------------- statements and counters

# Canonical column -> names it has had in pg_stat_statements (first present wins), versions 1.6 (PG 12) to 1.11 (PG 17).
_STATEMENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "calls": ("calls",),
    "total_ms": ("total_exec_time", "total_time"),
    "plan_ms": ("total_plan_time",),
    "max_ms": ("max_exec_time", "max_time"),
    "rows": ("rows",),
    "shared_blks_hit": ("shared_blks_hit",),
    "shared_blks_read": ("shared_blks_read",),
    "temp_blks_written": ("temp_blks_written",),
    "io_read_ms": ("shared_blk_read_time", "blk_read_time"),
    "io_write_ms": ("shared_blk_write_time", "blk_write_time"),
    "wal_bytes": ("wal_bytes",),
}
_STATEMENT_KEY = ["queryid", "userid", "dbid", "toplevel"]
_OWN_UTILITY = r"^\s*(BEGIN READ ONLY|ROLLBACK|SET LOCAL (statement_timeout|lock_timeout) = \S+)\s*$"


def _statement_select(cur: psycopg.Cursor, db: Database) -> tuple[str, list[str]] | SourceError:
    if db._stmt_columns is not None:
        return db._stmt_columns
    _exec(cur, """SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                   WHERE e.extname = 'pg_stat_statements'""")
    row = cur.fetchone()
    if row is None:
        _exec(cur, "SELECT current_database(), current_setting('shared_preload_libraries')")
        dbname, preload = cur.fetchone()
        loaded = "pg_stat_statements" in (preload or "")
        hint = (f"run CREATE EXTENSION pg_stat_statements; in database {dbname}" if loaded else
                "add pg_stat_statements to shared_preload_libraries (restart), then CREATE EXTENSION pg_stat_statements")
        return SourceError(SOURCE, "statements", "missing_extension",
                           f"pg_stat_statements is not installed in database {dbname}", hint=hint)
    schema = row[0]
    _exec(cur, """SELECT attname FROM pg_attribute
                   WHERE attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                     WHERE n.nspname = %s AND c.relname = 'pg_stat_statements')
                     AND attnum > 0 AND NOT attisdropped""", (schema,))
    present = {r[0] for r in cur.fetchall()}
    parts = ["s.queryid", "s.userid", "s.dbid", "s.toplevel" if "toplevel" in present else "true AS toplevel"]
    for canonical, names in _STATEMENT_COLUMNS.items():
        name = next((n for n in names if n in present), None)
        parts.append(f"s.{name}::float8 AS {canonical}" if name else f"0::float8 AS {canonical}")
    parts += ["d.datname::text AS datname", "r.rolname::text AS usename",
              f"left(s.query, {_q(db)}) AS query"]
    ident = pg_sql.Identifier(schema).as_string(cur)
    # ours carry MARKER; statements an older version of this tool left under our role are plain utility commands
    sql = (f"SELECT {', '.join(parts)} FROM {ident}.pg_stat_statements s"
           " LEFT JOIN pg_database d ON d.oid = s.dbid LEFT JOIN pg_roles r ON r.oid = s.userid"
           f" WHERE s.query NOT LIKE '%%runbook-diagnostics%%'"
           f" AND NOT (r.rolname = current_user AND s.query ~ '{_OWN_UTILITY}')")
    db._stmt_columns = (sql, sorted(present))
    return db._stmt_columns


def statements(db: Database, limit: int = 20000) -> pd.DataFrame | SourceError:
    """Cumulative ``pg_stat_statements`` rows with version-independent column names.

    Columns: queryid, userid, dbid, toplevel, calls, total_ms, plan_ms, max_ms, rows, shared_blks_hit,
    shared_blks_read, temp_blks_written, io_read_ms, io_write_ms, wal_bytes, datname, usename, query,
    mean_ms. ``attrs['hidden']`` counts rows whose text this role may not see.
    """
    def work(cur: psycopg.Cursor) -> pd.DataFrame | SourceError:
        sel = _statement_select(cur, db)
        if isinstance(sel, SourceError):
            return sel
        sql, _ = sel
        try:
            return _fetch_frame(cur, f"{sql} ORDER BY total_ms DESC LIMIT {int(limit)}")
        except pg_errors.ObjectNotInPrerequisiteState as e:
            return SourceError(SOURCE, "statements", "missing_extension", _one_line(str(e)),
                               hint="add pg_stat_statements to shared_preload_libraries and restart")
    got = db.read("statements", work)
    if isinstance(got, SourceError):
        return got
    got["mean_ms"] = got["total_ms"] / got["calls"].where(got["calls"] > 0)
    hidden = int((got["query"] == "<insufficient privilege>").sum()) if len(got) else 0
    return _with_attrs(_redact_queries(got, "query"), hidden=hidden, taken_at=datetime.now(timezone.utc))


def top_statements(stats: pd.DataFrame | SourceError, by: str = "total_ms", limit: int = 10) -> pd.DataFrame | SourceError:
    """The ``limit`` statements with the largest ``by`` (cumulative frame or a delta frame)."""
    if isinstance(stats, SourceError):
        return stats
    if stats.empty:
        return stats
    out = stats.sort_values(by, ascending=False).head(limit).reset_index(drop=True)
    out.attrs.update(stats.attrs)
    return out


def statement_delta(before: pd.DataFrame | SourceError, after: pd.DataFrame | SourceError) -> pd.DataFrame | SourceError:
    """What each statement did between two :func:`statements` snapshots (calls, time, rows, I/O).

    A statement new in ``after`` counts from zero; counters that went down (reset) count from zero too.
    """
    if isinstance(after, SourceError):
        return after
    if isinstance(before, SourceError):
        return before
    counters = list(_STATEMENT_COLUMNS)
    counters.remove("max_ms")
    b = before.set_index(_STATEMENT_KEY)[counters]
    a = after.set_index(_STATEMENT_KEY)
    base = b.reindex(a.index).fillna(0.0)
    delta = a[counters] - base
    reset = (delta["calls"] < 0)
    delta.loc[reset, counters] = a.loc[reset, counters]
    out = delta.join(a[["datname", "usename", "query", "max_ms"]]).reset_index()
    out = out[out["calls"] > 0].copy()
    out["mean_ms"] = out["total_ms"] / out["calls"]
    t0, t1 = before.attrs.get("taken_at"), after.attrs.get("taken_at")
    seconds = (t1 - t0).total_seconds() if t0 and t1 else None
    out["calls_per_s"] = out["calls"] / seconds if seconds else float("nan")
    out = out.sort_values("total_ms", ascending=False, ignore_index=True)
    return _with_attrs(out, interval_s=seconds, hidden=after.attrs.get("hidden", 0))


def database_counters(db: Database) -> pd.DataFrame | SourceError:
    """``pg_stat_database`` counters per database (for cache-hit, temp-file and deadlock deltas)."""
    got = db.frame("database_counters", """
        SELECT datname::text AS datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit,
               temp_files, temp_bytes, deadlocks, conflicts, tup_returned, tup_fetched,
               tup_inserted, tup_updated, tup_deleted
        FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datname""")
    return got if isinstance(got, SourceError) else _with_attrs(got, taken_at=datetime.now(timezone.utc))


def counter_delta(before: pd.DataFrame | SourceError, after: pd.DataFrame | SourceError) -> pd.DataFrame | SourceError:
    """Per database over the interval: commits, rollbacks, cache-hit ratio, temp files/bytes, deadlocks."""
    if isinstance(after, SourceError):
        return after
    if isinstance(before, SourceError):
        return before
    cols = ["xact_commit", "xact_rollback", "blks_read", "blks_hit", "temp_files", "temp_bytes", "deadlocks",
            "conflicts"]
    a = after.set_index("datname")
    b = before.set_index("datname").reindex(a.index).fillna(0)
    d = (a[cols] - b[cols]).clip(lower=0)
    blocks = d["blks_hit"] + d["blks_read"]
    d["cache_hit_ratio"] = (d["blks_hit"] / blocks).where(blocks > 0)
    d["numbackends"] = a["numbackends"]
    t0, t1 = before.attrs.get("taken_at"), after.attrs.get("taken_at")
    seconds = (t1 - t0).total_seconds() if t0 and t1 else None
    return _with_attrs(d.reset_index(), interval_s=seconds)


@dataclass
class Snapshot:
    """Counters taken at one moment, to diff against a later snapshot."""

    statements: pd.DataFrame | SourceError
    counters: pd.DataFrame | SourceError
    taken_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def snapshot(db: Database) -> Snapshot:
    """Take ``pg_stat_statements`` and ``pg_stat_database`` counters now."""
    return Snapshot(statements=statements(db), counters=database_counters(db))


# --------------------------------------------------------------------------- replication

def replication_lag(db: Database) -> pd.DataFrame | SourceError:
    """Standbys of this primary (write/flush/replay lag), or this server's own replay delay if a standby."""
    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        _exec(cur, "SELECT pg_is_in_recovery()")
        standby = cur.fetchone()[0]
        if standby:
            df = _fetch_frame(cur, """
                SELECT 'this server (standby)' AS application_name, NULL::text AS client_addr,
                       CASE WHEN pg_is_wal_replay_paused() THEN 'replay paused' ELSE 'replaying' END AS state,
                       NULL::text AS sync_state, NULL::float8 AS write_lag_s, NULL::float8 AS flush_lag_s,
                       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
                       END::float8 AS replay_lag_s,
                       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS replay_lag_bytes""")
        else:
            df = _fetch_frame(cur, """
                SELECT application_name, client_addr::text AS client_addr, state, sync_state,
                       extract(epoch FROM write_lag)::float8 AS write_lag_s,
                       extract(epoch FROM flush_lag)::float8 AS flush_lag_s,
                       extract(epoch FROM replay_lag)::float8 AS replay_lag_s,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes
                FROM pg_stat_replication ORDER BY replay_lag_bytes DESC NULLS LAST LIMIT 100""")
        return _with_attrs(df, is_standby=bool(standby))
    return db.read("replication_lag", work)


def replication_slots(db: Database) -> pd.DataFrame | SourceError:
    """Replication slots with the WAL each retains, whether active, and the xmin it holds."""
    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        v13 = cur.connection.info.server_version >= 130000
        extra = "wal_status, safe_wal_size::bigint AS safe_wal_size" if v13 else \
            "NULL::text AS wal_status, NULL::bigint AS safe_wal_size"
        return _fetch_frame(cur, f"""
            SELECT slot_name::text AS slot_name, slot_type, plugin::text AS plugin, database::text AS database,
                   active, active_pid,
                   pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                        ELSE pg_current_wal_lsn() END, restart_lsn)::bigint AS retained_bytes,
                   {extra}, age(xmin) AS xmin_age, age(catalog_xmin) AS catalog_xmin_age
            FROM pg_replication_slots ORDER BY retained_bytes DESC NULLS LAST LIMIT 100""")
    return db.read("replication_slots", work)


# --------------------------------------------------------------------------- vacuum

def autovacuum_activity(db: Database) -> pd.DataFrame | SourceError:
    """Vacuums in progress (autovacuum and manual), their phase, duration and whether anti-wraparound.

    ``attrs``: autovacuum_max_workers.
    """
    q = _q(db)

    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        _exec(cur, "SELECT current_setting('autovacuum_max_workers')::int, current_setting('autovacuum')")
        workers, enabled = cur.fetchone()
        df = _fetch_frame(cur, f"""
            SELECT p.pid, p.datname::text AS datname, p.relid::regclass::text AS relation, p.phase,
                   p.heap_blks_total, p.heap_blks_scanned, p.heap_blks_vacuumed, p.index_vacuum_count,
                   {_age('a.xact_start')} AS running_s, a.backend_type,
                   coalesce(a.query LIKE '%%to prevent wraparound%%', false) AS anti_wraparound,
                   left(a.query, {q}) AS query
            FROM pg_stat_progress_vacuum p LEFT JOIN pg_stat_activity a USING (pid)
            ORDER BY running_s DESC NULLS LAST LIMIT 100""")
        return _with_attrs(df, autovacuum_max_workers=workers, autovacuum=enabled)
    return db.read("autovacuum_activity", work)


def wraparound_risk(db: Database, limit: int = 20) -> pd.DataFrame | SourceError:
    """Transaction-ID and multixact age per database and for the oldest tables, each table's TOAST table folded into
    it (a table is as old as its oldest part; ``oldest_part`` says ``toast`` when that is its TOAST table, which
    VACUUM of the table freezes too).

    ``pct_to_wraparound`` is xid age as a share of 2^31. ``attrs``: autovacuum_freeze_max_age.
    """
    def work(cur: psycopg.Cursor) -> pd.DataFrame:
        _exec(cur, "SELECT current_setting('autovacuum_freeze_max_age')::bigint")
        freeze_max = cur.fetchone()[0]
        df = _fetch_frame(cur, f"""
            (SELECT 'database' AS scope, datname::text AS name, NULL::text AS oldest_part,
                    age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS mxid_age
             FROM pg_database)
            UNION ALL
            (SELECT 'table', t.oid::regclass::text,
                    CASE WHEN x.oid IS NOT NULL AND age(x.relfrozenxid) > age(t.relfrozenxid) THEN 'toast'
                         ELSE 'table' END,
                    greatest(age(t.relfrozenxid), coalesce(age(x.relfrozenxid), 0))::bigint,
                    greatest(mxid_age(t.relminmxid), coalesce(mxid_age(x.relminmxid), 0))::bigint
             FROM pg_class t LEFT JOIN pg_class x ON x.oid = t.reltoastrelid AND x.relfrozenxid <> '0'::xid
             WHERE t.relkind IN ('r', 'm') AND t.relfrozenxid <> '0'::xid
             ORDER BY 4 DESC LIMIT {int(limit)})""")
        df["pct_to_wraparound"] = df["xid_age"].astype(float) / XID_WRAPAROUND_LIMIT * 100
        return _with_attrs(df, autovacuum_freeze_max_age=int(freeze_max))
    return db.read("wraparound_risk", work)


# --------------------------------------------------------------------------- schema health

def invalid_indexes(db: Database) -> pd.DataFrame | SourceError:
    """Indexes marked invalid (failed or in-progress CONCURRENTLY builds); size only for unlocked relations."""
    return db.frame("invalid_indexes", f"""
        WITH {_LOCKED_CTE}, building AS (SELECT index_relid FROM pg_stat_progress_create_index)
        SELECT n.nspname::text AS schema, c.relname::text AS index, t.relname::text AS table,
               i.indisready AS ready,
               (c.oid IN (SELECT index_relid FROM building)) AS build_in_progress,
               (c.oid IN (SELECT relation FROM locked) OR t.oid IN (SELECT relation FROM locked)) AS locked,
               CASE WHEN c.oid IN (SELECT relation FROM locked) OR t.oid IN (SELECT relation FROM locked)
                    THEN NULL ELSE pg_relation_size(c.oid) END AS size_bytes
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisvalid
        ORDER BY 1, 2 LIMIT {int(db.safety.row_limit)}""")


def sequence_exhaustion(db: Database) -> pd.DataFrame | SourceError:
    """Sequences with their last value against the maximum of the sequence and of the column it feeds.

    ``used_pct`` = last_value / min(sequence max, column type max). Sequences under (or owned by a table
    under) an AccessExclusiveLock are listed with ``locked`` and no value instead of being read.
    """
    got = db.frame("sequence_exhaustion", f"""
        WITH {_LOCKED_CTE}, owned AS (
          SELECT d.objid AS seq, d.refobjid AS tbl, a.attname::text AS column_name,
                 format_type(a.atttypid, NULL) AS column_type
          FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.deptype IN ('a', 'i')
        )
        SELECT n.nspname::text AS schema, c.relname::text AS sequence,
               o.tbl::regclass::text AS table, o.column_name, o.column_type,
               format_type(s.seqtypid, NULL) AS sequence_type, s.seqmax, s.seqincrement,
               (c.oid IN (SELECT relation FROM locked) OR coalesce(o.tbl IN (SELECT relation FROM locked), false))
                 AS locked,
               CASE WHEN c.oid IN (SELECT relation FROM locked)
                         OR coalesce(o.tbl IN (SELECT relation FROM locked), false) THEN NULL
                    WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE') THEN pg_sequence_last_value(c.oid)
               END AS last_value
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN owned o ON o.seq = c.oid
        LIMIT 5000""")
    if isinstance(got, SourceError):
        return got
    def limit(r: Any) -> float:
        col_max = INT_TYPE_MAX.get(r.column_type or "", None)
        return float(min(r.seqmax, col_max) if col_max else r.seqmax)
    got["effective_max"] = [limit(r) for r in got.itertuples()] if len(got) else []
    got["used_pct"] = (got["last_value"].astype(float) / got["effective_max"] * 100).where(got["seqincrement"] > 0)
    return got.sort_values("used_pct", ascending=False, na_position="last", ignore_index=True)
