"""BullMQ (Node.js and its Python port): queues found by their ``<prefix>:<name>:meta`` hash.

Counts follow BullMQ's ``getCounts`` script (``commands/getCounts-1.lua``): LLEN for wait, paused and active, less a
trailing ``0:`` marker in wait/paused, ZCARD for the sorted sets; never its marker pop. A queue's workers are the
connections BullMQ's own ``Queue.getWorkers`` lists: named ``<prefix>:<base64 name>`` or
``<prefix>:<base64 name>:w:<worker name>`` (Node.js), ``<prefix>:<name>[:w:<worker name>]`` (Python). Jobs a worker
finishes leave ``active``/``completed``/``failed`` entries in the ``events`` stream; those, read with a bounded XRANGE,
show consumption a dead worker cannot fake. ``stalled-check`` and job locks carry a TTL: a killed worker leaves them
behind for up to ``stalledInterval``/``lockDuration``, so they only ever support a verdict.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from .base import (Client, Liveness, Moment, Progress, Queue, StuckLimits, depth_row, first_line, ints, now_ms,
                   recent_failures, scan)

WORKER_EVENTS = frozenset({"active", "completed", "failed", "progress", "stalled", "retries-exhausted"})
FETCH_COMMANDS = frozenset({"bzpopmin", "brpoplpush", "blmove", "brpop"})
EVENTS_READ_LIMIT = 2000
BULL3_META_FIELDS = frozenset({"paused"})  # what Bull 3/4 writes to <base>:meta, "for forwards compatibility"


@dataclass(frozen=True)
class BullEvidence:
    """A BullMQ/Bull queue's liveness evidence at one moment."""

    workers: tuple[Client, ...] | None  # connections named for the queue's workers; None: CLIENT LIST refused
    stalled_check_ms: int | None        # PTTL of stalled-check (None when absent)
    locks: int                          # of the ten oldest active jobs, how many hold a lock
    active: int
    oldest_active_s: float | None       # longest-running of the active jobs
    limiter_ms: int | None              # PTTL of the rate limiter key while it is engaged
    paused: bool
    last_event: str | None              # id of the newest entry in the events stream (BullMQ only)
    worker_events: int | None = None    # worker-side events since the previous moment (BullMQ only)


def names_for(base: str) -> set[str]:
    """The connection names a queue's workers carry, without the ``:w:<worker>`` suffix."""
    prefix, _, name = base.rpartition(":")
    return {base, f"{prefix}:{base64.b64encode(name.encode()).decode()}"}


def workers_of(base: str, clients: tuple[Client, ...] | None) -> tuple[Client, ...] | None:
    """Connections whose name says they are a worker of this queue (BullMQ's ``getWorkers`` matcher)."""
    if clients is None:
        return None
    wanted = names_for(base)
    return tuple(cl for cl in clients if cl.name.split(":w:")[0] in wanted)


