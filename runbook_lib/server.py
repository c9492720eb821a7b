"""``runbook serve``: the alert webhook receiver.

Accepted alerts are written to a durable on-disk spool (fsynced) before the 202 reply, so nothing accepted is
lost if the process dies; on restart, runs that were in flight go back to the queue. A bounded pool of
executor slots runs them; each slot has its own executor process with papermill imported and a fresh,
never-reused kernel started before the job arrives, so an alert does not pay for start-up, and a notebook
that fails, or kills its process, takes only its own job with it. Duplicate alerts (same route and
fingerprint within the window) are recorded against the first run instead of running again; a resolved alert
runs once more as a confirmation linked to the first run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from . import alerts
from .errors import RunbookError
from .redact import redact_tree

MAX_BODY = 1 << 20
MAX_ALERTS = 100          # alerts in one payload; a bigger payload is refused (413), not queued
MAX_QUEUED = 500          # runs waiting; past it the receiver answers 503 with Retry-After (Alertmanager retries)
BODY_DEADLINE_S = 10.0    # a body not received in full by then is refused (408)
MIN_SECRET_CHARS = 32
DONE_STATUSES = ("ok", "handed_off")  # handed_off: Airflow holds the run; its outcome is Airflow's, not "ok"
TOKEN_ENV, SECRET_ENV = "RUNBOOK_WEBHOOK_TOKEN", "RUNBOOK_WEBHOOK_SECRET"


def _fsync_write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Jobs on disk: ``queued/`` -> ``running/`` -> ``done/`` or ``failed/``, plus ``duplicates/``."""

    def __init__(self, root: Path, dedupe_window_s: float) -> None:
        self.root = root
        self.window = dedupe_window_s
        for d in ("queued", "running", "done", "failed", "duplicates"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.cond = threading.Condition()
        self._first: dict[str, tuple[str, float]] = {}
        for d in ("queued", "running", "done", "failed"):
            for p in (root / d).glob("*.json"):
                try:
                    job = json.loads(p.read_text())
                except ValueError:
                    continue
                if job.get("kind") in ("run", "confirm"):
                    self._first.setdefault(job["dedupe_key"], (job["id"], job["received_at"]))

    def recover(self) -> int:
        """Runs that were in flight when the process died go back to the queue (see :func:`reconcile`)."""
        moved = 0
        for p in sorted((self.root / "running").glob("*.json")):
            os.replace(p, self.root / "queued" / p.name)
            moved += 1
        return moved

    def reconcile(self, root: Path) -> tuple[int, int]:
        """Queued jobs whose run already reached the archive are finished, not run again: a sealed record finishes
        its job; a run the crash interrupted is sealed as failed, its one record. Returns (finished, sealed)."""
        from . import archive

        finished = sealed = 0
        for p in sorted((self.root / "queued").glob("*.json")):
            try:
                job = json.loads(p.read_text())
            except ValueError:
                continue
            found = archive.find_job(root, job["incident_id"], job["id"])
            if found is None:
                continue
            kind, path = found
            if kind == "staging":
                claimed = archive.claim_staging(path)
                if claimed is None:
                    continue
                path = archive.finalize_interrupted(root, claimed, json.loads((claimed / "run.json").read_text()),
                                                    "interrupted: runbook serve stopped mid-run; the alert's run was "
                                                    "not repeated (re-run it with runbook run)")
                sealed += 1
            rec = archive.load_record(path)
            self.finish(p, job, {"status": rec.status, "record": str(path), "reason": rec.run.get("reason", "")})
            finished += 1
        return finished, sealed

    def accept(self, job: alerts.Job, received_at: float) -> dict[str, Any]:
        """Spool the job (or record it as a duplicate); returns what the reply says about it. A resolved alert runs
        once as a confirmation of the first run; its repeats within the window are duplicates, as firing ones are.
        What is written is redacted: alert annotations can carry anything."""
        with self.cond:
            resolved = job.alert.status == "resolved"
            key = job.dedupe_key + (":resolved" if resolved else "")
            first = self._first.get(key)
            now = time.time()
            alert = redact_tree(asdict(job.alert))
            if first is not None and now - first[1] <= self.window:
                dup = {"duplicate_of": first[0], "dedupe_key": key, "alert": alert, "received_at": received_at}
                _fsync_write(self.root / "duplicates" / f"{int(now * 1000):013d}-{secrets.token_hex(4)}.json", dup)
                return {"duplicate_of": first[0], "incident": job.incident_id}
            jid = f"{int(now * 1000):013d}-{secrets.token_hex(4)}"
            record = {"id": jid, "kind": "confirm" if resolved else "run", "notebook": job.notebook,
                      "incident_id": job.incident_id, "environment": job.environment, "parameters": job.parameters,
                      "route": job.route, "dedupe_key": key, "alert": alert, "received_at": received_at}
            if resolved:
                fired = self._first.get(job.dedupe_key)
                record["confirms"] = fired[0] if fired else None
            _fsync_write(self.root / "queued" / f"{jid}.json", record)
            self._first[key] = (jid, now)
            self.cond.notify()
            reply = {"id": jid, "notebook": job.notebook, "incident": job.incident_id}
            return {**reply, "confirms": record["confirms"]} if resolved else reply

    def queued(self) -> int:
        """Runs waiting for an executor."""
        return sum(1 for _ in os.scandir(self.root / "queued"))

    def claim(self, stop: threading.Event) -> tuple[Path, dict[str, Any]] | None:
        """The oldest queued job, moved to ``running/`` (blocks until one is there or ``stop`` is set)."""
        with self.cond:
            while not stop.is_set():
                queued = sorted((self.root / "queued").glob("*.json"))
                for p in queued:
                    target = self.root / "running" / p.name
                    try:
                        os.replace(p, target)
                    except FileNotFoundError:
                        continue
                    return target, json.loads(target.read_text())
                self.cond.wait(timeout=1.0)
        return None

    def finish(self, running: Path, job: dict[str, Any], result: dict[str, Any]) -> None:
        """File the job under ``done/`` (run completed, or handed to Airflow) or ``failed/``, with its result."""
        ok = result.get("status") in DONE_STATUSES
        job.update(result=redact_tree(result), finished_at=time.time())
        _fsync_write(self.root / ("done" if ok else "failed") / running.name, job)
        running.unlink(missing_ok=True)

    def counts(self) -> dict[str, int]:
        return {d: sum(1 for _ in (self.root / d).glob("*.json")) for d in
                ("queued", "running", "done", "failed", "duplicates")}


class Metrics:
    """The receiver's metrics through ``prometheus_client``, in a registry of its own: alert and run counters,
    the queue's depth, run latency as a histogram (bounded memory, whatever the number of runs), and the process's
    CPU, memory and file descriptors."""

    LATENCY_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, \
            ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.received = Counter("runbook_alerts_received", "alerts in accepted payloads", registry=r)
        self.accepted = Counter("runbook_alerts_accepted", "alerts routed and queued as a run", registry=r)
        self.deduplicated = Counter("runbook_alerts_deduplicated", "alerts already queued or run", registry=r)
        self.unrouted = Counter("runbook_alerts_unrouted", "alerts no route matched", registry=r)
        self.rejected = Counter("runbook_requests_rejected", "requests refused (auth, size, malformed)", registry=r)
        self.succeeded = Counter("runbook_runs_succeeded", "runs that completed (whatever they found)", registry=r)
        self.failed = Counter("runbook_runs_failed", "runs whose notebook or executor failed", registry=r)
        self.queued = Gauge("runbook_runs_queued", "runs waiting in the spool", registry=r)
        self.running = Gauge("runbook_runs_running", "runs executing now", registry=r)
        self.latency = Histogram("runbook_run_latency_seconds", "alert received to record sealed (or, with "
                                 "--airflow, to the DAG run created)", buckets=self.LATENCY_BUCKETS, registry=r)
        self.handed_off = Counter("runbook_runs_handed_off", "runs handed to Airflow as DAG runs (their outcome "
                                  "is Airflow's, not counted as succeeded)", registry=r)
        self.handoff_retries = Counter("runbook_handoff_retries", "hand-offs to Airflow retried because it was "
                                       "unreachable or answered 5xx", registry=r)

    def alerts(self, received: int, accepted: int, deduplicated: int, unrouted: int) -> None:
        """Count one accepted payload's alerts."""
        self.received.inc(received)
        self.accepted.inc(accepted)
        self.deduplicated.inc(deduplicated)
        self.unrouted.inc(unrouted)

    def handoff_retry(self) -> None:
        """Count one hand-off attempt Airflow could not take (the job is retried)."""
        self.handoff_retries.inc()

    def run_handed_off(self, latency_s: float) -> None:
        """Count one run Airflow now holds (alert received to DAG run created)."""
        self.handed_off.inc()
        self.latency.observe(max(0.0, latency_s))

    def run_finished(self, ok: bool, latency_s: float) -> None:
        (self.succeeded if ok else self.failed).inc()
        self.latency.observe(max(0.0, latency_s))

    def render(self, spool: Spool) -> tuple[bytes, str]:
        """The exposition (and its content type), with the spool's depth read now."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        c = spool.counts()
        self.queued.set(c["queued"])
        self.running.set(c["running"])
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _die_with_parent() -> None:
    """In an executor, before it starts: the kernel sends it SIGKILL when the server dies, however it dies, so no
    orphan finishes a job the restarted server would run again (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


class Executors:
    """``size`` slots, each with one executor process that keeps a fresh kernel ready for its next job.
    A process that dies takes only its current job with it; the slot starts another."""

    def __init__(self, spool: Spool, metrics: Metrics, size: int, archive: str | None) -> None:
        self.spool, self.metrics, self.size, self.archive = spool, metrics, size, archive
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.procs: set[subprocess.Popen[str]] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._slot, name=f"executor-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _spawn(self) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "runbook_lib.warm"] + ([self.archive] if self.archive else [])
        with open(self.spool.root / "executors.log", "a") as log:  # warm.py writes only redacted lines here
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                                 preexec_fn=_die_with_parent)
        with self.lock:
            self.procs.add(p)
        return p

    def _slot(self) -> None:
        failures = 0
        proc: subprocess.Popen[str] | None = None
        while not self.stop.is_set():
            proc = proc if proc is not None and proc.poll() is None else self._spawn()
            ready = proc.stdout.readline() if proc.stdout else ""
            if not ready:  # died while warming up or after its last job: start another (with a pause on failure)
                self._retire(proc)
                proc = None
                failures += 1
                time.sleep(min(30.0, 0.2 * 2 ** min(failures, 7)))
                continue
            failures = 0
            claimed = self.spool.claim(self.stop)
            if claimed is None:
                break
            path, job = claimed
            payload = {"notebook": job["notebook"], "incident_id": job["incident_id"],
                       "environment": job["environment"], "parameters": job["parameters"], "archive": self.archive,
                       "extra_run": {"alert": {**job["alert"], "route": job["route"], "job_id": job["id"]},
                                     **({"confirms": job.get("confirms")} if job.get("kind") == "confirm" else {})}}
            result: dict[str, Any]
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(payload) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                if line.strip():
                    result = json.loads(line)
                else:  # the process died mid-job: that job fails, the slot carries on with a new process
                    result = {"status": "failed", "reason": f"executor crashed (exit code {proc.wait(timeout=30)})"}
                    self._retire(proc)
                    proc = None
            except (BrokenPipeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                result = {"status": "failed", "reason": f"executor crashed: {type(e).__name__}: {e}"}
                self._retire(proc)
                proc = None
            self.spool.finish(path, job, result)
            self.metrics.run_finished(result.get("status") == "ok",
                                      time.time() - float(job.get("received_at", time.time())))
        if proc is not None:
            self._retire(proc)

    def _retire(self, proc: subprocess.Popen[str]) -> None:
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
        with self.lock:
            self.procs.discard(proc)

    def shutdown(self) -> None:
        self.stop.set()
        with self.spool.cond:
            self.spool.cond.notify_all()
        with self.lock:
            procs = list(self.procs)
        for p in procs:  # idle executors exit on end of input; busy ones are asked to stop
            try:
                if p.stdin:
                    p.stdin.close()
                p.terminate()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()


class Dispatcher(Protocol):
    """What takes spooled jobs: local :class:`Executors` or :class:`runbook_lib.handoff.AirflowDispatch`."""

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


def _dispatcher(spool: Spool, metrics: Metrics, workers: int, archive: str | None, airflow: str | None,
                airflow_dag: str | None) -> Dispatcher:
    """Local executors, or the hand-off to Airflow after checking its DAG is there and the credentials work."""
    if not airflow:
        return Executors(spool, metrics, workers, archive)
    from .handoff import DAG_ID, AirflowClient, AirflowDispatch

    client = AirflowClient(airflow, airflow_dag or DAG_ID)
    client.check()
    return AirflowDispatch(spool, metrics, client, workers)


async def _read_body(request: Any) -> bytes | None:
    """The request body, or None past :data:`MAX_BODY`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _authorized(request: Any, body: bytes, token: str | None, secret: str | None) -> bool:
    """A bearer token or a signature (ours or PagerDuty's) over the raw body. Headers are compared as bytes, so
    non-ASCII bytes in them are simply wrong, never an error."""
    import hmac

    def raw(name: str) -> bytes:
        return request.headers.get(name, "").encode("latin-1", "replace")
    auth = raw("authorization")
    if token and auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:].strip(), token.encode()):
        return True
    if not secret:
        return False
    ours = b"sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest().encode()
    if raw("x-runbook-signature").strip() and hmac.compare_digest(raw("x-runbook-signature").strip(), ours):
        return True
    theirs = b"v1=" + hmac.new(secret.encode(), body, "sha256").hexdigest().encode()
    return any(hmac.compare_digest(sig.strip(), theirs) for sig in raw("x-pagerduty-signature").split(b",")
               if sig.strip())


def build_app(*, spool: Spool, metrics: Metrics, routes: list[alerts.Route], token: str | None,
              secret: str | None, max_alerts: int = MAX_ALERTS, max_queued: int = MAX_QUEUED) -> Any:
    """The Starlette application: POST /alerts, GET /healthz, GET /metrics."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def reject(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
        metrics.rejected.inc()
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def receive(request: Request) -> JSONResponse:
        import asyncio

        from starlette.concurrency import run_in_threadpool

        received_at = time.time()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return reject(413, f"body over {MAX_BODY} bytes")
        if spool.queued() >= max_queued:
            return reject(503, f"{max_queued} runs are already waiting; retry later", retry_after=30)
        try:
            body = await asyncio.wait_for(_read_body(request), BODY_DEADLINE_S)
        except asyncio.TimeoutError:
            return reject(408, f"body not received within {BODY_DEADLINE_S:.0f}s")
        if body is None:
            return reject(413, f"body over {MAX_BODY} bytes")
        if not _authorized(request, body, token, secret):
            return reject(401, "missing or invalid bearer token or signature")
        try:
            parsed = await run_in_threadpool(alerts.parse_payload, body)
        except alerts.PayloadError as e:
            return reject(400 if "not JSON" in str(e) else 422, str(e))
        if len(parsed) > max_alerts:
            return reject(413, f"payload holds {len(parsed)} alerts; at most {max_alerts} are taken at once")
        # routing and the fsynced spool writes run in a worker thread: the event loop keeps answering /healthz
        accepted, duplicates, unrouted = await run_in_threadpool(_accept_all, parsed, received_at)
        metrics.alerts(len(parsed), len(accepted), len(duplicates), len(unrouted))
        return JSONResponse({"accepted": accepted, "duplicates": duplicates, "unrouted": unrouted}, status_code=202)

    def _accept_all(parsed: list[alerts.Alert], received_at: float) -> tuple[list[Any], list[Any], list[Any]]:
        accepted, duplicates, unrouted = [], [], []
        for alert in parsed:
            try:
                job = alerts.route(alert, routes)
            except RunbookError as e:
                unrouted.append({"fingerprint": alert.fingerprint, "reason": str(e)})
                continue
            if job is None:
                unrouted.append({"fingerprint": alert.fingerprint, "reason": "no route matches"})
                continue
            outcome = spool.accept(job, received_at)
            (duplicates if "duplicate_of" in outcome else accepted).append(outcome)
        return accepted, duplicates, unrouted

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **spool.counts()})

    async def metrics_view(request: Request) -> Response:
        body, content_type = metrics.render(spool)
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/alerts", receive, methods=["POST"]), Route("/healthz", healthz),
                             Route("/metrics", metrics_view)])


