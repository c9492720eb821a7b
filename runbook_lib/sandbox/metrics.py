"""A real Prometheus scraping the real postgres_exporter and redis_exporter (Debian's packages) of a sandbox.

For the tests and benchmarks of the history source: a short scrape interval so that an incident induced over a
minute has a history. Secrets reach the exporters through their environment, never their command lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import RunbookError
from .servers import Sandbox, free_port

BINARIES = {"prometheus": "prometheus", "prometheus-postgres-exporter": "prometheus-postgres-exporter",
            "prometheus-redis-exporter": "prometheus-redis-exporter"}


def missing_binaries() -> list[str]:
    """The Debian packages whose programs are not on PATH."""
    return [pkg for pkg, prog in BINARIES.items() if not shutil.which(prog)]


@dataclass
class MetricsStack:
    """Prometheus at ``url`` and the exporters it scrapes; ``stop()`` ends them and removes their data."""

    url: str
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for p in reversed(self.processes):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait_for_series(self, promql: str, timeout_s: float = 30.0) -> None:
        """Until ``promql`` returns a series (the first scrapes landed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
                if r.json().get("data", {}).get("result"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise RunbookError(f"Prometheus has no series for {promql} after {timeout_s:g} s")


def start_metrics(sandbox: Sandbox, *, scrape_s: float = 1.0, check_keys: str = "",
                  storage: Path | None = None) -> MetricsStack:
    """Exporters for the sandbox's Postgres and Redis, and a Prometheus scraping them every ``scrape_s``.

    ``check_keys``: redis_exporter's ``-check-keys`` patterns (lists it reports the length of as ``redis_key_size``).
    ``storage``: an existing TSDB directory (backfilled blocks) instead of an empty one.
    """
    lacking = missing_binaries()
    if lacking:
        raise RunbookError(f"not installed: apt-get install -y {' '.join(lacking)}")
    directory = Path(tempfile.mkdtemp(prefix="runbook-prom-"))
    stack = MetricsStack("", directory)
    try:
        pg_port, redis_port = free_port(), free_port()
        pg_env = {**os.environ, "DATA_SOURCE_NAME": sandbox.postgres.monitor_dsn + "?sslmode=disable"}
        stack.processes.append(_spawn(["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{pg_port}"],
                                      directory / "postgres_exporter.log", pg_env))
        redis_env = {**os.environ, "REDIS_PASSWORD": sandbox.redis.password}
        redis_args = ["prometheus-redis-exporter", f"-web.listen-address=127.0.0.1:{redis_port}",
                      f"-redis.addr=redis://127.0.0.1:{sandbox.redis.port}"]
        if check_keys:
            redis_args.append(f"-check-keys={check_keys}")
        stack.processes.append(_spawn(redis_args, directory / "redis_exporter.log", redis_env))
        targets = {"postgres": f"127.0.0.1:{pg_port}", "redis": f"127.0.0.1:{redis_port}"}
        stack.url = _start_prometheus(stack, targets, scrape_s, storage)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_prometheus(storage: Path, targets: dict[str, str] | None = None, scrape_s: float = 1.0) -> MetricsStack:
    """A Prometheus alone over ``storage`` (a TSDB directory, e.g. filled by ``promtool tsdb
    create-blocks-from openmetrics``), scraping ``targets`` (job -> host:port) if any."""
    if not shutil.which("prometheus"):
        raise RunbookError("not installed: apt-get install -y prometheus")
    stack = MetricsStack("", Path(tempfile.mkdtemp(prefix="runbook-prom-")))
    try:
        stack.url = _start_prometheus(stack, targets or {}, scrape_s, storage)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_prometheus(stack: MetricsStack, targets: dict[str, str], scrape_s: float, storage: Path | None) -> str:
    """Write the config, start Prometheus under ``stack``, wait until it is ready; its base URL."""
    port = free_port()
    config = stack.directory / "prometheus.yml"
    jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['{where}']}}]\n"
                   for job, where in targets.items())
    config.write_text(f"global:\n  scrape_interval: {scrape_s:g}s\n  evaluation_interval: {scrape_s:g}s\n"
                      + (f"scrape_configs:\n{jobs}" if jobs else ""))
    stack.processes.append(_spawn(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={storage or stack.directory / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d", "--log.level=warn"],
        stack.directory / "prometheus.log"))
    stack.url = f"http://127.0.0.1:{port}"
    _wait_ready(stack)
    return stack.url


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ))


def _wait_ready(stack: MetricsStack, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in stack.processes:
            if p.poll() is not None:
                raise RunbookError(f"{Path(str(p.args[0])).name} exited at start (code {p.returncode})")
        try:
            if httpx.get(f"{stack.url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RunbookError(f"Prometheus not ready within {timeout_s:g} s")