class BullMQ:
    """The BullMQ adapter (see the module docstring)."""

    system = "bullmq"
    label = "BullMQ"
    has_events = True

    # ------------------------------------------------------------------ discovery and depths

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        """Every ``*:meta`` hash BullMQ initialised (``opts.maxLenEvents``...); Bull 3/4 writes only ``paused`` there."""
        metas = scan(c, "*:meta", deadline, "hash")
        pipe = c.pipeline(transaction=False)
        for k in metas:
            pipe.hkeys(k)
        return [Queue(self.system, k[: -len(":meta")], k[: -len(":meta")])
                for k, fields in zip(metas, pipe.execute(raise_on_error=False) if metas else [])
                if isinstance(fields, list) and set(fields) - BULL3_META_FIELDS]

    def depths(self, c: redis_lib.Redis, queues: list[Queue]) -> list[dict[str, Any]]:
        pipe = c.pipeline(transaction=False)
        for q in queues:
            self._depth_commands(pipe, q.base)
        results = pipe.execute(raise_on_error=False)
        width = len(results) // len(queues) if queues else 0
        rows = [self._depth_row(q, [None if isinstance(r, Exception) else r for r in results[i * width:(i + 1) * width]])
                for i, q in enumerate(queues)]
        self._oldest_waiting(c, queues, rows)
        return rows

    def _depth_commands(self, pipe: Any, b: str) -> None:
        pipe.llen(f"{b}:wait"), pipe.lindex(f"{b}:wait", -1)
        pipe.llen(f"{b}:paused"), pipe.lindex(f"{b}:paused", -1)
        pipe.llen(f"{b}:active")
        for s in ("prioritized", "delayed", "waiting-children", "completed", "failed"):
            pipe.zcard(f"{b}:{s}")
        pipe.hget(f"{b}:meta", "paused")
        pipe.get(f"{b}:id")

    def _depth_row(self, q: Queue, r: list[Any]) -> dict[str, Any]:
        waiting, paused = _less_marker(r[0], r[1]), _less_marker(r[2], r[3])
        active, prioritized, delayed, children, completed, failed = ints(r[4:10])
        return depth_row(q, waiting=waiting, paused=paused, active=active, prioritized=prioritized, delayed=delayed,
                         waiting_children=children, completed=completed, failed=failed,
                         is_paused=r[10] in ("1", 1, "true"), backlog=waiting + paused + prioritized,
                         created_total=int(r[11]) if r[11] else None)

    def _oldest_waiting(self, c: redis_lib.Redis, queues: list[Queue], rows: list[dict[str, Any]]) -> None:
        """Age of the job at the consuming end of ``wait`` (LPUSHed, taken from the right; skip a marker)."""
        pipe = c.pipeline(transaction=False)
        for q in queues:
            pipe.lrange(f"{q.base}:wait", -2, -1)
        heads = pipe.execute(raise_on_error=False)
        pipe = c.pipeline(transaction=False)
        asked = []
        for row, q, head in zip(rows, queues, heads):
            ids = [] if isinstance(head, Exception) else [h for h in head or [] if not str(h).startswith("0:")]
            if ids:
                pipe.hget(f"{q.base}:{ids[-1]}", "timestamp")
                asked.append(row)
        now = now_ms()
        for row, ts in zip(asked, pipe.execute(raise_on_error=False) if asked else []):
            if ts and not isinstance(ts, Exception):
                row["oldest_waiting_age_s"] = max(now - int(ts), 0) / 1000.0

    # ------------------------------------------------------------------ liveness

    def snapshot(self, c: redis_lib.Redis, queues: list[Queue], moment: Moment,
                 previous: dict[Queue, Any] | None) -> dict[Queue, BullEvidence]:
        """Two round trips whatever the number of queues: the queues' keys, then their active jobs' locks."""
        pipe = c.pipeline(transaction=False)
        for q in queues:
            pipe.pttl(f"{q.base}:stalled-check"), pipe.pttl(f"{q.base}:limiter")
            pipe.lrange(f"{q.base}:active", -10, -1), pipe.llen(f"{q.base}:active")  # the oldest active jobs
            self._paused_command(pipe, q.base)
            before = previous.get(q) if previous else None
            if not self.has_events:
                pipe.echo("")
            elif before is None or before.last_event is None:
                pipe.xrevrange(f"{q.base}:events", count=1)
            else:
                pipe.xrange(f"{q.base}:events", min=before.last_event, count=EVENTS_READ_LIMIT)
        res = pipe.execute(raise_on_error=False)
        heads = [[] if isinstance(h, Exception) else h or [] for h in res[2::6]]
        locks = self._locks(c, queues, heads)
        out = {}
        for i, q in enumerate(queues):
            check, limiter, _, active, paused, events = res[6 * i:6 * i + 6]
            before = previous.get(q) if previous else None
            newest, count = self._events(events, before.last_event if before is not None else None)
            out[q] = BullEvidence(
                workers=workers_of(q.base, moment.clients), stalled_check_ms=_ttl(check), locks=locks[i][0],
                active=0 if isinstance(active, Exception) else int(active or 0), oldest_active_s=locks[i][1],
                limiter_ms=_ttl(limiter), paused=self._is_paused(paused), last_event=newest,
                worker_events=count if before is not None else None)
        return out

    def _paused_command(self, pipe: Any, b: str) -> None:
        pipe.hget(f"{b}:meta", "paused")

    def _is_paused(self, value: Any) -> bool:
        return value in ("1", 1, "true")

    def _locks(self, c: redis_lib.Redis, queues: list[Queue], heads: list[list[str]]) -> list[tuple[int, float | None]]:
        """Per queue: how many of its oldest active jobs hold a lock, and how long the oldest has run."""
        pipe = c.pipeline(transaction=False)
        for q, head in zip(queues, heads):
            for j in head:
                pipe.exists(f"{q.base}:{j}:lock")
                pipe.hget(f"{q.base}:{j}", "processedOn")
        res = pipe.execute(raise_on_error=False) if any(heads) else []
        out, i, now = [], 0, now_ms()
        for head in heads:
            part, i = res[i:i + 2 * len(head)], i + 2 * len(head)
            started = [int(r) for r in part[1::2] if r and not isinstance(r, Exception)]
            out.append((sum(1 for r in part[0::2] if r == 1),
                        (max(now - min(started), 0) / 1000.0) if started else None))
        return out

    def _events(self, entries: Any, since: str | None) -> tuple[str | None, int | None]:
        """(newest event id, worker-side events after ``since``) from an XREVRANGE/XRANGE answer of the queue's
        events stream (an error: a key of another type, or none when the library keeps no stream)."""
        if not self.has_events or isinstance(entries, Exception):
            return None, None
        if since is None:
            return (entries[0][0] if entries else "0-0"), None
        later = [e for e in entries if e[0] != since]
        return (later[-1][0] if later else since), sum(1 for _, f in later if f.get("event") in WORKER_EVENTS)

    def liveness(self, queue: Queue, first: BullEvidence, last: BullEvidence, progress: Progress | None,
                 stale_after_s: float) -> Liveness:
        supporting = _supporting(last)
        holdup = _holdup(last)
        if last.workers:
            blocked = sum(1 for w in last.workers if w.blocked or w.cmd in FETCH_COMMANDS)
            return Liveness("alive", f"{len(last.workers)} worker connection(s) named for the queue open now "
                                     f"({blocked} waiting for jobs, longest idle {max(w.idle_s for w in last.workers)}s)",
                            live_workers=len(last.workers), blocked_clients=blocked, supporting=supporting,
                            holdup=holdup)
        if last.worker_events:
            return Liveness("alive", f"{last.worker_events} worker events (active/completed/failed) in the queue's "
                                     "event stream during the sample, though no connection is named for it",
                            live_workers=1, supporting=supporting, holdup=holdup)
        if progress is not None and progress.consumed:
            return Liveness("alive", f"jobs were consumed during the {progress.seconds:.0f}s sample "
                                     f"({_finished_text(progress)}), though no connection is named for it",
                            live_workers=1, supporting=supporting, holdup=holdup)
        if last.workers is None:
            return Liveness("unknown", "this Redis refuses CLIENT LIST, so worker connections cannot be seen, and no "
                                       "job was consumed during the sample", supporting=supporting, holdup=holdup)
        return Liveness("none", f"no worker connection is open for this queue (none of the connections {self.label}'s "
                                "own getWorkers lists) and no job was consumed during the sample",
                        supporting=supporting, holdup=holdup)

    # ------------------------------------------------------------------ stuck jobs and failures

    def stuck_jobs(self, c: redis_lib.Redis, queues: list[Queue], limits: StuckLimits,
                   moment: Moment) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for q in queues:
            rows += self._active_stuck(c, q, limits)
            rows += self._overdue_delayed(c, q, limits)
        return rows

    def _active_stuck(self, c: redis_lib.Redis, q: Queue, limits: StuckLimits) -> list[dict[str, Any]]:
        active = c.lrange(f"{q.base}:active", 0, limits.per_queue - 1)
        if not active:
            return []
        pipe = c.pipeline(transaction=False)
        for jid in active:
            pipe.exists(f"{q.base}:{jid}:lock")
            pipe.hmget(f"{q.base}:{jid}", ["name", "processedOn", "attemptsMade"])
        res = pipe.execute(raise_on_error=False)
        now, rows = now_ms(), []
        for jid, locked, fields in zip(active, res[0::2], res[1::2]):
            if isinstance(fields, Exception) or isinstance(locked, Exception):
                continue
            name, processed_on, attempts = fields
            age = (now - int(processed_on)) / 1000.0 if processed_on else float("nan")
            if not locked:
                rows.append(_stuck(q, jid, "stalled", age, name, f"active with no lock (attempts made: {attempts or 0})"))
            elif age == age and age >= limits.hung_after_s:
                rows.append(_stuck(q, jid, "hung", age, name,
                                   f"locked (its worker renews the lock) but processing for {age:.0f}s"))
        return rows

    def _overdue_delayed(self, c: redis_lib.Redis, q: Queue, limits: StuckLimits) -> list[dict[str, Any]]:
        # BullMQ and Bull 3/4 both score delayed jobs as due_ms * 0x1000 + a counter
        now = now_ms()
        cutoff = now - int(limits.overdue_after_s * 1000)
        rows = []
        for jid, score in c.zrangebyscore(f"{q.base}:delayed", "-inf", cutoff << 12, start=0, num=limits.per_queue,
                                          withscores=True):
            due_ms = int(score) >> 12
            rows.append(_stuck(q, jid, "overdue_delayed", (now - due_ms) / 1000.0, c.hget(f"{q.base}:{jid}", "name"),
                               "delayed job past its due time: nothing is promoting delayed jobs"))
        return rows

    def failures(self, c: redis_lib.Redis, queues: list[Queue], limit: int) -> list[dict[str, Any]]:
        import pandas as pd

        return [row for q in queues for row in recent_failures(
            c, q, f"{q.base}:failed", lambda j, b=q.base: f"{b}:{j}", ("failedReason", "finishedOn"), first_line,
            lambda ms: pd.Timestamp(int(ms), unit="ms", tz="UTC"), limit)]

