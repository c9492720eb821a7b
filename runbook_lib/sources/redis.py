"""Redis evidence: INFO as typed frames, deltas over a sample, SLOWLOG, clients, key-space memory by pattern.

Only read commands are sent (INFO, SLOWLOG GET, CLIENT LIST, SCAN, TYPE, MEMORY USAGE ... SAMPLES 5,
LLEN/ZCARD/HMGET and bounded ranges); never KEYS, never a blocking command, never a write. Every call
has a socket timeout. Each check returns a DataFrame, or a SourceError that says what failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import pandas as pd
import redis as redis_lib
from redis.client import NEVER_DECODE

from ..config import Environment
from . import SourceError

SOURCE = "redis"
T = TypeVar("T")


@dataclass(frozen=True)
class RedisSafety:
    """Timeouts and bounds for every Redis call."""

    socket_timeout_s: float = 2.0
    connect_timeout_s: float = 2.0
    client_name: str = "runbook-diagnostics"
    scan_count: int = 2500  # keys per SCAN step: about a millisecond of server time, never 10


class RedisTarget:
    """A lazily opened, time-limited Redis client. A failed connection is remembered."""

    def __init__(self, url: str | None, *, safety: RedisSafety | None = None, unavailable: str = "") -> None:
        self._url = url
        self.safety = safety or RedisSafety()
        self._client: redis_lib.Redis | None = None
        self._failure: SourceError | None = None
        if url is None:
            self._failure = SourceError(SOURCE, "connect", "config", unavailable or "no Redis URL configured",
                                        hint="set the variable named by redis.url_env, or RUNBOOK_REDIS_URL")

    @classmethod
    def from_environment(cls, env: Environment | None, safety: RedisSafety | None = None,
                         missing: str = "no environment") -> RedisTarget:
        """The environment's Redis; the URL comes from an environment variable. Without an environment every
        check reports ``missing``."""
        url, origin = env.redis_url() if env is not None else (None, missing)
        return cls(url, safety=safety, unavailable=origin)

    def __repr__(self) -> str:  # never show the URL
        return f"<RedisTarget {'failed' if self._failure else ('open' if self._client else 'not connected')}>"

    def client(self) -> redis_lib.Redis | SourceError:
        """The connected client, or the SourceError that stopped it."""
        if self._failure is not None:
            return self._failure
        if self._client is None:
            s = self.safety
            try:
                c = redis_lib.Redis.from_url(self._url or "", socket_timeout=s.socket_timeout_s,
                                             socket_connect_timeout=s.connect_timeout_s, decode_responses=True,
                                             encoding_errors="replace", client_name=s.client_name,
                                             retry_on_timeout=False)
                c.ping()
            except redis_lib.RedisError as e:
                self._failure = _classify(e, "connect")
                return self._failure
            self._client = c
        return self._client

    def read(self, check: str, work: Callable[[redis_lib.Redis], T]) -> T | SourceError:
        """Run ``work`` with the client; any Redis error becomes a SourceError for ``check``."""
        c = self.client()
        if isinstance(c, SourceError):
            return SourceError(c.source, check, c.kind, c.message, c.hint)
        try:
            return work(c)
        except redis_lib.RedisError as e:
            return _classify(e, check)

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _classify(e: Exception, check: str) -> SourceError:
    msg = str(e) or type(e).__name__
    if isinstance(e, redis_lib.AuthenticationError) or "WRONGPASS" in msg or "NOAUTH" in msg:
        return SourceError(SOURCE, check, "permission", msg, hint="check the password/user in the URL variable")
    if "NOPERM" in msg:
        return SourceError(SOURCE, check, "permission", msg,
                           hint="the ACL user lacks a read command this check needs (see README: Redis ACL)")
    if isinstance(e, redis_lib.TimeoutError):
        return SourceError(SOURCE, check, "timeout", msg, hint="Redis did not answer in time; it may be saturated")
    if isinstance(e, redis_lib.ConnectionError):
        return SourceError(SOURCE, check, "unreachable", msg, hint="is Redis up and reachable from here?")
    return SourceError(SOURCE, check, "error", msg)


# --------------------------------------------------------------------------- INFO

def _num(v: Any) -> Any:
    if isinstance(v, (int, float)):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v


@dataclass
class ServerInfo:
    """INFO at one moment, flattened (``section.field``), with the time it was taken."""

    values: dict[str, Any]
    taken_at: datetime

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def server_info(target: RedisTarget) -> ServerInfo | SourceError:
    """INFO everything, flattened to ``field: value`` with numbers parsed."""
    def work(c: redis_lib.Redis) -> ServerInfo:
        raw = c.info("everything")
        return ServerInfo({k: _num(v) for k, v in raw.items() if not isinstance(v, dict)} |
                          {f"{k}.{kk}": _num(vv) for k, v in raw.items() if isinstance(v, dict)
                           for kk, vv in v.items()}, datetime.now(timezone.utc))
    return target.read("info", work)


def memory(info: ServerInfo | SourceError) -> pd.DataFrame | SourceError:
    """Used memory against maxmemory (system memory when maxmemory is 0), policy, fragmentation.

    One row; ``limit_bytes`` is what the percentage is measured against and ``limit_kind`` says which.
    """
    if isinstance(info, SourceError):
        return info
    used = int(info.get("used_memory", 0))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    system = int(info.get("total_system_memory", 0) or 0)
    limit, kind = (maxmemory, "maxmemory") if maxmemory else (system, "system memory (maxmemory is 0)")
    row = {
        "used_bytes": used, "peak_bytes": int(info.get("used_memory_peak", 0)),
        "rss_bytes": int(info.get("used_memory_rss", 0)), "limit_bytes": limit, "limit_kind": kind,
        "used_pct": 100.0 * used / limit if limit else float("nan"),
        "maxmemory_policy": info.get("maxmemory_policy", "?"),
        "fragmentation_ratio": float(info.get("mem_fragmentation_ratio", 0) or 0),
        "evicted_keys_total": int(info.get("evicted_keys", 0)),
        "latest_fork_usec": int(info.get("latest_fork_usec", 0)),
        "rdb_last_save_age_s": (time.time() - int(info.get("rdb_last_save_time", 0)))
        if info.get("rdb_last_save_time") else float("nan"),
        "rdb_changes_since_last_save": int(info.get("rdb_changes_since_last_save", 0)),
        "aof_enabled": bool(info.get("aof_enabled", 0)),
        "redis_version": str(info.get("redis_version", "?")),
        # writes refused for memory since start (INFO errorstats, Redis 6.2+); None where the server does not say
        "oom_rejected_total": oom_rejections(info),
    }
    return pd.DataFrame([row])


def oom_rejections(info: ServerInfo) -> int | None:
    """Commands refused with ``-OOM`` since the server started or CONFIG RESETSTAT (``errorstat_OOM``); 0 when
    errorstats exist but hold no OOM entry, None when the server keeps no errorstats (before Redis 6.2)."""
    count = info.get("errorstat_OOM.count")
    if count is not None:
        return int(count)
    return 0 if "total_error_replies" in info.values else None


def clients_summary(info: ServerInfo | SourceError) -> pd.DataFrame | SourceError:
    """Connected and blocked clients against maxclients, rejected connections (total), ops/sec."""
    if isinstance(info, SourceError):
        return info
    connected = int(info.get("connected_clients", 0))
    maxclients = int(info.get("maxclients", 0) or 0)
    return pd.DataFrame([{
        "connected_clients": connected, "blocked_clients": int(info.get("blocked_clients", 0)),
        "maxclients": maxclients, "clients_pct": 100.0 * connected / maxclients if maxclients else float("nan"),
        "rejected_connections_total": int(info.get("rejected_connections", 0)),
        "instantaneous_ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
    }])


def info_delta(before: ServerInfo | SourceError, after: ServerInfo | SourceError) -> pd.DataFrame | SourceError:
    """Counters over the sample interval: evicted/expired keys, rejected connections, commands, net I/O."""
    if isinstance(after, SourceError):
        return after
    if isinstance(before, SourceError):
        return before
    seconds = max((after.taken_at - before.taken_at).total_seconds(), 1e-6)
    row: dict[str, Any] = {"interval_s": seconds}
    for key in ("evicted_keys", "expired_keys", "rejected_connections", "total_commands_processed",
                "total_connections_received", "keyspace_hits", "keyspace_misses", "total_net_input_bytes",
                "total_net_output_bytes"):
        d = int(after.get(key, 0) or 0) - int(before.get(key, 0) or 0)
        row[key] = max(d, 0)
    row["ops_per_sec"] = row["total_commands_processed"] / seconds
    b, a = oom_rejections(before), oom_rejections(after)
    row["oom_rejected"] = max(a - b, 0) if a is not None and b is not None else None
    row["oom_rejected_before"] = b
    row["started_at"], row["ended_at"] = before.taken_at, after.taken_at
    return pd.DataFrame([row])


def slowlog(target: RedisTarget, count: int = 25) -> pd.DataFrame | SourceError:
    """The most recent SLOWLOG entries: when, how long, which command (arguments truncated)."""
    def work(c: redis_lib.Redis) -> pd.DataFrame:
        rows = []
        for e in c.slowlog_get(count):
            cmd = e.get("command", b"")
            cmd = cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)
            rows.append({"id": e.get("id"), "start": datetime.fromtimestamp(e.get("start_time", 0), timezone.utc),
                         "duration_ms": e.get("duration", 0) / 1000.0, "command": cmd[:200],
                         "client_name": e.get("client_name", "")})
        return pd.DataFrame(rows, columns=["id", "start", "duration_ms", "command", "client_name"])
    return target.read("slowlog", work)


_BULLMQ_WORKER = re.compile(r"^(?P<prefix>.+?):(?P<queue_b64>[A-Za-z0-9+/=]+)(?::w:(?P<worker>.*))?$")


def clients(target: RedisTarget) -> pd.DataFrame | SourceError:
    """CLIENT LIST grouped by client name and last command: count, blocked (B*POP), idle and age.

    BullMQ workers name themselves ``<prefix>:<base64 queue>:w:<name>``; ``queue`` is decoded from that.
    """
    def work(c: redis_lib.Redis) -> pd.DataFrame:
        rows = []
        for cl in c.client_list():
            if cl.get("name") == target.safety.client_name:
                continue
            name = cl.get("name", "")
            rows.append({"name": name or "(unnamed)", "cmd": cl.get("cmd", ""),
                         "blocked": "b" in cl.get("flags", "") or cl.get("cmd", "").lower() in
                         ("bzpopmin", "brpop", "blpop", "brpoplpush", "blmove", "bzpopmax", "xread"),
                         "idle_s": int(cl.get("idle", 0)), "age_s": int(cl.get("age", 0)),
                         "queue": bullmq_queue_of(name)})
        df = pd.DataFrame(rows, columns=["name", "cmd", "blocked", "idle_s", "age_s", "queue"])
        if df.empty:
            return pd.DataFrame(columns=["name", "queue", "cmd", "clients", "blocked", "max_idle_s", "max_age_s"])
        return (df.groupby(["name", "cmd"], as_index=False, dropna=False)
                .agg(queue=("queue", "first"), clients=("name", "size"), blocked=("blocked", "sum"),
                     max_idle_s=("idle_s", "max"), max_age_s=("age_s", "max"))
                .sort_values("clients", ascending=False, ignore_index=True))
    return target.read("clients", work)


def bullmq_queue_of(client_name: str) -> str | None:
    """Queue name from a BullMQ connection name ``<prefix>:<base64 queue>[:w:<worker>]``, else None."""
    import base64
    import binascii

    m = _BULLMQ_WORKER.match(client_name or "")
    if not m:
        # Python BullMQ names connections after the queue itself: <prefix>:<queue>[:w:<worker>]
        return client_name.split(":w:")[0] if ":w:" in (client_name or "") else None
    try:
        decoded = base64.b64decode(m.group("queue_b64"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return client_name.split(":w:")[0] if ":w:" in client_name else None
    return f"{m.group('prefix')}:{decoded}" if decoded.isprintable() else None


# --------------------------------------------------------------------------- key space

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T[\d:.]+Z?)?")
# a whole segment that is an id: digits, long hex, or a long token with at least one digit
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F]{16,}|(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{20,})$")
_EMBEDDED_NUMBER = re.compile(r"\d{3,}")


def key_pattern(key: str) -> str:
    """Group a key with its kind: id-like segments become ``*`` (``bull:emails:42:lock`` -> ``bull:emails:*:lock``)."""
    out = []
    for p in key.split(":"):
        p = _DATE.sub("*", _UUID.sub("*", p))
        out.append("*" if p != "*" and _ID_SEGMENT.match(p) else _EMBEDDED_NUMBER.sub("*", p))
    return ":".join(out)


def keyspace_memory(target: RedisTarget, *, budget_s: float = 5.0, sample_per_pattern: int = 200,
                    max_keys: int = 5_000_000) -> pd.DataFrame | SourceError:
    """Memory by key pattern from SCAN + pipelined TYPE and ``MEMORY USAGE key SAMPLES 5``.

    Every key seen is counted under its pattern; memory is measured for up to ``sample_per_pattern``
    keys of each pattern and extrapolated to its count. When the time budget ends before SCAN does,
    counts are scaled to DBSIZE (``attrs['complete']`` is False, ``attrs['scanned_fraction']`` says how much).
    Keys are grouped a SCAN batch at a time in Arrow (no Python work per key), so grouping and sampling cost
    less than the scan itself.
    """
    def work(c: redis_lib.Redis) -> pd.DataFrame:
        deadline = time.monotonic() + budget_s
        dbsize = int(c.dbsize())
        tally = _PatternTally(sample_per_pattern)
        cursor, seen, complete = 0, 0, False
        while True:
            cursor, keys = raw_scan(c, cursor, target.safety.scan_count)
            seen += len(keys)
            to_measure = tally.add(keys)
            if to_measure:
                pipe = c.pipeline(transaction=False)
                for k, _ in to_measure:
                    pipe.type(k)
                    pipe.execute_command("MEMORY", "USAGE", k, "SAMPLES", 5)
                tally.measured(to_measure, pipe.execute(raise_on_error=False))
            if cursor == 0:
                complete = True
                break
            if time.monotonic() > deadline or seen >= max_keys:
                break
        scale = 1.0 if complete or not seen else max(dbsize / seen, 1.0)
        df = tally.frame(scale, complete)
        df.attrs.update(complete=complete, keys_scanned=seen, dbsize=dbsize,
                        scanned_fraction=(seen / dbsize) if dbsize else 1.0)
        return df
    return target.read("keyspace_memory", work)


def raw_scan(c: redis_lib.Redis, cursor: int, count: int) -> tuple[int, list[bytes]]:
    """One SCAN step returning the keys as the bytes hiredis parsed (no decoding per key)."""
    cursor, keys = c.execute_command("SCAN", cursor, "COUNT", count, **{NEVER_DECODE: True})
    return int(cursor), keys


def _shape_groups(keys: list[bytes]) -> tuple[Any, list[tuple[str, int, int]]]:
    """Group a batch of keys by shape (each run of three or more digits replaced by ``#``) with no Python work per
    key: a key's trailing run of digits is cut in Arrow, so ``bull:emails:8812`` and ``bull:emails:17`` differ but
    every ``bull:emails:<3+ digits>`` is one group; only the distinct remainders go through the regular expression.
    Returns (group code per key, [(shape, index of its first key, keys in it)] indexed by code)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(keys, type=pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:  # a key that is not UTF-8: read this batch as text with replacement characters
        arr = pa.array([k.decode("utf-8", "replace") for k in keys], type=pa.string())
    trimmed = pc.utf8_rtrim(arr, characters="0123456789")
    long_tail = (pc.binary_length(arr).to_numpy(zero_copy_only=False)
                 - pc.binary_length(trimmed).to_numpy(zero_copy_only=False)) >= 3
    base = pc.if_else(pa.array(long_tail), trimmed, arr).dictionary_encode()
    codes = base.indices.to_numpy(zero_copy_only=False).astype(np.int64) * 2 + long_tail
    counts = np.bincount(codes)
    remainders = base.dictionary.to_pylist()
    groups: list[tuple[str, int, int]] = [("", 0, 0)] * len(counts)
    for code in np.flatnonzero(counts).tolist():
        shape = _EMBEDDED_NUMBER.sub("#", remainders[code // 2]) + ("#" if code % 2 else "")
        groups[code] = (shape, int(np.argmax(codes == code)), int(counts[code]))
    return codes, groups


class _PatternTally:
    """Keys counted by pattern a batch at a time, and the keys still to measure per pattern.

    Keys of one kind share their shape (runs of three or more digits replaced), so the pattern is computed once
    per shape (see :func:`_shape_groups`).
    """

    def __init__(self, sample_per_pattern: int) -> None:
        self.sample_per_pattern = sample_per_pattern
        self.counts: dict[str, int] = {}
        self.sampled: dict[str, list[int]] = {}
        self.types: dict[str, str] = {}
        self.pending: dict[str, int] = {}
        self.cache: dict[str, str] = {}

    def add(self, keys: list[bytes]) -> list[tuple[bytes, str]]:
        """Count ``keys``; return the (key, pattern) pairs to measure."""
        if not keys:
            return []
        import numpy as np

        codes, groups = _shape_groups(keys)
        out: list[tuple[bytes, str]] = []
        for code, (shape, first, n) in enumerate(groups):
            if not n:
                continue
            pat = self.cache.get(shape)
            if pat is None:
                pat = key_pattern(keys[first].decode("utf-8", "replace"))
                if len(self.cache) < 100_000:
                    self.cache[shape] = pat
            self.counts[pat] = self.counts.get(pat, 0) + n
            need = self.sample_per_pattern - len(self.sampled.setdefault(pat, [])) - self.pending.get(pat, 0)
            if need > 0:
                picked = [keys[i] for i in np.flatnonzero(codes == code)[:need]]
                self.pending[pat] = self.pending.get(pat, 0) + len(picked)
                out += [(k, pat) for k in picked]
        return out

    def measured(self, asked: list[tuple[bytes, str]], results: list[Any]) -> None:
        """Record TYPE and MEMORY USAGE answers (a key deleted or changed mid-scan gives None or an error)."""
        for i, (_, pat) in enumerate(asked):
            self.pending[pat] -= 1
            kind, mem = results[2 * i], results[2 * i + 1]
            if isinstance(mem, int):
                self.sampled[pat].append(mem)
                if isinstance(kind, str) and kind != "none":
                    self.types.setdefault(pat, kind)

    def frame(self, scale: float, complete: bool) -> pd.DataFrame:
        """One row per pattern: keys (scaled), sampled, mean and total bytes, share of the total."""
        rows = []
        for pat, n in self.counts.items():
            mems = self.sampled.get(pat) or []
            mean = sum(mems) / len(mems) if mems else 0.0
            est_keys = n * scale
            rows.append({"pattern": pat, "type": self.types.get(pat, "?"), "keys": int(round(est_keys)),
                         "sampled": len(mems), "mean_bytes": mean, "bytes": int(mean * est_keys),
                         "exact": complete and len(mems) == n})
        df = pd.DataFrame(rows, columns=["pattern", "type", "keys", "sampled", "mean_bytes", "bytes", "exact"])
        df = df.sort_values("bytes", ascending=False, ignore_index=True)
        total = float(df["bytes"].sum()) or 1.0
        df["share_pct"] = 100.0 * df["bytes"] / total
        return df
