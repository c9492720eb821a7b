"""Metric history from Prometheus: the incident window and a baseline before it, through range queries.

Each series is named PromQL over the de facto exporters' metrics (postgres_exporter, redis_exporter, the services'
request counters). An environment overrides any query by name, or adds its own, under ``prometheus.queries``.
Queries run concurrently with a timeout each; the step is chosen for about ``POINTS`` points per series. A query
that returns no series is reported as missing (a finding says so), one Prometheus rejects as failed, and an
unreachable Prometheus is a :class:`SourceError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ..config import Environment
from ..redact import redact
from . import SourceError

SOURCE = "prometheus"
POINTS = 300                  # about this many points per series over baseline + window
TIMEOUT_S = 10.0
MAX_PARALLEL = 8
BASELINE_MIN = timedelta(minutes=10)
BASELINE_MAX = timedelta(hours=6)
HISTORY_COLUMNS = ["query", "series", "time", "value", "phase"]


@dataclass(frozen=True)
class Query:
    """One named series: its PromQL, what it measures, and the smallest change from baseline worth a finding."""

    name: str
    promql: str
    title: str
    unit: str = ""
    min_change: float = 0.0     # an onset needs the value this far above the baseline, besides the relative rise
    drains: bool = False        # a backlog: a falling trend gets a time to drain
    absent_is_zero: bool = False  # no sample means zero (Redis deletes a list when its last item goes)


def _q(name: str, promql: str, title: str, unit: str = "", min_change: float = 0.0, drains: bool = False) -> Query:
    return Query(name, promql, title, unit, min_change, drains, absent_is_zero=drains)


# postgres_exporter (prometheus-community), redis_exporter (oliver006), and the request counters most HTTP
# instrumentation exports. Names are stable: environments override them by name.
QUERIES: dict[str, Query] = {q.name: q for q in (
    _q("pg_connections", "sum by (state) (pg_stat_activity_count)", "Postgres sessions by state", "sessions", 5),
    _q("pg_longest_transaction", "max by (state) (pg_stat_activity_max_tx_duration)",
       "Longest open transaction by state", "s", 10),
    _q("pg_exclusive_locks", 'sum(pg_locks_count{mode="accessexclusivelock"})',
       "AccessExclusive locks (DDL) held or awaited", "locks", 0.5),
    _q("pg_transactions", "sum(rate(pg_stat_database_xact_commit[1m]) + rate(pg_stat_database_xact_rollback[1m]))",
       "Postgres transactions per second", "tx/s", 5),
    _q("pg_deadlocks", "sum(increase(pg_stat_database_deadlocks[1m]))", "Deadlocks per minute", "/min", 0.5),
    _q("pg_replication_lag", "max(pg_replication_lag_seconds or pg_replication_lag)", "Replication lag", "s", 10),
    _q("redis_memory", "max(redis_memory_used_bytes)", "Redis memory used", "bytes", 16 * 2**20),
    _q("redis_clients", "sum(redis_connected_clients)", "Redis clients", "clients", 10),
    _q("redis_evictions", "sum(rate(redis_evicted_keys_total[1m]))", "Redis evictions per second", "keys/s", 1),
    _q("redis_rejected_connections", "sum(rate(redis_rejected_connections_total[1m]))",
       "Redis rejected connections per second", "conn/s", 0.1),
    # redis_exporter reports an error kind only once Redis has counted one: zero while Redis is up (redis_up == 1);
    # with Redis down there is no series, so no "within baseline" claim rests on a Redis nobody could read
    _q("redis_oom_errors", 'sum(rate(redis_errors_total{err="OOM"}[1m])) or 0 * max(redis_up == 1)',
       "Redis writes refused (OOM) per second", "/s", 0.1),
    _q("queue_depth", "sum by (key) (redis_key_size)", "Queue depth (lists the exporter checks)", "jobs", 10,
       drains=True),
    _q("http_error_ratio", 'sum by (job) (rate(http_requests_total{code=~"5.."}[1m]))'
       " / sum by (job) (rate(http_requests_total[1m]))", "HTTP 5xx share of requests", "ratio", 0.02),
)}

DATABASE = ("pg_connections", "pg_longest_transaction", "pg_exclusive_locks", "pg_transactions", "pg_deadlocks",
            "pg_replication_lag")
QUEUES = ("queue_depth", "redis_memory", "redis_clients", "redis_evictions",
          "redis_rejected_connections", "redis_oom_errors")
SERVICES = ("http_error_ratio",)


class Prometheus:
    """A Prometheus HTTP API. Headers (an auth token) come from the variable ``headers_env`` names, as JSON."""

    def __init__(self, url: str | None, *, headers: Mapping[str, str] | None = None,
                 queries: Mapping[str, str] | None = None, unavailable: str = "") -> None:
        self.url = url.rstrip("/") if url else None
        self._headers = dict(headers or {})
        self.unavailable = unavailable
        self.queries = dict(QUERIES)
        for name, promql in (queries or {}).items():
            known = self.queries.get(name)
            self.queries[name] = replace(known, promql=promql) if known else _q(name, promql, name)

    @classmethod
    def from_environment(cls, env: Environment | None) -> Prometheus:
        """The environment's ``prometheus`` entry; without one, a Prometheus that reports it is not configured."""
        spec = (env.raw.get("prometheus") if env else None) or {}
        if not spec.get("url"):
            return cls(None, unavailable="no prometheus in this environment")
        headers: dict[str, str] = {}
        if spec.get("headers_env"):
            raw = env.secret(spec["headers_env"]) if env else None
            if not raw:
                return cls(None, unavailable=f"${spec['headers_env']} (prometheus.headers_env) is not set")
            try:
                headers = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                return cls(None, unavailable=f"${spec['headers_env']} must hold a JSON object of headers")
        return cls(spec["url"], headers=headers, queries=spec.get("queries") or {})

    def __repr__(self) -> str:  # headers hold tokens
        return f"<Prometheus {self.url or 'not configured'}>"

    @property
    def configured(self) -> bool:
        return self.url is not None


