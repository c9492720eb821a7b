"""The full queue_backlog collection over 50 BullMQ-layout queues holding 1,000,000 jobs.

Jobs are written in BullMQ's key layout with pipelined writes (making a million jobs through the library
would take the better part of an hour; the tests check the layout against BullMQ itself). Prints the median
time of the collection (discover, depths, an observation with no wait: two depth samples and the liveness
evidence at both ends, consumers, draining, stuck jobs, failures, INFO, clients,
slowlog; memory by key pattern has its own time budget and is timed on its own) and its ratio to a baseline
measured in the same run: one pipelined LLEN/ZCARD of every state key. Target: collection under 2 s.

Usage: .venv/bin/python bench/queue_collect.py [--queues 50] [--jobs 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_lib.sandbox import start_redis  # noqa: E402
from runbook_lib.sources import SourceError  # noqa: E402
from runbook_lib.sources import queues as Q  # noqa: E402
from runbook_lib.sources import redis as R  # noqa: E402


def populate(c: redis.Redis, queues: int, jobs: int) -> None:
    per = jobs // queues
    now = int(time.time() * 1000)
    for qi in range(queues):
        b = f"bull:q{qi:02d}"
        pipe = c.pipeline(transaction=False)
        pipe.hset(f"{b}:meta", "opts.maxLenEvents", 10000)
        pipe.set(f"{b}:id", per)
        waiting, completed, failed, delayed, active = int(per * 0.6), int(per * 0.3), int(per * 0.05), \
            int(per * 0.045), int(per * 0.005)
        ids = iter(range(1, per + 1))
        for chunk in range(0, waiting, 5000):
            pipe.lpush(f"{b}:wait", *[next(ids) for _ in range(min(5000, waiting - chunk))])
        for name, n, score in (("completed", completed, now), ("failed", failed, now), ("delayed", delayed, None)):
            for chunk in range(0, n, 5000):
                batch = [next(ids) for _ in range(min(5000, n - chunk))]
                pipe.zadd(f"{b}:{name}", {j: (score if score else (now + 60_000 + j) << 12) for j in batch})
        act = [next(ids) for _ in range(active)]
        if act:
            pipe.lpush(f"{b}:active", *act)
        for j in act[:active // 2]:
            pipe.set(f"{b}:{j}:lock", "token", px=600_000)
        for j in act + list(range(1, 3)):
            pipe.hset(f"{b}:{j}", mapping={"name": "send", "timestamp": now - 5000, "processedOn": now - 4000})
        for j in range(waiting + completed + 1, waiting + completed + 201):
            pipe.hset(f"{b}:{j}", mapping={"failedReason": f"timeout after {j % 3}s", "finishedOn": now})
        pipe.execute()


def collect(t: R.RedisTarget) -> dict[str, object]:
    info = R.server_info(t)
    queues = Q.discover_queues(t)
    watched = Q.observe(t, queues, seconds=0, samples=2)
    out: dict[str, object] = {"queues": queues, "memory": R.memory(info), "depths": Q.queue_depths(t, queues),
                              "consumers": Q.consumers(watched), "drains": Q.drain_rates(watched),
                              "stuck": Q.stuck_jobs(t, queues), "failed": Q.failed_reasons(t, queues),
                              "clients": R.clients(t), "slowlog": R.slowlog(t)}
    after = R.server_info(t)
    out["delta"] = R.info_delta(info, after)
    return out


def baseline(c: redis.Redis, queues: int) -> None:
    pipe = c.pipeline(transaction=False)
    for qi in range(queues):
        b = f"bull:q{qi:02d}"
        pipe.llen(f"{b}:wait"), pipe.llen(f"{b}:paused"), pipe.llen(f"{b}:active")
        for s in ("prioritized", "delayed", "waiting-children", "completed", "failed"):
            pipe.zcard(f"{b}:{s}")
    pipe.execute()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = start_redis()
    try:
        c = redis.Redis.from_url(server.url, decode_responses=True)
        t0 = time.perf_counter()
        populate(c, args.queues, args.jobs)
        print(f"wrote {args.jobs:,} jobs in {args.queues} queues ({c.dbsize():,} keys) in {time.perf_counter() - t0:.1f} s")
        target = R.RedisTarget(server.url)
        collect(target)
        ours, base, failures = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            baseline(c, args.queues)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = collect(target)
            ours.append(time.perf_counter() - t0)
            failures += [k for k, v in result.items() if isinstance(v, SourceError)]
        t0 = time.perf_counter()
        keys = R.keyspace_memory(target, budget_s=5)
        keyspace_s = time.perf_counter() - t0
        o, b = statistics.median(ours), statistics.median(base)
        depths = result["depths"]
        print(f"collection   median {o * 1000:8.1f} ms  ({', '.join(f'{x * 1000:.0f}' for x in ours)})")
        print(f"baseline     median {b * 1000:8.1f} ms  (one pipelined LLEN/ZCARD of every state key)")
        print(f"ratio: {o / b:.1f}x; target under 2 s: {'met' if o < 2 else 'MISSED'}; failed checks: {failures or 'none'}")
        print(f"jobs counted: {int(depths[['waiting', 'active', 'delayed', 'completed', 'failed']].sum().sum()):,}; "
              f"stuck rows: {len(result['stuck'])}; memory by key pattern (own 5 s budget): {keyspace_s:.2f} s, "
              f"complete={keys.attrs['complete']}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
