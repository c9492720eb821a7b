"""RQ: queues listed in ``rq:queues``; jobs in ``rq:queue:<name>`` (RPUSHed, taken from the left) and the registries
``rq:wip|failed|finished|scheduled|deferred:<name>``.

A worker names its connection after itself (``CLIENT SETNAME <worker name>``, RQ's ``Worker._set_ip_address``); an
open connection with that name is a live worker. Its ``rq:worker:<name>`` hash expires ``worker_ttl + 60`` s (480 s by
default) after its last heartbeat, and an idle worker beats only every ``worker_ttl - 15`` s, so the hash of a killed
worker looks fresh for minutes: it only ever supports a verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from .base import (Liveness, Moment, Progress, Queue, StuckLimits, depth_row, ints, last_line, recent_failures,
                   utc_epoch)

SUSPENDED_KEY = "rq:suspended"  # `rq suspend`: every worker stops taking jobs
MAX_WORKERS = 1000


@dataclass(frozen=True)
class RQEvidence:
    """An RQ queue's liveness evidence at one moment."""

    registered: tuple[str, ...]           # worker names in rq:workers:<queue>
    connected: tuple[str, ...] | None      # of those, the ones with an open named connection; None: no CLIENT LIST
    hashes: int                            # of those, how many still have their rq:worker:<name> hash
    busy: int                              # ... whose state is busy
    suspended: bool


def _name(q: Queue) -> str:
    return q.base.removeprefix("rq:queue:")