def serve(*, host: str, port: int, spool_dir: Path, archive: str | None, workers: int, dedupe_window_s: float,
          routes_file: str | None, max_alerts: int = MAX_ALERTS, max_queued: int = MAX_QUEUED,
          airflow: str | None = None, airflow_dag: str | None = None) -> None:
    """Run the receiver until interrupted: runs go to local executors, or with ``airflow`` (its base URL) to
    that Airflow as DAG runs of ``airflow_dag`` (see :mod:`runbook_lib.handoff`)."""
    import uvicorn

    token, secret = os.environ.get(TOKEN_ENV), os.environ.get(SECRET_ENV)
    if not token and not secret:
        raise RunbookError(f"set {TOKEN_ENV} (bearer token) or {SECRET_ENV} (HMAC secret) before serving")
    for name, value in ((TOKEN_ENV, token), (SECRET_ENV, secret)):
        if value is not None and len(value) < MIN_SECRET_CHARS:
            raise RunbookError(f"{name} has {len(value)} characters; use at least {MIN_SECRET_CHARS} "
                               "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    routes = alerts.load_routes(routes_file)
    problems = alerts.check_routes(routes)
    if problems:
        raise RunbookError(f"alert routes are not usable: {problems[0]}")
    spool = Spool(spool_dir, dedupe_window_s)
    metrics = Metrics()
    executors = _dispatcher(spool, metrics, workers, archive, airflow, airflow_dag)  # checks Airflow before listening
    back = spool.recover()
    if archive and not archive.startswith("s3://") and not airflow:
        spool.reconcile(Path(archive))
    executors.start()
    where = f"runs handed to Airflow at {airflow}" if airflow else f"{workers} executors"
    print(f"runbook serve: listening on http://{host}:{port} ({where}, spool {spool_dir}"
          f"{f', {back} interrupted runs re-queued' if back else ''})", flush=True)
    try:
        uvicorn.run(build_app(spool=spool, metrics=metrics, routes=routes, token=token, secret=secret,
                              max_alerts=max_alerts, max_queued=max_queued),
                    host=host, port=port, log_level="warning", access_log=False, limit_concurrency=64,
                    timeout_keep_alive=5)
    finally:
        executors.shutdown()