def _less_marker(llen: Any, last: Any) -> int:
    """BullMQ getCounts: a trailing ``0:...`` marker in wait/paused is not a job."""
    n = int(llen or 0)
    return max(n - 1, 0) if last is not None and str(last).startswith("0:") else n


def _ttl(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def _stuck(q: Queue, jid: str, kind: str, age: float, name: Any, detail: str) -> dict[str, Any]:
    return {"system": q.system, "queue": q.name, "job_id": jid, "kind": kind, "age_s": age, "name": name or "",
            "detail": detail}


def _supporting(e: BullEvidence) -> str:
    parts = []
    if e.stalled_check_ms:
        parts.append(f"stalled-check key present (expires in {e.stalled_check_ms / 1000:.0f}s): a worker ran the "
                     "stalled-job check within its stalledInterval, which a worker killed since leaves behind")
    if e.locks:
        parts.append(f"{e.locks} job lock(s) held: locks outlive a killed worker by up to lockDuration")
    return "; ".join(parts)


def _holdup(e: BullEvidence) -> str:
    """What keeps connected workers from taking jobs, where the queue's keys show it."""
    parts = []
    if e.paused:
        parts.append("the queue is paused")
    if e.limiter_ms:
        parts.append(f"the rate limiter is engaged for another {e.limiter_ms / 1000:.1f}s")
    if e.active and e.oldest_active_s is not None:
        parts.append(f"{e.active} job(s) active, the longest running for {e.oldest_active_s:.0f}s")
    return "; ".join(parts)


def _finished_text(p: Progress) -> str:
    if p.finished is not None and p.finished > 0:
        return f"{p.finished:.0f} finished"
    return f"backlog down by {-p.net}"
