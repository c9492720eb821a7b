"""Job queues on Redis: BullMQ, Bull 3/4, Celery (kombu), RQ and Sidekiq, read with plain commands.

One adapter per library (``bullmq.py``, ``bull.py``, ``celery.py``, ``rq.py``, ``sidekiq.py``), each giving the same
functions (:class:`base.QueueAdapter`); this module runs them over the queues found and concatenates what they return.
Counts follow each library's own definitions but never run a library's scripts and never clean up while counting;
ranges are bounded and job hashes are read with HMGET of named fields. Every function returns a DataFrame (or an
:class:`Observation`) or a SourceError.

Whether anything consumes a queue is decided only by evidence a dead worker cannot leave behind: connections open
now, heartbeats seen to advance, jobs taken during the sample. Keys with a TTL that workers write (BullMQ's
``stalled-check``, job locks, RQ worker hashes) are reported as supporting evidence and never decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
import redis as redis_lib

from .. import Evidence, SourceError
from ..redis import RedisTarget
from .base import (DEPTH_COLUMNS, FAILURE_COLUMNS, STUCK_COLUMNS, Client, Moment, Progress, Queue, QueueAdapter,
                   StuckLimits)
from .bull import Bull
from .bullmq import BullMQ
from .celery import Celery
from .rq import RQ
from .sidekiq import Sidekiq

SOURCE = "queues"
QUEUE_COLUMNS = ["system", "queue", "base"]
CONSUMER_COLUMNS = ["system", "queue", "verdict", "alive", "live_workers", "stale_workers", "blocked_clients",
                    "decided_by", "supporting", "holdup"]
DRAIN_COLUMNS = ["system", "queue", "backlog", "interval_s", "net_per_s", "arrivals_per_s", "finished",
                 "completions_per_s", "time_to_drain_s", "growing", "consumed"]
SAMPLE_COLUMNS = ["t", "system", "queue", "backlog", "active", "delayed", "waiting_children", "failed", "completed",
                  "created_total", "finished_total"]

ADAPTERS: dict[str, QueueAdapter] = {a.system: a for a in (BullMQ(), Bull(), Celery(), RQ(), Sidekiq())}
T = TypeVar("T")

__all__ = ["ADAPTERS", "DEPTH_COLUMNS", "FAILURE_COLUMNS", "STUCK_COLUMNS", "Observation", "consumers",
           "discover_queues", "drain_rates", "failed_reasons", "observe", "queue_depths", "select", "stuck_jobs"]


def _by_system(queues: pd.DataFrame) -> dict[str, list[Queue]]:
    out: dict[str, list[Queue]] = {}
    for r in queues.itertuples():
        out.setdefault(r.system, []).append(Queue(r.system, r.queue, r.base))
    return out


def _each(queues: pd.DataFrame, work: Callable[[QueueAdapter, list[Queue]], list[T]]) -> list[T]:
    """``work`` for every library present, its rows concatenated in the order of ``ADAPTERS``."""
    grouped = _by_system(queues)
    return [row for system, adapter in ADAPTERS.items() if system in grouped for row in work(adapter, grouped[system])]


def moment(c: redis_lib.Redis, own_name: str) -> Moment:
    """Now, and CLIENT LIST without our own connection (None where the server refuses the command)."""
    try:
        clients: tuple[Client, ...] | None = tuple(Client.from_redis(e) for e in c.client_list()
                                                   if e.get("name") != own_name)
    except redis_lib.ResponseError:
        clients = None
    return Moment(time.time(), clients)


# --------------------------------------------------------------------------- discovery and depths

def discover_queues(target: RedisTarget, *, budget_s: float = 3.0, max_queues: int = 1000) -> Evidence:
    """Every library's queues in this Redis. Columns: system, queue (display name), base (key prefix);
    ``attrs['truncated']`` when more than ``max_queues`` were found."""
    def work(c: redis_lib.Redis) -> pd.DataFrame:
        deadline = time.monotonic() + budget_s
        found = sorted({q for a in ADAPTERS.values() for q in a.discover(c, deadline)},
                       key=lambda q: (q.system, q.name))
        df = pd.DataFrame([(q.system, q.name, q.base) for q in found[:max_queues]], columns=QUEUE_COLUMNS)
        df.attrs["truncated"] = len(found) > max_queues
        return df
    return target.read("discover_queues", work)


def select(queues: Evidence, name: str) -> Evidence:
    """The queues called ``name`` (exact, or the part after the prefix: ``emails`` selects ``bull:emails``);
    every queue when ``name`` is empty."""
    if isinstance(queues, SourceError) or not name:
        return queues
    short = queues["queue"].astype(str).str.rsplit(":", n=1).str[-1]
    out = queues[(queues["queue"] == name) | (short == name)].reset_index(drop=True)
    out.attrs.update(queues.attrs, selected=name, available=list(queues["queue"]))
    return out


def queue_depths(target: RedisTarget, queues: Evidence) -> Evidence:
    """One row per queue: jobs in each state as its library counts them, ``backlog`` (work not yet started),
    whether paused, the age of the oldest waiting job, ``created_total`` (BullMQ/Bull id counter) and
    ``finished_total`` (RQ's finished and failed registries)."""
    if isinstance(queues, SourceError):
        return queues
    return target.read("queue_depths", lambda c: pd.DataFrame(_each(queues, lambda a, qs: a.depths(c, qs)),
                                                              columns=DEPTH_COLUMNS))


# --------------------------------------------------------------------------- observation: liveness and draining

@dataclass
class Observation:
    """Queues watched over a sample: depths at each step, and each library's liveness evidence at the start and at
    the end (connections, heartbeats, event streams)."""

    queues: pd.DataFrame
    samples: pd.DataFrame
    first: dict[Queue, Any] = field(default_factory=dict)
    last: dict[Queue, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def _repr_html_(self) -> str:
        return (f"<p>{len(self.queues)} queues watched for {self.seconds:.1f}s "
                f"({self.samples['t'].nunique() if len(self.samples) else 0} samples)</p>")


def observe(target: RedisTarget, queues: Evidence, *, seconds: float = 10.0, samples: int = 6) -> Observation | SourceError:
    """Watch every queue for ``seconds``: ``samples`` depth readings, and liveness evidence at both ends."""
    if isinstance(queues, SourceError):
        return queues
    samples = max(samples, 2)
    interval = seconds / (samples - 1) if seconds > 0 else 0.0

    def work(c: redis_lib.Redis) -> Observation:
        grouped = _by_system(queues)
        start = moment(c, target.safety.client_name)
        first = {q: e for s, qs in grouped.items() for q, e in ADAPTERS[s].snapshot(c, qs, start, None).items()}
        frames = []
        for i in range(samples):
            frames.append(_sample(c, queues))
            if i < samples - 1:
                time.sleep(interval)
        end = moment(c, target.safety.client_name)
        last = {q: e for s, qs in grouped.items() for q, e in ADAPTERS[s].snapshot(c, qs, end, first).items()}
        return Observation(queues, pd.concat(frames, ignore_index=True), first, last, end.at - start.at)
    return target.read("observe", work)


def _sample(c: redis_lib.Redis, queues: pd.DataFrame) -> pd.DataFrame:
    d = pd.DataFrame(_each(queues, lambda a, qs: a.depths(c, qs)), columns=DEPTH_COLUMNS)
    d.insert(0, "t", pd.Timestamp.now(tz="UTC"))
    return d[SAMPLE_COLUMNS]


def _progress(samples: pd.DataFrame) -> dict[tuple[str, str], tuple[Progress, float]]:
    """Per (system, queue): what was finished during the sample, and the arrival count (NaN where unknown)."""
    out = {}
    for (system, queue), g in samples.groupby(["system", "queue"], sort=False):
        g = g.sort_values("t")
        a, b = g.iloc[0], g.iloc[-1]
        secs = (b["t"] - a["t"]).total_seconds()
        net = int(b["backlog"] - a["backlog"])
        arrivals, finished = float("nan"), None
        if pd.notna(a["created_total"]) and pd.notna(b["created_total"]):
            arrivals = float(b["created_total"] - a["created_total"])
            in_system = ["backlog", "active", "delayed", "waiting_children"]
            finished = max(arrivals - float(b[in_system].sum() - a[in_system].sum()), 0.0)
        elif pd.notna(a["finished_total"]) and pd.notna(b["finished_total"]):
            done = float(b["finished_total"] - a["finished_total"])
            finished = done if done > 0 else None  # registries may keep nothing (result_ttl=0): zero is not evidence
        out[(system, queue)] = (Progress(finished, net, secs), arrivals)
    return out


def drain_rates(obs: Observation | SourceError) -> Evidence:
    """Per queue over the sample: net change of the backlog per second, arrivals and completions per second where
    the library counts them, jobs finished, seconds to drain at the current rate, whether it grew, and whether
    anything was consumed (True / False / None when the evidence cannot tell)."""
    if isinstance(obs, SourceError):
        return obs
    last = obs.samples.sort_values("t").groupby(["system", "queue"], sort=False).tail(1).set_index(["system", "queue"])
    rows = []
    for (system, queue), (p, arrivals) in _progress(obs.samples).items():
        backlog = int(last.loc[(system, queue), "backlog"])
        net = p.net / p.seconds if p.seconds > 0 else 0.0
        rows.append({"system": system, "queue": queue, "backlog": backlog, "interval_s": p.seconds, "net_per_s": net,
                     "arrivals_per_s": arrivals / p.seconds if p.seconds > 0 else float("nan"),
                     "finished": p.finished,
                     "completions_per_s": p.finished / p.seconds if p.finished is not None and p.seconds > 0
                     else float("nan"),
                     "time_to_drain_s": backlog / -net if net < 0 else (0.0 if backlog == 0 else float("inf")),
                     "growing": net > 0, "consumed": p.consumed})
    return pd.DataFrame(rows, columns=DRAIN_COLUMNS)


def consumers(obs: Observation | SourceError, *, stale_after_s: float = 60.0) -> Evidence:
    """Is anything consuming each queue? ``verdict`` alive / none / unknown, and ``decided_by``: the evidence that
    decided it (see each adapter); ``supporting``: evidence that cannot decide on its own; ``holdup``: what keeps
    connected consumers from taking jobs (paused, rate limited, busy)."""
    if isinstance(obs, SourceError):
        return obs
    progress = _progress(obs.samples)
    rows = []
    for q in (Queue(r.system, r.queue, r.base) for r in obs.queues.itertuples()):
        p = progress.get((q.system, q.name), (None, 0.0))[0]
        v = ADAPTERS[q.system].liveness(q, obs.first[q], obs.last[q], p, stale_after_s)
        rows.append({"system": q.system, "queue": q.name, "verdict": v.verdict, "alive": v.verdict == "alive",
                     "live_workers": v.live_workers, "stale_workers": v.stale_workers,
                     "blocked_clients": v.blocked_clients, "decided_by": v.decided_by, "supporting": v.supporting,
                     "holdup": v.holdup})
    return pd.DataFrame(rows, columns=CONSUMER_COLUMNS)


# --------------------------------------------------------------------------- stuck jobs and failures

def stuck_jobs(target: RedisTarget, queues: Evidence, *, hung_after_s: float = 600.0, overdue_after_s: float = 60.0,
               celery_visibility_timeout_s: float = 3600.0, stale_after_s: float = 60.0,
               limit: int = 1000) -> Evidence:
    """Jobs that are not moving, one row each (at most ``limit`` per queue): ``stalled`` (BullMQ/Bull active with no
    lock: its worker is gone), ``hung`` (locked but processing longer than ``hung_after_s``), ``overdue_delayed``
    (delayed past its due time by ``overdue_after_s``), ``abandoned`` (RQ work in progress whose worker's connection
    is closed, or past its expiry), ``lost`` (Sidekiq jobs in flight on a process with no heartbeat for
    ``stale_after_s``), ``unacked_overdue`` (Celery messages delivered longer ago than the visibility timeout)."""
    if isinstance(queues, SourceError):
        return queues
    limits = StuckLimits(hung_after_s, overdue_after_s, celery_visibility_timeout_s, stale_after_s, limit)

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        now = moment(c, target.safety.client_name)
        return pd.DataFrame(_each(queues, lambda a, qs: a.stuck_jobs(c, qs, limits, now)), columns=STUCK_COLUMNS)
    return target.read("stuck_jobs", work)


def failed_reasons(target: RedisTarget, queues: Evidence, *, limit: int = 200) -> Evidence:
    """The most recent failures per queue (at most ``limit`` each), grouped by reason, most frequent first."""
    if isinstance(queues, SourceError):
        return queues

    def work(c: redis_lib.Redis) -> pd.DataFrame:
        rows = _each(queues, lambda a, qs: a.failures(c, qs, limit))
        if not rows:
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        out = (pd.DataFrame(rows).groupby(["system", "queue", "reason"], as_index=False, dropna=False)
               .agg(count=("job", "size"), last_failed_at=("at", "max"), example_job=("job", "first")))
        return out.sort_values("count", ascending=False, ignore_index=True)[FAILURE_COLUMNS]
    return target.read("failed_reasons", work)
