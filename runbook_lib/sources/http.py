"""HTTP evidence: health endpoints, the Atlassian Statuspage API, Supabase key validity.

Every request has a timeout; checks run concurrently in a small thread pool (so they work the same inside a
Jupyter kernel's running event loop); each failure is sorted into a category: dns, connect, tls, timeout,
protocol or http_status. Keys are sent as headers and never appear in a result.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pandas as pd

from ..redact import redact
from . import SourceError

SOURCE = "http"
HEALTH_COLUMNS = ["service", "url", "ok", "status", "category", "latency_ms", "health", "failing_checks", "error"]


def _category(exc: BaseException) -> str:
    """dns, connect, tls, timeout or protocol, from an httpx exception and its causes."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain).lower()
    if any(isinstance(x, socket.gaierror) for x in chain) or "name or service not known" in text \
            or "nodename nor servname" in text or "temporary failure in name resolution" in text:
        return "dns"
    if any(isinstance(x, ssl.SSLError) for x in chain) or "ssl" in text or "certificate" in text:
        return "tls"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "protocol"


def _get(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        r = client.get(url, headers=headers or {})
    except httpx.HTTPError as e:
        return {"ok": False, "status": None, "category": _category(e),
                "latency_ms": (time.perf_counter() - started) * 1000, "error": redact(f"{type(e).__name__}: {e}")[:300],
                "response": None}
    return {"ok": r.status_code < 400, "status": r.status_code,
            "category": "ok" if r.status_code < 400 else "http_status",
            "latency_ms": (time.perf_counter() - started) * 1000, "error": None if r.status_code < 400 else
            redact(f"HTTP {r.status_code}: {r.text[:200]}"), "response": r}


def parse_health(response: httpx.Response | None) -> tuple[str | None, list[str]]:
    """``application/health+json``: (status pass/warn/fail, failing check names with their status)."""
    if response is None:
        return None, []
    ctype = response.headers.get("content-type", "")
    if "json" not in ctype:
        return None, []
    try:
        body = response.json()
    except ValueError:
        return None, []
    if not isinstance(body, dict):
        return None, []
    status = str(body.get("status", "")).lower() or None
    status = {"ok": "pass", "up": "pass", "healthy": "pass", "down": "fail", "error": "fail",
              "degraded": "warn"}.get(status or "", status)
    failing = []
    for name, entries in (body.get("checks") or {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            st = str((entry or {}).get("status", "")).lower()
            if st in ("fail", "warn", "down", "error"):
                out = (entry or {}).get("output") or ""
                failing.append(f"{name}: {st}{' (' + redact(str(out))[:120] + ')' if out else ''}")
    return status, failing


def check_health(targets: Iterable[tuple[str, str]], *, timeout_s: float = 5.0,
                 concurrency: int = 8) -> pd.DataFrame:
    """GET each ``(service, url)`` concurrently. A 200 whose health+json body says ``fail`` is not ok."""
    targets = list(targets)
    if not targets:
        return pd.DataFrame(columns=HEALTH_COLUMNS)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0))
    with httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "runbook-diagnostics"}) as c:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(targets))) as pool:
            results = list(pool.map(lambda t: _get(c, t[1]), targets))
    rows = []
    for (service, url), r in zip(targets, results):
        health, failing = parse_health(r.pop("response"))
        ok = r["ok"] and health != "fail"
        rows.append({"service": service, "url": redact(url), **r, "ok": ok, "health": health,
                     "failing_checks": failing})
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def service_targets(env: Any, services: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(service, health URL) for the services declared in the environment file."""
    out = []
    for name, spec in ((env.services or {}) if env is not None else {}).items():
        if services is not None and name not in services:
            continue
        if isinstance(spec, dict) and spec.get("url"):
            out.append((name, str(spec["url"]).rstrip("/") + str(spec.get("health", "/health"))))
    return out


def statuspage(url: str, *, timeout_s: float = 5.0) -> pd.DataFrame | SourceError:
    """The Atlassian Statuspage ``/api/v2/summary.json`` (Supabase's status page uses it): one row per
    component not operational plus a ``page`` row with the overall indicator; unresolved incidents in attrs."""
    summary_url = url.rstrip("/") + "/api/v2/summary.json"
    with httpx.Client(timeout=timeout_s) as c:
        r = _get(c, summary_url)
    if r["response"] is None or not r["ok"]:
        return SourceError(SOURCE, "statuspage", "unreachable" if r["category"] != "http_status" else "error",
                           r["error"] or "no answer", hint=f"status page {url} could not be read ({r['category']})")
    try:
        body = r["response"].json()
    except ValueError:
        return SourceError(SOURCE, "statuspage", "error", "status page answered with something other than JSON")
    status = body.get("status") or {}
    rows = [{"component": "(page)", "status": status.get("indicator", "unknown"),
             "description": status.get("description", "")}]
    for comp in body.get("components") or []:
        if comp.get("status") != "operational" and not comp.get("group"):
            rows.append({"component": comp.get("name", "?"), "status": comp.get("status", "?"),
                         "description": comp.get("description") or ""})
    df = pd.DataFrame(rows, columns=["component", "status", "description"])
    df.attrs["incidents"] = [{"name": i.get("name"), "status": i.get("status"), "impact": i.get("impact"),
                              "updated_at": i.get("updated_at")} for i in body.get("incidents") or []
                             if i.get("status") not in ("resolved", "postmortem")]
    df.attrs["indicator"] = status.get("indicator", "unknown")
    return df


def supabase_keys(url: str, anon_key: str | None, *, key_env: str = "", timeout_s: float = 5.0
                  ) -> pd.DataFrame | SourceError:
    """``GET {url}/auth/v1/health`` and ``{url}/rest/v1/`` with the ``apikey`` header. 401 with the service
    otherwise up means the key is wrong; 5xx or no connection means Supabase (or the way to it) is down."""
    if not anon_key:
        return SourceError(SOURCE, "supabase_keys", "config",
                           f"the Supabase key variable {key_env or '(anon_key_env)'} is not set",
                           hint="export the variable the environment file names in supabase.anon_key_env")
    headers = {"apikey": anon_key, "Authorization": f"Bearer {anon_key}"}
    base = url.rstrip("/")
    with httpx.Client(timeout=timeout_s) as c:
        results = [("auth", _get(c, f"{base}/auth/v1/health", headers)), ("rest", _get(c, f"{base}/rest/v1/", headers))]
    rows = []
    for endpoint, r in results:
        r.pop("response")
        status = r["status"]
        verdict = ("ok" if r["ok"] else "key_rejected" if status in (401, 403) else
                   "outage" if (status is None or status >= 500) else "error")
        rows.append({"endpoint": endpoint, "status": status, "category": r["category"],
                     "latency_ms": r["latency_ms"], "verdict": verdict,
                     "error": redact(r["error"] or "", [anon_key]) or None})
    df = pd.DataFrame(rows)
    df.attrs["key_env"] = key_env
    return df


def supabase_status(env: Any) -> pd.DataFrame | SourceError:
    """The Supabase status page named by ``supabase.status_page`` in the environment file."""
    spec = (env.raw.get("supabase") if env is not None else None) or {}
    if not spec.get("status_page"):
        return SourceError(SOURCE, "statuspage", "config", "no supabase.status_page in the environment file",
                           hint="add supabase: {status_page: https://status.supabase.com}")
    return statuspage(str(spec["status_page"]))


def supabase_key_check(env: Any) -> pd.DataFrame | SourceError:
    """Supabase key validity for ``supabase.url`` with the key from the variable ``supabase.anon_key_env``."""
    spec = (env.raw.get("supabase") if env is not None else None) or {}
    if not spec.get("url"):
        return SourceError(SOURCE, "supabase_keys", "config", "no supabase.url in the environment file",
                           hint="add supabase: {url: https://<ref>.supabase.co, anon_key_env: SUPABASE_ANON_KEY}")
    key_env = str(spec.get("anon_key_env", "SUPABASE_ANON_KEY"))
    return supabase_keys(str(spec["url"]), env.secret(key_env), key_env=key_env)
