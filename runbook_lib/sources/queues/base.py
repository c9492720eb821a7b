"""What every queue adapter shares: the queue record, the rows it returns, CLIENT LIST entries, the liveness verdict.

An adapter (one module per queue library) implements :class:`QueueAdapter` with plain read commands only:
LLEN/ZCARD/LRANGE/ZRANGE with bounds, HMGET of named fields, SCAN, PTTL, XREVRANGE with COUNT. It never runs a
library's scripts and never writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pandas as pd
import redis as redis_lib

Verdict = Literal["alive", "none", "unknown"]

DEPTH_COLUMNS = ["system", "queue", "waiting", "paused", "active", "prioritized", "delayed", "waiting_children",
                 "completed", "failed", "scheduled", "retry", "dead", "unacked", "backlog", "is_paused",
                 "oldest_waiting_age_s", "created_total", "finished_total"]
STUCK_COLUMNS = ["system", "queue", "job_id", "kind", "age_s", "name", "detail"]
FAILURE_COLUMNS = ["system", "queue", "reason", "count", "last_failed_at", "example_job"]


@dataclass(frozen=True)
class Queue:
    """One queue: the library that made it, its display name, and the key prefix its state lives under."""

    system: str
    name: str
    base: str


@dataclass(frozen=True)
class Client:
    """One CLIENT LIST entry, the fields liveness needs."""

    id: str
    name: str
    cmd: str
    flags: str
    idle_s: int
    age_s: int

    @property
    def blocked(self) -> bool:
        """Blocked in a blocking command right now (flag ``b``)."""
        return "b" in self.flags

    @classmethod
    def from_redis(cls, entry: dict[str, Any]) -> Client:
        return cls(str(entry.get("id", "")), entry.get("name") or "", (entry.get("cmd") or "").lower(),
                   entry.get("flags") or "", int(entry.get("idle", 0) or 0), int(entry.get("age", 0) or 0))


@dataclass(frozen=True)
class Moment:
    """What Redis showed at one moment: when, and every client connected except our own (None where the server
    refuses CLIENT LIST, as some managed services do: then no connection can be seen, for or against a consumer)."""

    at: float
    clients: tuple[Client, ...] | None

    def client_names(self) -> set[str]:
        return {cl.name for cl in self.clients or () if cl.name}


@dataclass(frozen=True)
class Progress:
    """Work a queue's consumers finished during the sample, from the depth samples.

    ``finished`` is the number of jobs that left the queue's live states (completed or failed), or None where the
    library keeps no counter that tells; ``net`` is the backlog's change; ``seconds`` the sample's length.
    """

    finished: float | None
    net: int
    seconds: float

    @property
    def consumed(self) -> bool | None:
        """True when something was consumed, False when nothing was, None when the evidence cannot tell."""
        if self.finished is not None and self.finished > 0:
            return True
        if self.net < 0:
            return True
        if self.finished is not None and self.seconds > 0:
            return False
        return None


@dataclass(frozen=True)
class Liveness:
    """Is anything consuming this queue, and which evidence decided it.

    ``verdict``: ``alive`` (live evidence: an open connection, a heartbeat seen fresh or advancing, jobs taken
    during the sample), ``none`` (evidence that would show a consumer shows none), ``unknown`` (nothing here can
    tell). ``supporting`` is what cannot decide on its own (keys with a TTL that a dead worker leaves behind);
    ``holdup`` what keeps connected consumers from taking jobs where the library shows it (paused, rate limited,
    busy with long-running jobs).
    """

    verdict: Verdict
    decided_by: str
    live_workers: int = 0
    stale_workers: int = 0
    blocked_clients: int = 0
    supporting: str = ""
    holdup: str = ""


class QueueAdapter(Protocol):
    """One queue library. Every method takes an open client and returns plain rows; errors propagate to the caller,
    which turns them into a SourceError."""

    system: str

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        """The library's queues in this Redis (SCAN within ``deadline``, a ``time.monotonic()`` value)."""

    def depths(self, c: redis_lib.Redis, queues: list[Queue]) -> list[dict[str, Any]]:
        """One :data:`DEPTH_COLUMNS` row per queue, counted as the library counts."""

    def snapshot(self, c: redis_lib.Redis, queues: list[Queue], moment: Moment,
                 previous: dict[Queue, Any] | None) -> dict[Queue, Any]:
        """Liveness evidence per queue at ``moment`` (opaque to everyone but :meth:`liveness`); ``previous`` is the
        snapshot at the start of the sample, when this one ends it."""

    def liveness(self, queue: Queue, first: Any, last: Any, progress: Progress | None,
                 stale_after_s: float) -> Liveness:
        """The verdict from the evidence at the start and the end of the sample."""

    def stuck_jobs(self, c: redis_lib.Redis, queues: list[Queue], limits: StuckLimits,
                   moment: Moment) -> list[dict[str, Any]]:
        """:data:`STUCK_COLUMNS` rows: jobs that are not moving, bounded by ``limits.per_queue``."""

    def failures(self, c: redis_lib.Redis, queues: list[Queue], limit: int) -> list[dict[str, Any]]:
        """Recent failures, one row each: system, queue, reason, job, at."""


