"""Sidekiq: queues listed in ``queues``; jobs in ``queue:<name>`` (LPUSHed, BRPOPed from the right); ``schedule``,
``retry`` and ``dead`` are shared by every queue of the Redis.

Sidekiq does not name its connections, so liveness comes from its process heartbeat: each process rewrites
``beat`` in its ``<identity>`` hash every 5 s (Sidekiq 6) or 10 s (7 and later; its ``info`` then carries
``version``), and the hash expires 60 s after the last beat. A beat seen to advance during the sample is a live
process; a beat that stood still through more than a beat interval and a half belongs to a process that stopped
(killed or frozen), however young it is. A sample too short to tell says so rather than guess. In-flight jobs are
in ``<identity>:workers`` (6) or ``<identity>:work`` (7+); Sidekiq's basic fetch loses those of a killed process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from .base import Liveness, Moment, Progress, Queue, StuckLimits, depth_row, first_line, ints

MAX_PROCESSES = 1000


@dataclass(frozen=True)
class Process:
    """One Sidekiq process at one moment."""

    identity: str
    beat: float | None            # None: its hash expired (the process is gone)
    queues: tuple[str, ...]
    busy: int = 0
    concurrency: int = 0
    quiet: bool = False
    beat_every_s: float = 10.0


@dataclass(frozen=True)
class SidekiqEvidence:
    """The processes serving one queue at one moment."""

    at: float
    processes: tuple[Process, ...] = field(default_factory=tuple)


class Sidekiq:
    """The Sidekiq adapter (see the module docstring)."""

    system = "sidekiq"

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        return [Queue(self.system, n, f"queue:{n}") for n in c.sscan_iter("queues", count=500)]

    def depths(self, c: redis_lib.Redis, queues: list[Queue]) -> list[dict[str, Any]]:
        pipe = c.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q.base), pipe.lindex(q.base, -1)
        pipe.zcard("schedule"), pipe.zcard("retry"), pipe.zcard("dead")
        res = [None if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]
        scheduled, retry, dead = ints(res[-3:])
        now, rows = time.time(), []
        for i, q in enumerate(queues):
            waiting, head = int(res[2 * i] or 0), res[2 * i + 1]
            rows.append(depth_row(q, waiting=waiting, scheduled=scheduled, retry=retry, dead=dead, backlog=waiting,
                                  oldest_waiting_age_s=_enqueued_age(head, now)))
        return rows

    # ------------------------------------------------------------------ liveness

    def snapshot(self, c: redis_lib.Redis, queues: list[Queue], moment: Moment,
                 previous: dict[Queue, Any] | None) -> dict[Queue, SidekiqEvidence]:
        processes = read_processes(c)
        return {q: SidekiqEvidence(moment.at, tuple(p for p in processes if not p.queues or q.name in p.queues))
                for q in queues}

    def liveness(self, queue: Queue, first: SidekiqEvidence, last: SidekiqEvidence, progress: Progress | None,
                 stale_after_s: float) -> Liveness:
        before = {p.identity: p.beat for p in first.processes}
        span = last.at - first.at
        advanced = [p for p in last.processes if p.beat is not None and before.get(p.identity) not in (None, p.beat)]
        present = [p for p in last.processes if p.beat is not None]
        holdup = _holdup(present)
        if advanced:
            return Liveness("alive", f"{len(advanced)} Sidekiq process heartbeat(s) advanced during the {span:.0f}s "
                                     "sample", live_workers=len(advanced),
                            stale_workers=len(last.processes) - len(advanced), holdup=holdup)
        if progress is not None and progress.consumed:
            return Liveness("alive", f"jobs were consumed during the {span:.0f}s sample", live_workers=1,
                            holdup=holdup)
        if not last.processes:
            return Liveness("none", "no Sidekiq process lists this queue")
        young = [p for p in present if time.time() - (p.beat or 0) <= stale_after_s]
        interval = max((p.beat_every_s for p in present), default=10.0)
        if not young:
            return Liveness("none", f"{len(last.processes)} Sidekiq process(es) list this queue; every heartbeat is "
                                    f"older than {stale_after_s:.0f}s or expired", stale_workers=len(last.processes))
        if span >= 1.5 * interval:
            return Liveness("none", f"no heartbeat advanced during the {span:.0f}s sample though Sidekiq beats every "
                                    f"{interval:.0f}s: the {len(young)} recent beat(s) were left by processes that "
                                    "stopped", stale_workers=len(last.processes),
                            supporting=_beat_ages(young))
        return Liveness("unknown", f"the {span:.0f}s sample is too short to see a heartbeat advance (Sidekiq beats "
                                   f"every {interval:.0f}s; sample at least {1.5 * interval:.0f}s)",
                        supporting=_beat_ages(young), holdup=holdup)

    # ------------------------------------------------------------------ stuck jobs and failures

    def stuck_jobs(self, c: redis_lib.Redis, queues: list[Queue], limits: StuckLimits,
                   moment: Moment) -> list[dict[str, Any]]:
        """``lost``: jobs in flight on a process whose heartbeat is older than the stale window (basic fetch does
        not requeue them)."""
        names = {q.name for q in queues}
        now, rows = time.time(), []
        for p in read_processes(c):
            if p.beat is not None and now - p.beat <= limits.stale_after_s:
                continue
            for work_key in (f"{p.identity}:workers", f"{p.identity}:work"):
                for tid, raw in list(c.hscan_iter(work_key, count=500))[:limits.per_queue]:
                    job = _work_entry(raw)
                    if job.get("queue") not in names:
                        continue
                    payload = job.get("payload") or {}
                    rows.append({"system": self.system, "queue": job["queue"], "job_id": payload.get("jid", tid),
                                 "kind": "lost", "age_s": now - float(job.get("run_at") or now),
                                 "name": payload.get("class", ""),
                                 "detail": f"in flight on {p.identity}, whose last heartbeat was "
                                           f"{'lost' if p.beat is None else f'{now - p.beat:.0f}s ago'}"})
        return rows

    def failures(self, c: redis_lib.Redis, queues: list[Queue], limit: int) -> list[dict[str, Any]]:
        import pandas as pd

        names, rows = {q.name for q in queues}, []
        for zset in ("retry", "dead"):
            for raw, score in c.zrevrange(zset, 0, limit - 1, withscores=True):
                try:
                    job = json.loads(raw)
                except ValueError:
                    continue
                if job.get("queue") not in names:
                    continue
                rows.append({"system": self.system, "queue": job.get("queue", "?"),
                             "reason": f"{job.get('error_class', '?')}: {first_line(job.get('error_message'))}",
                             "job": job.get("jid", ""), "at": pd.Timestamp(score, unit="s", tz="UTC")})
        return rows


def read_processes(c: redis_lib.Redis) -> list[Process]:
    """Every process in ``processes`` with its heartbeat (None when its hash expired)."""
    ids = list(c.sscan_iter("processes", count=500))[:MAX_PROCESSES]
    if not ids:
        return []
    pipe = c.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(i, ["beat", "info", "busy", "quiet"])
    out = []
    for ident, res in zip(ids, pipe.execute(raise_on_error=False)):
        if isinstance(res, Exception) or not res or res[0] is None:
            out.append(Process(ident, None, ()))
            continue
        beat, info, busy, quiet = res
        try:
            data = json.loads(info or "{}")
        except ValueError:
            data = {}
        out.append(Process(ident, float(beat), tuple(data.get("queues") or ()), int(busy or 0),
                           int(data.get("concurrency") or 0), quiet in ("true", "1"),
                           10.0 if data.get("version") else 5.0))
    return out


def _enqueued_age(payload: Any, now: float) -> float:
    try:
        enq = float(json.loads(payload).get("enqueued_at"))
    except (ValueError, TypeError, AttributeError):
        return float("nan")
    if enq > 1e12:  # Sidekiq 8 writes integer milliseconds
        enq /= 1000.0
    return max(now - enq, 0.0)


def _work_entry(raw: str) -> dict[str, Any]:
    try:
        job = json.loads(raw)
        if isinstance(job.get("payload"), str):
            job["payload"] = json.loads(job["payload"])
        return job
    except (ValueError, TypeError, AttributeError):
        return {}


def _beat_ages(processes: list[Process]) -> str:
    now = time.time()
    return "heartbeat(s) " + ", ".join(f"{now - (p.beat or now):.0f}s old" for p in processes[:5])


def _holdup(processes: list[Process]) -> str:
    quiet = [p for p in processes if p.quiet]
    full = [p for p in processes if p.concurrency and p.busy >= p.concurrency]
    parts = [f"{len(quiet)} process(es) quiet (TSTP: no new jobs)" if quiet else "",
             f"{len(full)} process(es) with every thread busy" if full else ""]
    return "; ".join(p for p in parts if p)
