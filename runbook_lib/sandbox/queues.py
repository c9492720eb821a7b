"""Real queue workloads for the sandbox and the tests, made by BullMQ's own Python package.

Each role runs in its own process (``python -m runbook_lib.sandbox.queues ROLE ...``) so that a worker
can be killed with SIGKILL mid-job, exactly as a crashed worker dies in production.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import RunbookError


def _require_bullmq() -> Any:
    try:
        import bullmq
    except ImportError:
        raise RunbookError("the queue demo needs BullMQ's Python package: pip install bullmq") from None
    return bullmq


async def add_jobs(url: str, queue: str, count: int, name: str = "job", opts: dict[str, Any] | None = None) -> list[str]:
    """Add ``count`` jobs with BullMQ's Queue.add; returns their ids."""
    bullmq = _require_bullmq()
    q = bullmq.Queue(queue, {"connection": url})
    try:
        ids = []
        for i in range(count):
            job = await q.add(name, {"n": i}, opts or {})
            ids.append(str(job.id))
        return ids
    finally:
        await q.close()


async def job_counts(url: str, queue: str) -> dict[str, int]:
    """What BullMQ itself reports (Queue.getJobCounts)."""
    bullmq = _require_bullmq()
    q = bullmq.Queue(queue, {"connection": url})
    try:
        return dict(await q.getJobCounts())
    finally:
        await q.close()


async def _worker(url: str, queue: str, mode: str, lock_ms: int, concurrency: int) -> None:
    bullmq = _require_bullmq()

    async def process(job: Any, token: Any) -> Any:
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "fail":
            raise ConnectionError("connect ECONNREFUSED 10.0.0.7:443")
        await asyncio.sleep(0.05)
        return "ok"

    worker = bullmq.Worker(queue, process, {"connection": url, "lockDuration": lock_ms, "concurrency": concurrency,
                                            "stalledInterval": 3_600_000, "name": f"{mode}-worker"})
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.close(force=True)


async def _producer(url: str, queue: str, per_second: float) -> None:
    bullmq = _require_bullmq()
    q = bullmq.Queue(queue, {"connection": url})
    n = 0
    while True:
        await q.add("send", {"n": n})
        n += 1
        await asyncio.sleep(1.0 / per_second)


URL_ENV = "RUNBOOK_SANDBOX_QUEUE_URL"


def start_role(role: str, url: str, *args: str) -> subprocess.Popen[bytes]:
    """Start a role process: ``worker URL QUEUE MODE LOCK_MS CONCURRENCY`` or ``producer URL QUEUE RATE``.
    The URL (it holds a password) goes through the environment, not the command line ``ps`` shows."""
    return subprocess.Popen([sys.executable, "-m", "runbook_lib.sandbox.queues", role, *args],
                            env={**os.environ, URL_ENV: url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class StagedQueues:
    """A BullMQ backlog with stalled jobs (dead worker), a failing live worker, and a producer."""

    url: str
    stalled_ids: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def _wait_active(url: str, queue: str, n: int, timeout: float = 30.0) -> list[str]:
    import redis

    c = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = c.lrange(f"bull:{queue}:active", 0, -1)
        if len(ids) >= n:
            c.close()
            return ids
        time.sleep(0.05)
    c.close()
    raise RunbookError(f"BullMQ worker did not take {n} jobs from {queue} within {timeout:.0f}s")


def stage_queue_backlog(url: str, *, backlog: int = 300, stalled: int = 4, producer_rate: float = 5.0) -> StagedQueues:
    """``emails``: a backlog whose only worker was killed mid-job (its ``stalled`` jobs stay active with
    expired locks) while a producer keeps adding jobs; ``webhooks``: a live worker failing every job."""
    staged = StagedQueues(url)
    try:
        asyncio.run(add_jobs(url, "emails", backlog, "send-receipt"))
        asyncio.run(add_jobs(url, "webhooks", 30, "deliver"))
        hang = start_role("worker", url, "emails", "hang", "1000", str(stalled))
        staged.processes.append(hang)
        staged.stalled_ids = _wait_active(url, "emails", stalled)
        hang.kill()
        hang.wait(timeout=10)
        time.sleep(1.2)  # the 1 s locks of the killed worker expire: its jobs are now stalled
        staged.processes.append(start_role("worker", url, "webhooks", "fail", "30000", "2"))
        staged.processes.append(start_role("producer", url, "emails", str(producer_rate)))
    except BaseException:
        staged.stop()
        raise
    return staged


def main(argv: list[str]) -> None:
    role, url = argv[0], os.environ[URL_ENV]
    if role == "worker":
        queue, mode, lock_ms, concurrency = argv[1:5]
        asyncio.run(_worker(url, queue, mode, int(lock_ms), int(concurrency)))
    elif role == "producer":
        queue, rate = argv[1:3]
        asyncio.run(_producer(url, queue, float(rate)))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
