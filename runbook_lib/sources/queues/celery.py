"""Celery on kombu's Redis transport: queues found by their ``_kombu.binding.<queue>`` set; messages in the list
``<queue>`` and, with priorities, ``<queue>\\x06\\x16<n>``; delivered but unacknowledged messages in ``unacked``
(hash) and ``unacked_index`` (delivery time).

kombu does not name its connections, and CLIENT LIST does not say which lists a BRPOP waits on. One fact still
decides: Redis keeps a client blocked in BRPOP only while every list it waits on is empty. So while a queue holds
messages, a connection blocked in BRPOP is not consuming it; a queue with messages and no connection that issued
BRPOP and is not blocked has no consumer. Messages taken from the queue during the sample show one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from .base import Liveness, Moment, Progress, Queue, StuckLimits, depth_row, scan

SEP = "\x06\x16"
PRIORITIES = range(1, 10)  # kombu's sub-lists "<queue>\x06\x16<n>"; the bare name is priority 0
FETCH = "brpop"


@dataclass(frozen=True)
class CeleryEvidence:
    """A Celery queue's evidence at one moment: its messages and the BRPOP connections of this Redis."""

    waiting: int
    blocked: int          # unnamed connections blocked in BRPOP now (so waiting on empty lists only)
    busy: int | None      # unnamed connections whose last command was BRPOP and that are not blocked; None: no list


class Celery:
    """The Celery (kombu) adapter (see the module docstring)."""

    system = "celery"

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        names = [k.removeprefix("_kombu.binding.") for k in scan(c, "_kombu.binding.*", deadline, "set")]
        return [Queue(self.system, n, n) for n in names if not n.endswith("pidbox") and not n.startswith("celeryev")]

    def depths(self, c: redis_lib.Redis, queues: list[Queue]) -> list[dict[str, Any]]:
        waiting = self._waiting(c, queues)
        unacked = int(c.zcard("unacked_index") or 0)
        return [depth_row(q, waiting=w, prioritized=p, unacked=unacked, backlog=w) for q, (w, p) in zip(queues, waiting)]

    def _waiting(self, c: redis_lib.Redis, queues: list[Queue]) -> list[tuple[int, int]]:
        """(messages, of which in priority sub-lists) per queue, counted as kombu's ``_size`` counts."""
        pipe = c.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q.base)
            for p in PRIORITIES:
                pipe.llen(f"{q.base}{SEP}{p}")
        res = [0 if isinstance(r, Exception) else int(r or 0) for r in pipe.execute(raise_on_error=False)]
        width = 1 + len(PRIORITIES)
        return [(sum(res[i * width:(i + 1) * width]), sum(res[i * width + 1:(i + 1) * width])) for i in range(len(queues))]

    # ------------------------------------------------------------------ liveness

    def snapshot(self, c: redis_lib.Redis, queues: list[Queue], moment: Moment,
                 previous: dict[Queue, Any] | None) -> dict[Queue, CeleryEvidence]:
        fetchers = [cl for cl in moment.clients or () if cl.cmd == FETCH and not cl.name]
        blocked = sum(1 for cl in fetchers if cl.blocked)
        busy = None if moment.clients is None else len(fetchers) - blocked
        return {q: CeleryEvidence(w, blocked, busy) for q, (w, _) in zip(queues, self._waiting(c, queues))}

    def liveness(self, queue: Queue, first: CeleryEvidence, last: CeleryEvidence, progress: Progress | None,
                 stale_after_s: float) -> Liveness:
        if progress is not None and progress.consumed:
            return Liveness("alive", f"messages were taken from the queue during the {progress.seconds:.0f}s sample "
                                     f"(down by {-progress.net})", live_workers=1,
                            blocked_clients=last.blocked)
        if last.busy is None:
            return Liveness("unknown", "this Redis refuses CLIENT LIST, so consumer connections cannot be seen, and "
                                       "no message was taken during the sample")
        if last.waiting and not last.busy:
            why = (f"{last.blocked} Celery connection(s) are blocked in BRPOP, which Redis allows only while every list "
                   f"they wait on is empty, so none waits on this queue, which holds {last.waiting}"
                   if last.blocked else "no connection on this Redis fetches with BRPOP (kombu's fetch): no Celery "
                                        "worker is connected")
            return Liveness("none", why, blocked_clients=last.blocked)
        if last.waiting:
            return Liveness("unknown", f"{last.busy} Celery connection(s) are busy (last command BRPOP, not blocked); "
                                       "Redis does not say which queues they serve, and none took a message from this "
                                       "one during the sample", blocked_clients=last.blocked,
                            holdup=f"{last.busy} consumer connection(s) busy")
        if last.blocked or last.busy:
            return Liveness("unknown", f"{last.blocked + (last.busy or 0)} Celery connection(s) fetch with BRPOP; "
                                       "Redis does not say which queues they wait on", blocked_clients=last.blocked)
        return Liveness("none", "no connection on this Redis fetches with BRPOP (kombu's fetch): no Celery worker is "
                                "connected")

    # ------------------------------------------------------------------ stuck jobs and failures

    def stuck_jobs(self, c: redis_lib.Redis, queues: list[Queue], limits: StuckLimits,
                   moment: Moment) -> list[dict[str, Any]]:
        """``unacked_overdue``: delivered longer ago than the visibility timeout, never acknowledged."""
        names = {q.name for q in queues}
        now = time.time()
        overdue = c.zrangebyscore("unacked_index", "-inf", now - limits.celery_visibility_timeout_s, start=0,
                                  num=limits.per_queue, withscores=True)
        if not overdue:
            return []
        rows = []
        for (tag, score), raw in zip(overdue, c.hmget("unacked", [tag for tag, _ in overdue])):
            queue, task, task_id = _unacked_message(raw, tag)
            if queue not in names and queue != "?":
                continue
            rows.append({"system": self.system, "queue": queue, "job_id": task_id, "kind": "unacked_overdue",
                         "age_s": now - score, "name": task,
                         "detail": f"delivered {now - score:.0f}s ago, past the {limits.celery_visibility_timeout_s:.0f}s "
                                   "visibility timeout: its worker is gone; it is redelivered when a worker restores it"})
        return rows

    def failures(self, c: redis_lib.Redis, queues: list[Queue], limit: int) -> list[dict[str, Any]]:
        return []  # failures live in the result backend, not in the broker's keys


def _unacked_message(raw: Any, tag: str) -> tuple[str, str, str]:
    """(queue, task name, task id) of an ``unacked`` entry: kombu stores [payload, exchange, routing key]."""
    try:
        payload, _exchange, routing_key = json.loads(raw)
        headers = payload.get("headers", {})
        return routing_key or "?", headers.get("task", ""), headers.get("id", tag)
    except (TypeError, ValueError, AttributeError):
        return "?", "", tag
