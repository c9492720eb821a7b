"""Hand alert runs to Airflow instead of local executors (``runbook serve --airflow URL``).

When one machine is not enough, the receiver keeps its job (authenticate, parse, route, deduplicate, spool durably,
answer 202) and each spooled run becomes a DAG run of ``runbook_incident`` (``integrations/airflow/``) through
Airflow's REST API (v2, Airflow 3). The DAG run id is derived from the spool job id, so a hand-off repeated after
a crash or a timeout is answered 409 by Airflow and counted as done: each accepted alert makes one DAG run.
Airflow unreachable or answering 5xx: the job stays claimed and is retried with backoff (on restart it is queued
again). Refused (4xx other than 409): the job fails with Airflow's reason, which ``/healthz`` counts.

Credentials come from the environment, never the command line: ``RUNBOOK_AIRFLOW_TOKEN`` (a JWT), or
``RUNBOOK_AIRFLOW_USERNAME`` and ``RUNBOOK_AIRFLOW_PASSWORD`` exchanged at ``/auth/token`` (and again when the
token expires).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from .errors import RunbookError
from .redact import redact

DAG_ID = "runbook_incident"
TOKEN_ENV, USER_ENV, PASSWORD_ENV = "RUNBOOK_AIRFLOW_TOKEN", "RUNBOOK_AIRFLOW_USERNAME", "RUNBOOK_AIRFLOW_PASSWORD"
MAX_BACKOFF_S = 30.0


class HandoffUnavailable(Exception):
    """Airflow could not take the run now (unreachable, timeout, 5xx): try again later."""


class HandoffRefused(Exception):
    """Airflow refused the run (4xx other than 409): retrying the same request will not help."""


@dataclass(frozen=True)
class Handoff:
    """A DAG run Airflow holds for a spool job; ``created`` is False when an earlier attempt had made it."""

    dag_id: str
    dag_run_id: str
    state: str
    created: bool
    url: str

    def to_result(self) -> dict[str, Any]:
        """What the spool records for the job."""
        return {"status": "handed_off", "handed_off": "airflow", "dag_id": self.dag_id, "dag_run_id": self.dag_run_id,
                "state": self.state, "created": self.created, "url": self.url}


class AirflowClient:
    """Airflow's REST API v2 for one DAG: check it exists, trigger runs idempotently. Timeouts on every call."""

    def __init__(self, url: str, dag_id: str = DAG_ID, timeout_s: float = 10.0) -> None:
        self.base, self.dag_id = url.rstrip("/"), dag_id
        self.shown = redact(self.base)  # the URL as messages may show it (no password in it)
        self.http = httpx.Client(base_url=self.base, timeout=httpx.Timeout(timeout_s, connect=5.0))
        self.token = os.environ.get(TOKEN_ENV) or None
        self.login = (os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV))
        if not self.token and not all(self.login):
            raise RunbookError(f"--airflow needs {TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}, in the environment")

    def close(self) -> None:
        self.http.close()

    def check(self) -> None:
        """One-line RunbookError unless the DAG is there and these credentials may read it (run before serving)."""
        try:
            reply = self._request("GET", f"/api/v2/dags/{self.dag_id}")
        except HandoffUnavailable as e:
            raise RunbookError(f"Airflow at {self.shown}: {redact(str(e))}") from None
        except HandoffRefused as e:
            raise RunbookError(f"Airflow at {self.shown} refused: {e}") from None
        if reply.status_code != 200:
            raise RunbookError(f"Airflow at {self.shown}: DAG {self.dag_id}: HTTP {reply.status_code}")

    def trigger(self, dag_run_id: str, conf: dict[str, Any]) -> Handoff:
        """Create the DAG run, or find the one an earlier attempt created (409)."""
        path = f"/api/v2/dags/{self.dag_id}/dagRuns"
        reply = self._request("POST", path, json={"dag_run_id": dag_run_id, "logical_date": None, "conf": conf})
        created = reply.status_code != 409
        if not created:
            reply = self._request("GET", f"{path}/{dag_run_id}")
        state = str(reply.json().get("state", "")) if reply.status_code == 200 else ""
        return Handoff(self.dag_id, dag_run_id, state, created, f"{self.shown}/dags/{self.dag_id}/runs/{dag_run_id}")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call with a bearer token (fetched again once on 401); 409 is returned to the caller."""
        for attempt in (1, 2):
            try:
                reply = self.http.request(method, path, headers={"Authorization": f"Bearer {self._token()}"},
                                          **kwargs)
            except httpx.TransportError as e:
                raise HandoffUnavailable(f"{type(e).__name__}: {e or 'no answer'}") from None
            if reply.status_code == 401 and attempt == 1 and all(self.login):
                self.token = None
                continue
            break
        if reply.status_code >= 500:
            raise HandoffUnavailable(f"HTTP {reply.status_code} from {method} {path}")
        if reply.status_code >= 400 and reply.status_code != 409:
            raise HandoffRefused(f"HTTP {reply.status_code} from {method} {path}: {_detail(reply)}")
        return reply

    def _token(self) -> str:
        if self.token:
            return self.token
        user, password = self.login
        try:
            reply = self.http.post("/auth/token", json={"username": user, "password": password})
        except httpx.TransportError as e:
            raise HandoffUnavailable(f"{type(e).__name__}: {e or 'no answer'}") from None
        if reply.status_code >= 500:
            raise HandoffUnavailable(f"HTTP {reply.status_code} from POST /auth/token")
        if reply.status_code not in (200, 201):
            raise HandoffRefused(f"HTTP {reply.status_code} from POST /auth/token: {_detail(reply)}")
        self.token = str(reply.json()["access_token"])
        return self.token


def _detail(reply: httpx.Response) -> str:
    """Airflow's own words for a refusal, short."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    detail = body.get("detail", reply.text) if isinstance(body, dict) else reply.text
    return redact(str(detail))[:300]


