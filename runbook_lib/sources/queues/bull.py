"""Bull 3/4 (Node.js): queues found by their ``<prefix>:<name>:id`` counter and a state key, with no BullMQ meta.

Bull keeps prioritized jobs in ``wait`` as well as in ``priority``, so the priority set is not added to the backlog.
Its workers name their blocking connection ``<prefix>:<base64 name>`` (``Queue.setWorkerName``); Bull has no event
stream, so consumption shows only in the depth samples. Stuck jobs and failures read as BullMQ's do.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

from .base import Queue, depth_row, ints, scan
from .bullmq import BULL3_META_FIELDS, BullMQ

STATE_KEYS = ("wait", "active", "completed", "failed", "delayed", "paused")


class Bull(BullMQ):
    """The Bull 3/4 adapter (see the module docstring)."""

    system = "bull"
    label = "Bull"
    has_events = False

    def discover(self, c: redis_lib.Redis, deadline: float) -> list[Queue]:
        bases = [k[: -len(":id")] for k in scan(c, "*:id", deadline, "string")]
        if not bases:
            return []
        pipe = c.pipeline(transaction=False)
        for b in bases:
            pipe.hkeys(f"{b}:meta")
            pipe.exists(*[f"{b}:{s}" for s in STATE_KEYS])
        res = pipe.execute(raise_on_error=False)
        return [Queue(self.system, b, b) for b, meta, states in zip(bases, res[0::2], res[1::2])
                if isinstance(meta, list) and not set(meta) - BULL3_META_FIELDS and states]

    def _depth_commands(self, pipe: Any, b: str) -> None:
        pipe.llen(f"{b}:wait"), pipe.llen(f"{b}:paused"), pipe.llen(f"{b}:active")
        for s in ("priority", "delayed", "completed", "failed"):
            pipe.zcard(f"{b}:{s}")
        pipe.exists(f"{b}:meta-paused")
        pipe.get(f"{b}:id")

    def _depth_row(self, q: Queue, r: list[Any]) -> dict[str, Any]:
        waiting, paused, active, prio, delayed, completed, failed = ints(r[:7])
        return depth_row(q, waiting=waiting, paused=paused, active=active, prioritized=prio, delayed=delayed,
                         completed=completed, failed=failed, is_paused=bool(r[7]), backlog=waiting + paused,
                         created_total=int(r[8]) if r[8] else None)

    def _paused_command(self, pipe: Any, b: str) -> None:
        pipe.exists(f"{b}:meta-paused")

    def _is_paused(self, value: Any) -> bool:
        return bool(value)