class RQ:
    """The RQ adapter (see the module docstring)."""

    system = "rq"

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        return [Queue(self.system, m.removeprefix("rq:queue:"), m) for m in c.sscan_iter("rq:queues", count=500)]

    def depths(self, c: redis_lib.Redis, queues: list[Queue]) -> list[dict[str, Any]]:
        pipe = c.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q.base)
            for reg in ("wip", "failed", "finished", "scheduled", "deferred"):
                pipe.zcard(f"rq:{reg}:{_name(q)}")
            pipe.lindex(q.base, 0)
        pipe.exists(SUSPENDED_KEY)
        res = pipe.execute(raise_on_error=False)
        suspended = res[-1] == 1
        rows = []
        for i, q in enumerate(queues):
            part = [None if isinstance(r, Exception) else r for r in res[7 * i:7 * i + 7]]
            waiting, active, failed, finished, scheduled, deferred = ints(part[:6])
            rows.append(depth_row(q, waiting=waiting, active=active, failed=failed, completed=finished,
                                  scheduled=scheduled, waiting_children=deferred, backlog=waiting,
                                  is_paused=suspended, finished_total=finished + failed))
            rows[-1]["_head"] = part[6]
        self._oldest_waiting(c, rows)
        return rows

    def _oldest_waiting(self, c: redis_lib.Redis, rows: list[dict[str, Any]]) -> None:
        heads = [r.pop("_head") for r in rows]
        asked = [(r, h) for r, h in zip(rows, heads) if h]
        if not asked:
            return
        pipe = c.pipeline(transaction=False)
        for _, head in asked:
            pipe.hget(f"rq:job:{head}", "enqueued_at")
        now = time.time()
        for (row, _), enqueued in zip(asked, pipe.execute(raise_on_error=False)):
            at = None if isinstance(enqueued, Exception) else utc_epoch(enqueued)
            if at is not None:
                row["oldest_waiting_age_s"] = max(now - at, 0.0)

    # ------------------------------------------------------------------ liveness

    def snapshot(self, c: redis_lib.Redis, queues: list[Queue], moment: Moment,
                 previous: dict[Queue, Any] | None) -> dict[Queue, RQEvidence]:
        names = moment.client_names() if moment.clients is not None else None
        suspended = bool(c.exists(SUSPENDED_KEY))
        out = {}
        for q in queues:
            members = [m.removeprefix("rq:worker:") for m in
                       list(c.sscan_iter(f"rq:workers:{_name(q)}", count=500))[:MAX_WORKERS]]
            pipe = c.pipeline(transaction=False)
            for m in members:
                pipe.hget(f"rq:worker:{m}", "state")
            states = pipe.execute(raise_on_error=False) if members else []
            out[q] = RQEvidence(
                registered=tuple(members),
                connected=None if names is None else tuple(m for m in members if m in names),
                hashes=sum(1 for s in states if s and not isinstance(s, Exception)),
                busy=sum(1 for s in states if s == "busy"), suspended=suspended)
        return out

    def liveness(self, queue: Queue, first: RQEvidence, last: RQEvidence, progress: Progress | None,
                 stale_after_s: float) -> Liveness:
        gone = [m for m in last.registered if last.connected is not None and m not in last.connected]
        supporting = (f"{last.hashes} of {len(last.registered)} registered worker hashes still present (they expire "
                      "minutes after a worker dies)") if last.registered else ""
        holdup = "; ".join(p for p in ("workers are suspended (rq suspend)" if last.suspended else "",
                                       f"{last.busy} worker(s) busy" if last.busy else "") if p)
        if last.connected:
            return Liveness("alive", f"{len(last.connected)} registered worker(s) have their named connection open "
                                     f"({', '.join(last.connected[:5])})", live_workers=len(last.connected),
                            stale_workers=len(gone), supporting=supporting, holdup=holdup)
        if progress is not None and progress.consumed:
            return Liveness("alive", f"jobs were consumed during the {progress.seconds:.0f}s sample, though no "
                                     "registered worker has its named connection open", live_workers=1,
                            stale_workers=len(gone), supporting=supporting, holdup=holdup)
        if last.connected is None:
            return Liveness("unknown", "this Redis refuses CLIENT LIST, so worker connections cannot be seen, and no "
                                       "job was consumed during the sample", supporting=supporting, holdup=holdup)
        why = (f"none of the {len(last.registered)} registered worker(s) ({', '.join(last.registered[:5])}) has its "
               "named connection open") if last.registered else "no worker is registered for this queue"
        return Liveness("none", f"{why}, and no job was consumed during the sample", stale_workers=len(gone),
                        supporting=supporting, holdup=holdup)

    # ------------------------------------------------------------------ stuck jobs and failures

    def stuck_jobs(self, c: redis_lib.Redis, queues: list[Queue], limits: StuckLimits,
                   moment: Moment) -> list[dict[str, Any]]:
        now, names, rows = time.time(), moment.client_names() if moment.clients is not None else None, []
        for q in queues:
            entries = c.zrange(f"rq:wip:{_name(q)}", 0, limits.per_queue - 1, withscores=True)
            if not entries:
                continue
            jids = [e.split(":")[0] for e, _ in entries]
            pipe = c.pipeline(transaction=False)
            for jid in jids:
                pipe.hmget(f"rq:job:{jid}", ["worker_name", "started_at", "description"])
            for (_, score), jid, f in zip(entries, jids, pipe.execute(raise_on_error=False)):
                worker, started, description = (None, None, None) if isinstance(f, Exception) else f
                expired = score < now
                gone = bool(worker) and names is not None and worker not in names
                if not (expired or gone):
                    continue
                at = utc_epoch(started)
                why = f"{now - score:.0f}s past its expiry" if expired else f"its worker {worker} is gone"
                rows.append({"system": self.system, "queue": q.name, "job_id": jid, "kind": "abandoned",
                             "age_s": now - at if at is not None else float("nan"), "name": description or "",
                             "detail": f"in rq:wip:{_name(q)}, {why}"})
        return rows

    def failures(self, c: redis_lib.Redis, queues: list[Queue], limit: int) -> list[dict[str, Any]]:
        import pandas as pd

        return [row for q in queues for row in recent_failures(
            c, q, f"rq:failed:{_name(q)}", lambda j: f"rq:job:{j}", ("exc_info", "ended_at"), last_line,
            lambda ended: pd.Timestamp(ended, tz="UTC"), limit)]