def dag_run_id(job: dict[str, Any]) -> str:
    """The DAG run id for a spool job: the same for every attempt, so Airflow makes it at most once."""
    return f"runbook__{job['incident_id']}__{job['id']}"


def dag_conf(job: dict[str, Any]) -> dict[str, Any]:
    """The DAG's params for a spool job: ``runbook_incident``'s notebook, incident, environment and parameters, and
    the alert (redacted when spooled, with its route and job id) that the record keeps, as a local run's does."""
    conf = {"notebook": job["notebook"], "incident": job["incident_id"], "parameters": job.get("parameters") or {},
            "alert": {**(job.get("alert") or {}), "route": job.get("route"), "job_id": job["id"]}}
    return {**conf, "environment": job["environment"]} if job.get("environment") else conf


class JobQueue(Protocol):
    """What the dispatch takes jobs from (``server.Spool``)."""

    cond: threading.Condition

    def claim(self, stop: threading.Event) -> tuple[Path, dict[str, Any]] | None: ...

    def finish(self, running: Path, job: dict[str, Any], result: dict[str, Any]) -> None: ...


class DispatchMetrics(Protocol):
    """What the dispatch counts (``server.Metrics``)."""

    def handoff_retry(self) -> None: ...

    def run_handed_off(self, latency_s: float) -> None: ...

    def run_finished(self, ok: bool, latency_s: float) -> None: ...


class AirflowDispatch:
    """``size`` threads that take spooled jobs and hand each to Airflow; same start/shutdown as the executors."""

    def __init__(self, spool: JobQueue, metrics: DispatchMetrics, client: AirflowClient, size: int) -> None:
        self.spool, self.metrics, self.client, self.size = spool, metrics, client, size
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._slot, name=f"handoff-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _slot(self) -> None:
        while not self.stop.is_set():
            claimed = self.spool.claim(self.stop)
            if claimed is None:
                return
            path, job = claimed
            result = self._hand_off(job)
            if result is None:  # stopping mid-retry: the job stays claimed and is queued again on restart
                return
            self.spool.finish(path, job, result)
            latency = time.time() - float(job.get("received_at", 0))
            if result["status"] == "handed_off":
                self.metrics.run_handed_off(latency)
            else:
                self.metrics.run_finished(False, latency)

    def _hand_off(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Trigger the DAG run, retrying while Airflow is unavailable; None when stopped first."""
        delay = 1.0
        while not self.stop.is_set():
            try:
                return self.client.trigger(dag_run_id(job), dag_conf(job)).to_result()
            except HandoffRefused as e:
                return {"status": "failed", "reason": f"Airflow refused the run: {e}"}
            except HandoffUnavailable as e:
                self.metrics.handoff_retry()
                if delay == 1.0:  # once per job: the counter says how often
                    print(f"runbook serve: Airflow at {self.client.shown} unavailable for job {job['id']} "
                          f"({redact(str(e))}); retrying", file=sys.stderr, flush=True)
                self.stop.wait(delay)
                delay = min(MAX_BACKOFF_S, delay * 2)
        return None

    def shutdown(self) -> None:
        self.stop.set()
        with self.spool.cond:
            self.spool.cond.notify_all()
        for t in self.threads:
            t.join(timeout=15)
        self.client.close()