@dataclass(frozen=True)
class StuckLimits:
    """When a job counts as stuck, and how many to read per queue."""

    hung_after_s: float = 600.0
    overdue_after_s: float = 60.0
    celery_visibility_timeout_s: float = 3600.0
    stale_after_s: float = 60.0
    per_queue: int = 1000


# --------------------------------------------------------------------------- helpers adapters share

def now_ms() -> int:
    return int(time.time() * 1000)


def scan(c: redis_lib.Redis, match: str, deadline: float, type_: str | None = None) -> list[str]:
    """Keys matching ``match`` (SCAN, COUNT 5000), stopping at ``deadline``."""
    out: list[str] = []
    cursor = 0
    while True:
        cursor, keys = c.scan(cursor=cursor, match=match, count=5000, _type=type_)
        out.extend(keys)
        if cursor == 0 or time.monotonic() > deadline:
            return out


def depth_row(q: Queue, **counts: Any) -> dict[str, Any]:
    """A :data:`DEPTH_COLUMNS` row with zeros for what the library does not keep."""
    row: dict[str, Any] = {c: 0 for c in DEPTH_COLUMNS}
    row.update(system=q.system, queue=q.name, is_paused=False, oldest_waiting_age_s=float("nan"),
               created_total=None, finished_total=None)
    row.update(counts)
    return row


def ints(values: Iterable[Any]) -> list[int]:
    return [int(v or 0) for v in values]


def utc_epoch(text: Any) -> float | None:
    """Seconds since the epoch from an ISO time (naive means UTC), or None."""
    if not text:
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return ts.timestamp()


def recent_failures(c: redis_lib.Redis, q: Queue, failed_key: str, job_key: Callable[[str], str],
                    fields: tuple[str, str], reason: Callable[[Any], str], at: Callable[[Any], Any],
                    limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` failures in the sorted set ``failed_key``, each job's reason and time read with one
    pipelined HMGET of ``fields`` (reason field, time field); rows: system, queue, reason, job, at."""
    ids = c.zrevrange(failed_key, 0, limit - 1)
    if not ids:
        return []
    pipe = c.pipeline(transaction=False)
    for j in ids:
        pipe.hmget(job_key(j), list(fields))
    return [{"system": q.system, "queue": q.name, "reason": reason(res[0]), "job": j,
             "at": at(res[1]) if res[1] else pd.NaT}
            for j, res in zip(ids, pipe.execute(raise_on_error=False)) if not isinstance(res, Exception)]


def first_line(text: Any) -> str:
    from ...redact import redact

    return redact(str(text or "").strip().splitlines()[0][:200]) if text else "(no reason recorded)"


def last_line(text: Any) -> str:
    from ...redact import redact

    lines = [ln for ln in str(text or "").strip().splitlines() if ln.strip()]
    return redact(lines[-1][:200]) if lines else "(no traceback recorded)"