def choose_step(start: datetime, end: datetime, points: int = POINTS) -> float:
    """Seconds between points so that ``start``..``end`` has about ``points`` of them (at least 1 s)."""
    return max(1.0, math.ceil((end - start).total_seconds() / points))


def baseline_for(start: datetime, end: datetime) -> timedelta:
    """As long as the window, between 10 minutes and 6 hours."""
    return min(max(end - start, BASELINE_MIN), BASELINE_MAX)


def history(prom: Prometheus, names: Iterable[str], start: datetime, end: datetime, *,
            baseline: timedelta | None = None, step_s: float | None = None) -> pd.DataFrame | SourceError:
    """Range queries ``names`` over the window ``start``..``end`` and a baseline before it.

    Columns: query, series (the labels, ``k=v`` joined), time (UTC), value, phase (``baseline``/``window``).
    ``attrs``: window_start, window_end, baseline_start, step_s, queries (name -> Query), missing (names with no
    series), failed (name -> Prometheus's message), configured (False: nothing was asked).
    """
    wanted = [prom.queries[n] for n in names if n in prom.queries]
    if not prom.configured:
        return _frame([], wanted, start, end, start, 0.0, [], {}, configured=False)
    base_start = start - (baseline if baseline is not None else baseline_for(start, end))
    step = step_s or choose_step(base_start, end)
    with httpx.Client(base_url=prom.url or "", headers=prom._headers, timeout=TIMEOUT_S) as client, \
            ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(wanted)))) as pool:
        answers = list(pool.map(lambda q: _range(client, q, base_start, end, step), wanted))
    unreachable = [a for a in answers if isinstance(a, SourceError)]
    if unreachable and len(unreachable) == len(answers):
        return unreachable[0]
    frames: list[pd.DataFrame] = []
    missing, failed = [], {}
    for q, answer in zip(wanted, answers):
        if isinstance(answer, SourceError):
            failed[q.name] = answer.message
        elif isinstance(answer, str):
            failed[q.name] = answer
        elif not answer:
            missing.append(q.name)
        else:
            frames += _series_frames(q, answer, start, (base_start.timestamp(), end.timestamp(), step))
    return _frame(frames, wanted, start, end, base_start, step, missing, failed, configured=True)


def _range(client: httpx.Client, q: Query, start: datetime, end: datetime, step: float
           ) -> list[dict[str, Any]] | str | SourceError:
    """The matrix Prometheus returns; a str when it rejects the query; a SourceError when it cannot be reached."""
    params = {"query": q.promql, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
              "step": f"{step:g}", "timeout": f"{TIMEOUT_S:g}s"}
    try:
        r = client.post("/api/v1/query_range", data=params)
    except httpx.TimeoutException:
        return SourceError(SOURCE, q.name, "timeout", f"no answer within {TIMEOUT_S:g} s",
                           hint="check Prometheus's load, or narrow the window")
    except httpx.HTTPError as e:
        return SourceError(SOURCE, q.name, "unreachable", f"{type(e).__name__}: {e}",
                           hint="check prometheus.url in the environment file and that Prometheus is up")
    if r.status_code in (401, 403):
        return SourceError(SOURCE, q.name, "permission", f"HTTP {r.status_code} from Prometheus",
                           hint="set the auth header in the variable prometheus.headers_env names")
    try:
        body = r.json()
    except ValueError:
        return SourceError(SOURCE, q.name, "error", f"HTTP {r.status_code}: not a Prometheus API answer",
                           hint="prometheus.url should be the server's base URL, e.g. http://prometheus:9090")
    if body.get("status") != "success":
        return redact(f"{body.get('errorType', 'error')}: {body.get('error', r.status_code)}")[:300]
    return list(body.get("data", {}).get("result") or [])


def _series_frames(q: Query, result: list[dict[str, Any]], window_start: datetime,
                   grid: tuple[float, float, float]) -> list[pd.DataFrame]:
    """One long frame per series of a matrix; for ``absent_is_zero`` queries every step without a sample is 0."""
    frames = []
    for series in result:
        labels = ",".join(f"{k}={v}" for k, v in sorted(series.get("metric", {}).items()) if k != "__name__")
        points = np.array(series.get("values") or [], dtype=float).reshape(-1, 2)
        ts, values = points[:, 0], points[:, 1]
        if q.absent_is_zero:
            first, last, step = grid
            full = first + step * np.arange(int((last - first) / step) + 1)
            at = np.searchsorted(full, ts - step / 2)  # Prometheus evaluates at exactly first + k * step
            filled = np.zeros(len(full))
            filled[at[at < len(full)]] = values[at < len(full)]
            ts, values = full, filled
        keep = np.isfinite(values)
        frames.append(pd.DataFrame({"query": q.name, "series": labels or q.name, "time": ts[keep],
                                    "value": values[keep],
                                    "phase": np.where(ts[keep] < window_start.timestamp(), "baseline", "window")}))
    return frames


def _frame(frames: list[pd.DataFrame], wanted: list[Query], start: datetime, end: datetime, base_start: datetime,
           step: float, missing: list[str], failed: dict[str, str], *, configured: bool) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=HISTORY_COLUMNS)
    df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    df.attrs.update(window_start=start.astimezone(timezone.utc), window_end=end.astimezone(timezone.utc),
                    baseline_start=base_start.astimezone(timezone.utc), step_s=step,
                    queries={q.name: q for q in wanted}, missing=missing, failed=failed, configured=configured)
    return df
