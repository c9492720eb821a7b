"""Job queues on Redis: BullMQ, Bull 3/4, Celery (kombu), RQ and Sidekiq, read with plain commands.

Counts follow each library's own definitions (BullMQ's ``getCounts`` Lua script: LLEN for wait, paused
and active, less a trailing ``0:`` marker in wait/paused, ZCARD for the sorted sets) but never run a
library's scripts and never clean up while counting. Only bounded ranges are read and job hashes are
read with HMGET of named fields. Every function returns a DataFrame or a SourceError.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import redis as redis_lib

from . import SourceError
from .redis import RedisTarget

SOURCE = "queues"
CELERY_SEP = "\x06\x16"
CELERY_PRIORITIES = range(1, 10)  # kombu's sub-lists "<queue>\x06\x16<n>"; bare name is priority 0
QUEUE_COLUMNS = ["system", "queue", "base"]
DEPTH_COLUMNS = ["system", "queue", "waiting", "paused", "active", "prioritized", "delayed", "waiting_children",
                 "completed", "failed", "scheduled", "retry", "dead", "unacked", "backlog", "is_paused",
                 "oldest_waiting_age_s", "created_total"]


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- discovery

def discover_queues(target: RedisTarget, *, budget_s: float = 3.0, max_queues: int = 1000) -> pd.DataFrame | SourceError:
    """Find queues: BullMQ by ``*:meta``, Bull by ``*:id`` without meta, RQ by ``rq:queues``, Sidekiq by
    ``queues``, Celery by ``_kombu.binding.*``. Columns: system, queue (display name), base (key prefix)."""
    def work(c: redis_lib.Redis) -> pd.DataFrame:
        deadline = time.monotonic() + budget_s
        found: dict[tuple[str, str], str] = {}
        metas = _scan(c, "*:meta", deadline, "hash")
        ids = _scan(c, "*:id", deadline, "string")
        for k in metas:
            base = k[: -len(":meta")]
            found[("bullmq", base)] = base
        if ids:
            pipe = c.pipeline(transaction=False)
            candidates = [k[: -len(":id")] for k in ids if ("bullmq", k[: -len(":id")]) not in found]
            for base in candidates:
                pipe.exists(f"{base}:wait", f"{base}:active", f"{base}:completed", f"{base}:failed",
                            f"{base}:delayed", f"{base}:paused")
            for base, n in zip(candidates, pipe.execute()):
                if n:
                    found[("bull", base)] = base
        for member in c.sscan_iter("rq:queues", count=500):
            name = member.removeprefix("rq:queue:")
            found[("rq", name)] = member
        for name in c.sscan_iter("queues", count=500):
            found[("sidekiq", name)] = f"queue:{name}"
        for k in _scan(c, "_kombu.binding.*", deadline, "set"):
            name = k.removeprefix("_kombu.binding.")
            if not name.endswith("pidbox") and not name.startswith("celeryev"):
                found[("celery", name)] = name
        rows = [{"system": s, "queue": q, "base": b} for (s, q), b in sorted(found.items())][:max_queues]
        df = pd.DataFrame(rows, columns=QUEUE_COLUMNS)
        df.attrs["truncated"] = len(found) > max_queues
        return df
    return target.read("discover_queues", work)


def _scan(c: redis_lib.Redis, match: str, deadline: float, type_: str | None = None) -> list[str]:
    out, cursor = [], 0
    while True:
        cursor, keys = c.scan(cursor=cursor, match=match, count=5000, _type=type_)
        out.extend(keys)
        if cursor == 0 or time.monotonic() > deadline:
            return out


# --------------------------------------------------------------------------- depths

def queue_depths(target: RedisTarget, queues: pd.DataFrame | SourceError) -> pd.DataFrame | SourceError:
    """One row per queue: jobs in each state, ``backlog`` (work not yet started), whether paused, age of the
    oldest waiting job, and ``created_total`` (BullMQ/Bull id counter; Sidekiq stat:processed is separate)."""
    if isinstance(queues, SourceError):
        return queues

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        pipe = c.pipeline(transaction=False)
        plan: list[tuple[pd.Series, int]] = []
        for q in queues.itertuples():
            before = len(pipe.command_stack)
            _DEPTH_READERS[q.system][0](pipe, q.base)
            plan.append((q, len(pipe.command_stack) - before))
        results = pipe.execute(raise_on_error=False)
        rows, i = [], 0
        for q, n in plan:
            part = [None if isinstance(r, Exception) else r for r in results[i:i + n]]
            i += n
            row = {c_: 0 for c_ in DEPTH_COLUMNS}
            row.update(system=q.system, queue=q.queue, is_paused=False, oldest_waiting_age_s=float("nan"),
                       created_total=None)
            row.update(_DEPTH_READERS[q.system][1](part))
            rows.append(row)
        df = pd.DataFrame(rows, columns=DEPTH_COLUMNS)
        _oldest_ages(c, queues, df)
        return df
    return target.read("queue_depths", work)


def _list_len_less_marker(llen: int | None, last: str | None) -> int:
    """BullMQ getCounts: a trailing ``0:...`` marker in wait/paused is not a job."""
    llen = int(llen or 0)
    if last is not None and str(last).startswith("0:"):
        return max(llen - 1, 0)
    return llen


def _bullmq_cmds(pipe: Any, b: str) -> None:
    pipe.llen(f"{b}:wait"), pipe.lindex(f"{b}:wait", -1)
    pipe.llen(f"{b}:paused"), pipe.lindex(f"{b}:paused", -1)
    pipe.llen(f"{b}:active")
    for s in ("prioritized", "delayed", "waiting-children", "completed", "failed"):
        pipe.zcard(f"{b}:{s}")
    pipe.hget(f"{b}:meta", "paused")
    pipe.get(f"{b}:id")


def _bullmq_parse(r: list[Any]) -> dict[str, Any]:
    waiting, paused = _list_len_less_marker(r[0], r[1]), _list_len_less_marker(r[2], r[3])
    active, prioritized, delayed, children, completed, failed = (int(x or 0) for x in r[4:10])
    return {"waiting": waiting, "paused": paused, "active": active, "prioritized": prioritized, "delayed": delayed,
            "waiting_children": children, "completed": completed, "failed": failed,
            "is_paused": r[10] in ("1", 1, "true"), "backlog": waiting + paused + prioritized,
            "created_total": int(r[11]) if r[11] else 0}


def _bull_cmds(pipe: Any, b: str) -> None:
    pipe.llen(f"{b}:wait"), pipe.llen(f"{b}:paused"), pipe.llen(f"{b}:active")
    for s in ("priority", "delayed", "completed", "failed"):
        pipe.zcard(f"{b}:{s}")
    pipe.exists(f"{b}:meta-paused")
    pipe.get(f"{b}:id")


def _bull_parse(r: list[Any]) -> dict[str, Any]:
    waiting, paused, active, prio, delayed, completed, failed = (int(x or 0) for x in r[:7])
    # Bull 3/4 keeps prioritized jobs in wait as well: the priority set is not added to the backlog
    return {"waiting": waiting, "paused": paused, "active": active, "prioritized": prio, "delayed": delayed,
            "completed": completed, "failed": failed, "is_paused": bool(r[7]), "backlog": waiting + paused,
            "created_total": int(r[8]) if r[8] else 0}


def _rq_cmds(pipe: Any, b: str) -> None:
    name = b.removeprefix("rq:queue:")
    pipe.llen(b)
    for reg in ("wip", "failed", "finished", "scheduled", "deferred"):
        pipe.zcard(f"rq:{reg}:{name}")


def _rq_parse(r: list[Any]) -> dict[str, Any]:
    waiting, active, failed, finished, scheduled, deferred = (int(x or 0) for x in r)
    return {"waiting": waiting, "active": active, "failed": failed, "completed": finished,
            "scheduled": scheduled, "waiting_children": deferred, "backlog": waiting}


def _sidekiq_cmds(pipe: Any, b: str) -> None:
    pipe.llen(b)
    pipe.zcard("schedule"), pipe.zcard("retry"), pipe.zcard("dead")


def _sidekiq_parse(r: list[Any]) -> dict[str, Any]:
    waiting, scheduled, retry, dead = (int(x or 0) for x in r)
    # schedule/retry/dead are shared by every Sidekiq queue of this Redis
    return {"waiting": waiting, "scheduled": scheduled, "retry": retry, "dead": dead, "backlog": waiting}


def _celery_cmds(pipe: Any, b: str) -> None:
    pipe.llen(b)
    for p in CELERY_PRIORITIES:
        pipe.llen(f"{b}{CELERY_SEP}{p}")
    pipe.zcard("unacked_index")


def _celery_parse(r: list[Any]) -> dict[str, Any]:
    waiting = sum(int(x or 0) for x in r[:-1])
    return {"waiting": waiting, "prioritized": sum(int(x or 0) for x in r[1:-1]), "unacked": int(r[-1] or 0),
            "backlog": waiting}


_DEPTH_READERS = {
    "bullmq": (_bullmq_cmds, _bullmq_parse), "bull": (_bull_cmds, _bull_parse), "rq": (_rq_cmds, _rq_parse),
    "sidekiq": (_sidekiq_cmds, _sidekiq_parse), "celery": (_celery_cmds, _celery_parse),
}


def _oldest_ages(c: redis_lib.Redis, queues: pd.DataFrame, df: pd.DataFrame) -> None:
    """Age of the job at the consuming end of each waiting list (skipping BullMQ markers)."""
    now = time.time()
    pipe = c.pipeline(transaction=False)
    for q in queues.itertuples():
        if q.system in ("bullmq", "bull"):
            pipe.lrange(f"{q.base}:wait", -2, -1)  # LPUSHed, taken from the right; the last may be a marker
        elif q.system == "rq":
            pipe.lindex(q.base, 0)  # RPUSHed, taken from the left
        else:
            pipe.lindex(q.base, -1)  # Sidekiq and kombu LPUSH and BRPOP
    heads = pipe.execute(raise_on_error=False)
    pipe = c.pipeline(transaction=False)
    asks: list[tuple[int, str]] = []
    for idx, (q, head) in enumerate(zip(queues.itertuples(), heads)):
        if isinstance(head, Exception) or not head:
            continue
        if q.system in ("bullmq", "bull"):
            ids = [h for h in head if not str(h).startswith("0:")]
            if ids:
                pipe.hget(f"{q.base}:{ids[-1]}", "timestamp")
                asks.append((idx, "ms"))
        elif q.system == "rq":
            pipe.hget(f"rq:job:{head}", "enqueued_at")
            asks.append((idx, "iso"))
        elif q.system == "sidekiq":
            df.at[idx, "oldest_waiting_age_s"] = _sidekiq_age(head, now)
    for (idx, kind), value in zip(asks, pipe.execute(raise_on_error=False) if asks else []):
        if isinstance(value, Exception) or not value:
            continue
        if kind == "ms":
            df.at[idx, "oldest_waiting_age_s"] = max(now - int(value) / 1000.0, 0.0)
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
            df.at[idx, "oldest_waiting_age_s"] = max(now - ts.timestamp(), 0.0)


def _sidekiq_age(payload: str, now: float) -> float:
    try:
        enq = float(json.loads(payload).get("enqueued_at"))
    except (ValueError, TypeError, AttributeError):
        return float("nan")
    if enq > 1e12:  # Sidekiq 8 writes integer milliseconds
        enq /= 1000.0
    return max(now - enq, 0.0)


# --------------------------------------------------------------------------- stuck jobs

STUCK_COLUMNS = ["system", "queue", "job_id", "kind", "age_s", "name", "detail"]


def stuck_jobs(target: RedisTarget, queues: pd.DataFrame | SourceError, *, hung_after_s: float = 600.0,
               overdue_after_s: float = 60.0, celery_visibility_timeout_s: float = 3600.0,
               stale_after_s: float = 60.0, limit: int = 1000) -> pd.DataFrame | SourceError:
    """Jobs that are not moving, one row each (bounded by ``limit`` per queue):

    ``stalled`` BullMQ/Bull active job with no ``<id>:lock`` (its worker is gone); ``hung`` locked but
    processing longer than ``hung_after_s``; ``overdue_delayed`` delayed past its due time (due = score >> 12)
    by ``overdue_after_s``; ``abandoned`` RQ ``rq:wip`` entry past its expiry score or whose worker is gone
    (see :func:`consumers`); ``unacked_overdue`` Celery
    message delivered longer ago than the visibility timeout.
    """
    if isinstance(queues, SourceError):
        return queues

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        now_ms = _now_ms()
        client_names = {cl.get("name") for cl in c.client_list() if cl.get("name")} \
            if (queues["system"] == "rq").any() else set()
        for q in queues.itertuples():
            if q.system in ("bullmq", "bull"):
                rows += _bull_stuck(c, q, now_ms, hung_after_s, overdue_after_s, limit)
            elif q.system == "rq":
                rows += _rq_abandoned(c, q, now_ms / 1000.0, client_names, stale_after_s, limit)
        if (queues["system"] == "celery").any():
            rows += _celery_unacked(c, set(queues.loc[queues["system"] == "celery", "queue"]), now_ms,
                                    celery_visibility_timeout_s, limit)
        return pd.DataFrame(rows, columns=STUCK_COLUMNS)
    return target.read("stuck_jobs", work)


def _bull_stuck(c: redis_lib.Redis, q: Any, now_ms: int, hung_after_s: float, overdue_after_s: float,
                limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    active = c.lrange(f"{q.base}:active", 0, limit - 1)
    if active:
        pipe = c.pipeline(transaction=False)
        for jid in active:
            pipe.exists(f"{q.base}:{jid}:lock")
            pipe.hmget(f"{q.base}:{jid}", ["name", "processedOn", "attemptsMade"])
        res = pipe.execute(raise_on_error=False)
        for k, jid in enumerate(active):
            locked, fields = res[2 * k], res[2 * k + 1]
            if isinstance(fields, Exception) or isinstance(locked, Exception):
                continue
            name, processed_on, attempts = fields
            age = (now_ms - int(processed_on)) / 1000.0 if processed_on else float("nan")
            if not locked:
                rows.append({"system": q.system, "queue": q.queue, "job_id": jid, "kind": "stalled", "age_s": age,
                             "name": name or "", "detail": f"active with no lock (attempts made: {attempts or 0})"})
            elif age == age and age >= hung_after_s:
                rows.append({"system": q.system, "queue": q.queue, "job_id": jid, "kind": "hung", "age_s": age,
                             "name": name or "", "detail": "locked (its worker renews the lock) but processing "
                                                           f"for {age:.0f}s"})
    # BullMQ and Bull 3/4 both score delayed jobs as due_ms * 0x1000 + a counter
    cutoff = now_ms - int(overdue_after_s * 1000)
    for jid, score in c.zrangebyscore(f"{q.base}:delayed", "-inf", cutoff << 12, start=0, num=limit,
                                      withscores=True):
        due_ms = int(score) >> 12
        rows.append({"system": q.system, "queue": q.queue, "job_id": jid, "kind": "overdue_delayed",
                     "age_s": (now_ms - due_ms) / 1000.0, "name": c.hget(f"{q.base}:{jid}", "name") or "",
                     "detail": "delayed job past its due time: nothing is promoting delayed jobs"})
    return rows


def _rq_abandoned(c: redis_lib.Redis, q: Any, now: float, client_names: set[str], stale_after_s: float,
                  limit: int) -> list[dict[str, Any]]:
    name = q.base.removeprefix("rq:queue:")
    entries = c.zrange(f"rq:wip:{name}", 0, limit - 1, withscores=True)
    if not entries:
        return []
    jids = [e.split(":")[0] for e, _ in entries]
    pipe = c.pipeline(transaction=False)
    for jid in jids:
        pipe.hmget(f"rq:job:{jid}", ["worker_name", "started_at", "description"])
    fields = pipe.execute(raise_on_error=False)
    workers = {f"rq:worker:{f[0]}" for f in fields if not isinstance(f, Exception) and f[0]}
    alive = _rq_worker_liveness(c, sorted(workers), client_names, now, stale_after_s)
    rows = []
    for (_, score), jid, f in zip(entries, jids, fields):
        worker, started, description = (None, None, None) if isinstance(f, Exception) else f
        expired = score < now
        gone = bool(worker) and not alive.get(f"rq:worker:{worker}", False)
        if not (expired or gone):
            continue
        age = float("nan")
        if started:
            ts = pd.Timestamp(started)
            age = now - (ts.tz_localize("UTC") if ts.tzinfo is None else ts).timestamp()
        why = f"{now - score:.0f}s past its expiry" if expired else f"its worker {worker} is gone"
        rows.append({"system": "rq", "queue": q.queue, "job_id": jid, "kind": "abandoned", "age_s": age,
                     "name": description or "", "detail": f"in rq:wip:{name}, {why}"})
    return rows


def _celery_unacked(c: redis_lib.Redis, names: set[str], now_ms: int, visibility_s: float,
                    limit: int) -> list[dict[str, Any]]:
    rows = []
    overdue = c.zrangebyscore("unacked_index", "-inf", now_ms / 1000.0 - visibility_s, start=0, num=limit,
                              withscores=True)
    if not overdue:
        return rows
    messages = c.hmget("unacked", [tag for tag, _ in overdue])
    for (tag, score), raw in zip(overdue, messages):
        queue, task, task_id = "?", "", tag
        try:
            payload, _exchange, routing_key = json.loads(raw)
            queue = routing_key or queue
            headers = payload.get("headers", {})
            task, task_id = headers.get("task", ""), headers.get("id", tag)
        except (TypeError, ValueError):
            pass
        if queue not in names and queue != "?":
            continue
        rows.append({"system": "celery", "queue": queue, "job_id": task_id, "kind": "unacked_overdue",
                     "age_s": now_ms / 1000.0 - score, "name": task,
                     "detail": f"delivered {now_ms / 1000.0 - score:.0f}s ago, past the {visibility_s:.0f}s "
                               "visibility timeout: its worker is gone; it is redelivered when a worker restores it"})
    return rows


# --------------------------------------------------------------------------- consumers

CONSUMER_COLUMNS = ["system", "queue", "live_workers", "stale_workers", "blocked_clients", "stalled_check_ttl_ms",
                    "alive", "evidence"]


def consumers(target: RedisTarget, queues: pd.DataFrame | SourceError, *,
              stale_after_s: float = 60.0) -> pd.DataFrame | SourceError:
    """Is anything consuming each queue? Per queue: live and stale workers and the evidence.

    BullMQ/Bull: connections named after the queue (``<prefix>:<queue>`` or ``<prefix>:<base64>``, workers add
    ``:w:<name>``) blocked on BZPOPMIN/BRPOPLPUSH, and the ``stalled-check`` key a worker refreshes. RQ: members
    of ``rq:workers:<queue>`` whose hash still exists with a recent heartbeat. Sidekiq: ``processes`` whose
    ``beat`` is recent and whose ``info.queues`` include the queue. Celery: clients blocked on BRPOP
    (kombu does not name its connections, so this is per Redis, not per queue).
    """
    if isinstance(queues, SourceError):
        return queues

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        now = time.time()
        client_rows = [cl for cl in c.client_list() if cl.get("name") != target.safety.client_name]
        client_names = {cl.get("name") for cl in client_rows if cl.get("name")}
        by_queue: dict[str, list[dict[str, Any]]] = {}
        bases = set(queues.loc[queues["system"].isin(["bullmq", "bull"]), "base"])
        for cl in client_rows:
            base = _bull_base_of(cl.get("name", ""), bases)
            if base:
                by_queue.setdefault(base, []).append(cl)
        brpop_clients = sum(1 for cl in client_rows if cl.get("cmd") in ("brpop", "blpop") and not cl.get("name"))
        sidekiq = _sidekiq_processes(c, now, stale_after_s) if (queues["system"] == "sidekiq").any() else []
        rows = []
        for q in queues.itertuples():
            row = {"system": q.system, "queue": q.queue, "live_workers": 0, "stale_workers": 0, "blocked_clients": 0,
                   "stalled_check_ttl_ms": None, "alive": False, "evidence": ""}
            if q.system in ("bullmq", "bull"):
                cls = by_queue.get(q.base, [])
                blocked = sum(1 for cl in cls if cl.get("cmd") in ("bzpopmin", "brpoplpush", "blmove", "brpop"))
                named_workers = sum(1 for cl in cls if ":w:" in (cl.get("name") or ""))
                ttl = c.pttl(f"{q.base}:stalled-check")
                locks = _any_lock(c, q.base)
                row.update(live_workers=max(blocked, named_workers), blocked_clients=blocked,
                           stalled_check_ttl_ms=ttl if ttl and ttl > 0 else None)
                row["alive"] = bool(blocked or named_workers or (ttl and ttl > 0) or locks)
                row["evidence"] = (f"{len(cls)} connections named for the queue, {blocked} blocked waiting for jobs; "
                                   f"stalled-check {'present' if ttl and ttl > 0 else 'absent'}; "
                                   f"{'a job lock is held' if locks else 'no job lock held'}")
            elif q.system == "rq":
                members = list(c.sscan_iter(f"rq:workers:{q.queue}", count=500))[:1000]
                states = _rq_worker_liveness(c, members, client_names, now, stale_after_s)
                live = sum(states.values())
                stale = len(states) - live
                row.update(live_workers=live, stale_workers=stale, alive=live > 0,
                           evidence=f"{live} workers connected or heartbeating, {stale} registered but gone "
                                    "(connection closed and heartbeat stale, or hash expired)")
            elif q.system == "sidekiq":
                live = sum(1 for p in sidekiq if p["alive"] and (not p["queues"] or q.queue in p["queues"]))
                stale = sum(1 for p in sidekiq if not p["alive"] and (not p["queues"] or q.queue in p["queues"]))
                row.update(live_workers=live, stale_workers=stale, alive=live > 0,
                           evidence=f"{live} processes beating within {stale_after_s:.0f}s, {stale} stale")
            elif q.system == "celery":
                row.update(blocked_clients=brpop_clients, live_workers=brpop_clients, alive=brpop_clients > 0,
                           evidence=f"{brpop_clients} unnamed clients blocked on BRPOP (Celery consumers, any queue)")
            rows.append(row)
        return pd.DataFrame(rows, columns=CONSUMER_COLUMNS)
    return target.read("consumers", work)


def _bull_base_of(client_name: str, bases: set[str]) -> str | None:
    """The queue a BullMQ/Bull connection belongs to: its name is ``<prefix>:<queue>`` (Python BullMQ) or
    ``<prefix>:<base64 queue>`` (BullMQ for Node.js), workers adding ``:w:<name>``."""
    from .redis import bullmq_queue_of

    name = (client_name or "").split(":w:")[0]
    if name in bases:
        return name
    decoded = bullmq_queue_of(name)
    return decoded if decoded in bases else None


def _any_lock(c: redis_lib.Redis, base: str) -> bool:
    head = c.lrange(f"{base}:active", 0, 9)
    if not head:
        return False
    return bool(c.exists(*[f"{base}:{j}:lock" for j in head]))


def _rq_worker_liveness(c: redis_lib.Redis, members: list[str], client_names: set[str], now: float,
                        stale_after_s: float) -> dict[str, bool]:
    """RQ worker key -> alive. Alive: its connection (RQ names it after the worker) is open, or its
    heartbeat is recent. A registered worker whose hash expired or went quiet is dead."""
    if not members:
        return {}
    pipe = c.pipeline(transaction=False)
    for m in members:
        pipe.hget(m, "last_heartbeat")
    out = {}
    for m, hb in zip(members, pipe.execute(raise_on_error=False)):
        name = m.removeprefix("rq:worker:")
        fresh = False
        if hb and not isinstance(hb, Exception):
            try:
                ts = pd.Timestamp(hb)
                ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
                fresh = now - ts.timestamp() <= stale_after_s
            except ValueError:
                fresh = False
        out[m] = bool(hb) and not isinstance(hb, Exception) and (name in client_names or fresh)
    return out


def _sidekiq_processes(c: redis_lib.Redis, now: float, stale_after_s: float) -> list[dict[str, Any]]:
    ids = list(c.sscan_iter("processes", count=500))[:1000]
    if not ids:
        return []
    pipe = c.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(i, ["beat", "info", "busy", "quiet"])
    out = []
    for ident, res in zip(ids, pipe.execute(raise_on_error=False)):
        if isinstance(res, Exception) or not res or res[0] is None:
            out.append({"identity": ident, "alive": False, "queues": [], "busy": 0})
            continue
        beat, info, busy, _quiet = res
        try:
            queues = json.loads(info or "{}").get("queues", [])
        except ValueError:
            queues = []
        out.append({"identity": ident, "alive": now - float(beat) <= stale_after_s, "queues": queues,
                    "busy": int(busy or 0)})
    return out


# --------------------------------------------------------------------------- failures

FAILURE_COLUMNS = ["system", "queue", "reason", "count", "last_failed_at", "example_job"]


def failed_reasons(target: RedisTarget, queues: pd.DataFrame | SourceError, *,
                   limit: int = 200) -> pd.DataFrame | SourceError:
    """The most recent failures per queue (at most ``limit`` each), grouped by reason."""
    if isinstance(queues, SourceError):
        return queues

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        sidekiq_done = False
        for q in queues.itertuples():
            if q.system in ("bullmq", "bull"):
                ids = c.zrevrange(f"{q.base}:failed", 0, limit - 1)
                if not ids:
                    continue
                pipe = c.pipeline(transaction=False)
                for j in ids:
                    pipe.hmget(f"{q.base}:{j}", ["failedReason", "finishedOn"])
                for j, res in zip(ids, pipe.execute(raise_on_error=False)):
                    if isinstance(res, Exception):
                        continue
                    reason, finished = res
                    rows.append({"system": q.system, "queue": q.queue, "reason": _first_line(reason), "job": j,
                                 "at": pd.Timestamp(int(finished), unit="ms", tz="UTC") if finished else pd.NaT})
            elif q.system == "rq":
                name = q.base.removeprefix("rq:queue:")
                ids = c.zrevrange(f"rq:failed:{name}", 0, limit - 1)
                pipe = c.pipeline(transaction=False)
                for j in ids:
                    pipe.hmget(f"rq:job:{j}", ["exc_info", "ended_at"])
                for j, res in zip(ids, pipe.execute(raise_on_error=False) if ids else []):
                    if isinstance(res, Exception):
                        continue
                    exc, ended = res
                    rows.append({"system": "rq", "queue": q.queue, "reason": _last_line(exc), "job": j,
                                 "at": pd.Timestamp(ended, tz="UTC") if ended else pd.NaT})
            elif q.system == "sidekiq" and not sidekiq_done:
                sidekiq_done = True
                for zset in ("retry", "dead"):
                    for raw, score in c.zrevrange(zset, 0, limit - 1, withscores=True):
                        try:
                            job = json.loads(raw)
                        except ValueError:
                            continue
                        rows.append({"system": "sidekiq", "queue": job.get("queue", "?"),
                                     "reason": f"{job.get('error_class', '?')}: {_first_line(job.get('error_message'))}",
                                     "job": job.get("jid", ""), "at": pd.Timestamp(score, unit="s", tz="UTC")})
        if not rows:
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        df = pd.DataFrame(rows)
        out = (df.groupby(["system", "queue", "reason"], as_index=False, dropna=False)
               .agg(count=("job", "size"), last_failed_at=("at", "max"), example_job=("job", "first")))
        return out.sort_values("count", ascending=False, ignore_index=True)[FAILURE_COLUMNS]
    return target.read("failed_reasons", work)


def _first_line(text: Any) -> str:
    from ..redact import redact

    return redact(str(text or "").strip().splitlines()[0][:200]) if text else "(no reason recorded)"


def _last_line(text: Any) -> str:
    from ..redact import redact

    lines = [ln for ln in str(text or "").strip().splitlines() if ln.strip()]
    return redact(lines[-1][:200]) if lines else "(no traceback recorded)"


# --------------------------------------------------------------------------- draining

def sample_depths(target: RedisTarget, queues: pd.DataFrame | SourceError, *, seconds: float = 10.0,
                  samples: int = 6) -> pd.DataFrame | SourceError:
    """Depths of every queue taken ``samples`` times over ``seconds``: columns t (UTC), system, queue,
    backlog, active, failed, completed, created_total."""
    if isinstance(queues, SourceError):
        return queues
    samples = max(samples, 2)
    frames = []
    interval = seconds / (samples - 1) if seconds > 0 else 0.0
    for i in range(samples):
        d = queue_depths(target, queues)
        if isinstance(d, SourceError):
            if not frames:
                return d
            break
        d = d[["system", "queue", "backlog", "active", "failed", "completed", "created_total"]].copy()
        d.insert(0, "t", pd.Timestamp.now(tz="UTC"))
        frames.append(d)
        if i < samples - 1:
            time.sleep(interval)
    return pd.concat(frames, ignore_index=True)


def drain_rates(samples: pd.DataFrame | SourceError) -> pd.DataFrame | SourceError:
    """Per queue from sampled depths: net change per second of the backlog, arrivals per second (where the
    library keeps an id counter), completions per second (arrivals minus growth), seconds to drain."""
    if isinstance(samples, SourceError):
        return samples
    rows = []
    for (system, queue), g in samples.groupby(["system", "queue"], sort=False):
        g = g.sort_values("t")
        first, last = g.iloc[0], g.iloc[-1]
        secs = (last["t"] - first["t"]).total_seconds()
        net = (last["backlog"] - first["backlog"]) / secs if secs > 0 else 0.0
        arrivals = ((last["created_total"] or 0) - (first["created_total"] or 0)) / secs \
            if secs > 0 and system in ("bullmq", "bull") else float("nan")
        in_flight = (last["backlog"] + last["active"]) - (first["backlog"] + first["active"])
        completions = (arrivals * secs - in_flight) / secs if secs > 0 and arrivals == arrivals else float("nan")
        drain = last["backlog"] / -net if net < 0 else (0.0 if last["backlog"] == 0 else float("inf"))
        rows.append({"system": system, "queue": queue, "backlog": int(last["backlog"]), "interval_s": secs,
                     "net_per_s": net, "arrivals_per_s": arrivals, "completions_per_s": completions,
                     "time_to_drain_s": drain, "growing": net > 0})
    return pd.DataFrame(rows, columns=["system", "queue", "backlog", "interval_s", "net_per_s", "arrivals_per_s",
                                       "completions_per_s", "time_to_drain_s", "growing"])



def select(queues: pd.DataFrame | SourceError, name: str) -> pd.DataFrame | SourceError:
    """The queues called ``name`` (exact, or the part after the prefix: ``emails`` selects ``bull:emails``);
    every queue when ``name`` is empty."""
    if isinstance(queues, SourceError) or not name:
        return queues
    short = queues["queue"].astype(str).str.rsplit(":", n=1).str[-1]
    out = queues[(queues["queue"] == name) | (short == name)].reset_index(drop=True)
    out.attrs.update(queues.attrs, selected=name, available=list(queues["queue"]))
    return out
