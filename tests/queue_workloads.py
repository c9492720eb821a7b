"""Queue workloads run by each library's primary implementation, in their own processes so they can be SIGKILLed:
BullMQ and Bull (Node.js, from the npm registry), RQ and Celery (Python), Sidekiq (Debian's ruby-sidekiq gem).

Every process starts in a session of its own; :func:`kill` sends SIGKILL to the whole group (a worker and the
children it forked die together, as when a container is OOM-killed). Redis URLs travel in the environment only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

NODE_SCRIPT = Path(__file__).parent / "node" / "queues.js"
NODE_PACKAGES = ("bullmq@5", "bull@4", "ioredis@5", "pino@9", "pino-http@10")


def install_node_packages(directory: Path) -> Path:
    """``npm install`` BullMQ, Bull, ioredis, pino and pino-http into ``directory``; returns its node_modules."""
    proc = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--no-save", *NODE_PACKAGES],
                          cwd=directory, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"npm install {' '.join(NODE_PACKAGES)} failed: {proc.stderr.strip()[-300:]}")
    return directory / "node_modules"


class Node:
    """Runs ``tests/node/queues.js`` for one library against one Redis."""

    def __init__(self, modules: Path, lib: str, url: str) -> None:
        self.modules, self.lib, self.url = modules, lib, url

    def _env(self) -> dict[str, str]:
        return {**os.environ, "QUEUE_URL": self.url, "NODE_PATH": str(self.modules)}

    def run(self, role: str, queue: str, *args: Any, timeout: float = 120) -> str:
        proc = subprocess.run(["node", str(NODE_SCRIPT), self.lib, role, queue, *map(str, args)], env=self._env(),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.lib} {role} failed: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    def start(self, role: str, queue: str, *args: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["node", str(NODE_SCRIPT), self.lib, role, queue, *map(str, args)], env=self._env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        if role == "work":
            line = p.stdout.readline() if p.stdout else ""
            assert line.strip() == "ready", f"{self.lib} worker did not start: {p.stderr.read() if p.stderr else ''}"
        return p

    def counts(self, queue: str) -> dict[str, int]:
        """What the library itself reports (``getJobCounts``)."""
        return json.loads(self.run("counts", queue))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc), including ones in sessions of their own."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill(p: subprocess.Popen[Any]) -> None:
    """SIGKILL the process, its session and every process it started (RQ's work-horse runs in a session of its
    own), as a container's OOM kill ends them all; then reap it."""
    victims = [p.pid, *descendants(p.pid)]
    try:
        if os.getpgid(p.pid) == p.pid:  # started in a session of its own: its whole group
            os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=20)


def rq_worker(url: str, queue: str, name: str, *, worker_ttl: int = 420) -> subprocess.Popen[bytes]:
    """RQ's own ``rq worker`` for ``queue``."""
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "rq"), "worker", queue, "--url", url,
                             "--name", name, "--worker-ttl", str(worker_ttl)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


CELERY_APP = textwrap.dedent("""
    import os, time
    from celery import Celery
    app = Celery("shop", broker=os.environ["CELERY_BROKER_URL"])
    app.conf.broker_transport_options = {"queue_order_strategy": "priority"}
    app.conf.worker_hijack_root_logger = False

    @app.task(name="shop.charge")
    def charge(n, seconds=0.0):
        time.sleep(seconds)
        return n
""")


def celery_worker(app_dir: Path, url: str, queue: str, *, concurrency: int = 1) -> subprocess.Popen[bytes]:
    """Celery's own worker (prefork pool) consuming ``queue``; ``app_dir`` holds ``shop.py`` (:data:`CELERY_APP`)."""
    (app_dir / "shop.py").write_text(CELERY_APP)
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "shop", "worker", "-Q", queue, "-c",
                             str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
                             "-l", "WARNING"], cwd=app_dir, env={**os.environ, "CELERY_BROKER_URL": url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def celery_send(url: str, queue: str, count: int, seconds: float = 0.0) -> None:
    """Send ``count`` shop.charge tasks with Celery's own client."""
    from celery import Celery

    app = Celery("shop", broker=url)
    app.conf.broker_transport_options = {"queue_order_strategy": "priority"}
    with app.connection_for_write() as conn:
        for i in range(count):
            app.send_task("shop.charge", args=(i, seconds), queue=queue, connection=conn)


SIDEKIQ_JOBS = textwrap.dedent("""
    require "sidekiq"
    class SlowJob
      include Sidekiq::Worker
      sidekiq_options queue: "reports", retry: false
      def perform(seconds) = sleep(seconds)
    end
""")


def sidekiq_enqueue(directory: Path, url: str, count: int, seconds: float) -> None:
    """Enqueue ``count`` SlowJob(seconds) with Sidekiq's own client."""
    (directory / "jobs.rb").write_text(SIDEKIQ_JOBS)
    script = f'require_relative "jobs"; {count}.times {{ SlowJob.perform_async({seconds}) }}'
    subprocess.run(["ruby", "-e", script], cwd=directory, env={**os.environ, "REDIS_URL": url}, check=True, timeout=120)


def sidekiq_process(directory: Path, url: str, *, concurrency: int = 2) -> subprocess.Popen[bytes]:
    """Sidekiq's own server process working the ``reports`` queue."""
    (directory / "jobs.rb").write_text(SIDEKIQ_JOBS)
    return subprocess.Popen(["sidekiq", "-r", str(directory / "jobs.rb"), "-q", "reports", "-c", str(concurrency)],
                            cwd=directory, env={**os.environ, "REDIS_URL": url}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")
