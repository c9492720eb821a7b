"""Local HTTP services and log files for the sandbox and the tests: health endpoints (health+json), a
Statuspage API, a Supabase-like API that checks its key, a Loki API that pages, and an authentication
incident staged with real log files, a deploy record and an environment file that points at all of it."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

Handler = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, str, str | bytes]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class Stub:
    """An HTTP server on 127.0.0.1 answering from a route table; ``hang`` and ``close`` simulate failures."""

    routes: dict[str, Handler | tuple[int, str, str | bytes]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    close: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _server: _Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Stub:
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parsed = urlparse(self.path)
                stub.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if parsed.path in stub.close:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.connection.close()
                    return
                if parsed.path in stub.hang:
                    time.sleep(30)
                    return
                route = stub.routes.get(parsed.path)
                if route is None:
                    status, ctype, body = 404, "text/plain", "not found"
                elif callable(route):
                    status, ctype, body = route(parsed.path, parse_qs(parsed.query),
                                                {k.lower(): v for k, v in self.headers.items()})
                else:
                    status, ctype, body = route
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = _Server(("127.0.0.1", 0), H)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def health_json(status: str, checks: dict[str, list[dict[str, Any]]] | None = None) -> tuple[int, str, str]:
    """An ``application/health+json`` answer (HTTP 503 for fail, as the draft RFC recommends)."""
    body = {"status": status, "checks": checks or {}}
    return (503 if status == "fail" else 200), "application/health+json", json.dumps(body)


def statuspage_summary(indicator: str, components: dict[str, str], incidents: list[str] | None = None
                       ) -> tuple[int, str, str]:
    """A Statuspage ``/api/v2/summary.json`` body."""
    body = {"page": {"id": "x", "name": "Supabase"},
            "status": {"indicator": indicator, "description": {"none": "All Systems Operational",
                                                               "minor": "Minor Service Outage",
                                                               "major": "Partial System Outage",
                                                               "critical": "Major System Outage"}[indicator]},
            "components": [{"name": n, "status": s, "group": False} for n, s in components.items()],
            "incidents": [{"name": i, "status": "investigating", "impact": indicator, "updated_at": "now"}
                          for i in incidents or []]}
    return 200, "application/json", json.dumps(body)


def supabase_api(valid_key: str, *, down: bool = False) -> dict[str, Handler]:
    """Supabase-like ``/auth/v1/health`` and ``/rest/v1/`` that answer 401 unless ``apikey`` is ``valid_key``."""
    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, str]:
        if down:
            return 503, "text/plain", "upstream connect error"
        if headers.get("apikey") != valid_key:
            return 401, "application/json", json.dumps({"message": "Invalid API key"})
        return 200, "application/json", json.dumps({"name": "GoTrue", "version": "v2"} if "auth" in path else {})
    return {"/auth/v1/health": route, "/rest/v1/": route}


def loki_api(entries: list[tuple[int, str]], labels: dict[str, str], *, max_limit: int = 100,
             tenant: str | None = None) -> Handler:
    """``/loki/api/v1/query_range`` over ``entries`` (ns, line), honouring start/end/limit/direction=forward and
    capping ``limit`` at ``max_limit`` as Loki's ``max_entries_limit_per_query`` does; 401 without the tenant."""
    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, str]:
        if tenant is not None and headers.get("x-scope-orgid") != tenant:
            return 401, "text/plain", "no org id"
        start, end = int(query["start"][0]), int(query["end"][0])
        limit = min(int(query.get("limit", ["100"])[0]), max_limit)
        hits = sorted(e for e in entries if start <= e[0] <= end)[:limit]
        body = {"status": "success", "data": {"resultType": "streams",
                                              "result": [{"stream": labels,
                                                          "values": [[str(ts), line] for ts, line in hits]}]}}
        return 200, "application/json", json.dumps(body)
    return route


# --------------------------------------------------------------------------- the staged incident

@dataclass
class StagedServices:
    """Stubs and files of a staged authentication/portal incident; ``env_file`` points at all of it."""

    directory: Path
    env_file: Path
    stubs: list[Stub]
    deploy_version: str
    onset: datetime
    secrets: dict[str, str]

    def stop(self) -> None:
        for s in self.stubs:
            s.stop()


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def write_identity_logs(path: Path, start: datetime, onset: datetime, end: datetime, *, seed: int = 7) -> None:
    """GoTrue (logrus JSON) request logs: ~1% failures before ``onset``, a 401 spike after it."""
    rnd = random.Random(seed)
    lines = []
    t = start
    while t < end:
        for _ in range(30):
            ts = t + timedelta(seconds=rnd.uniform(0, 60))
            bad = rnd.random() < (0.45 if ts >= onset else 0.01)
            grant = rnd.choice(["password", "refresh_token"])
            rec = {"component": "api", "level": "info", "method": "POST", "path": "/token",
                   "grant_type": grant, "referer": "https://portal.example.com",
                   "request_id": f"{rnd.getrandbits(64):016x}", "time": _iso(ts),
                   "duration": rnd.randint(2, 40) * 1_000_000, "remote_addr": "10.1.2.3"}
            if bad and ts >= onset:
                rec.update(level="error", status=401, error_code="bad_jwt",
                           msg=f"invalid JWT: unable to parse or verify signature, token is unverifiable: "
                               f"key {rnd.getrandbits(32):08x} not found")
            elif bad:
                rec.update(status=400, error_code="invalid_credentials", msg="Invalid login credentials")
            else:
                rec.update(status=200, msg="request completed")
            lines.append((ts, json.dumps(rec)))
        t += timedelta(minutes=1)
    lines.sort()
    body = "\n".join(line for _, line in lines)
    body += "\n{\"level\":\"info\",\"msg\": truncated line\n"  # a corrupt line, as real files have
    path.write_text(body)


def write_portal_logs(path: Path, start: datetime, onset: datetime, end: datetime, *, seed: int = 11) -> None:
    """Next.js server output with timestamps, colours and glyphs: 5xx and session errors after ``onset``."""
    rnd = random.Random(seed)
    out = [f"{_iso(start)}   \x1b[1m\x1b[35m▲ Next.js 14.2.3\x1b[0m", f"{_iso(start)}  \x1b[32m✓\x1b[0m Ready in 2.1s"]
    t = start
    while t < end:
        for _ in range(20):
            ts = t + timedelta(seconds=rnd.uniform(0, 60))
            if ts >= onset + timedelta(minutes=1) and rnd.random() < 0.35:
                out.append(f"{_iso(ts)}  \x1b[31m⨯\x1b[0m Error: Failed to refresh session: identity answered 401 "
                           f"(request {rnd.getrandbits(32):08x})")
                out.append(f"{_iso(ts)} GET /dashboard 500 in {rnd.randint(40, 90)}ms")
            else:
                out.append(f"{_iso(ts)} GET /dashboard 200 in {rnd.randint(20, 60)}ms")
        t += timedelta(minutes=1)
    path.write_text("\n".join(sorted(out, key=lambda s: s[:24])) + "\n")


def stage_auth_incident(directory: Path, *, minutes: int = 60, onset_minutes_ago: int = 18,
                        redis_url_env: str = "RUNBOOK_REDIS_URL", pg_dsn_env: str = "RUNBOOK_PG_DSN") -> StagedServices:
    """identity deploy v2.4.0 breaks JWT verification: a 401 spike right after it, identity's health check failing
    on its token-signing dependency, the portal throwing 500s on session refresh; Supabase itself is fine."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start, onset = now - timedelta(minutes=minutes), now - timedelta(minutes=onset_minutes_ago)
    anon_key = "demo-anon-" + "".join(random.choice("abcdefghijklmnop") for _ in range(24))
    identity = Stub(routes={"/health": health_json("fail", {
        "jwks:fetch": [{"status": "fail", "output": "signing key kid=2024-11 not found in JWKS"}],
        "redis:ping": [{"status": "pass"}]})}).start()
    portal = Stub(routes={"/api/health": health_json("warn", {
        "identity:reachable": [{"status": "warn", "output": "session refresh failing (401)"}]})}).start()
    supabase = Stub(routes={**supabase_api(anon_key),
                            "/api/v2/summary.json": statuspage_summary("none", {"Auth": "operational"})}).start()
    write_identity_logs(directory / "identity.log", start, onset, now)
    write_portal_logs(directory / "portal.log", start, onset, now)
    deploys = [
        {"time": _iso(now - timedelta(minutes=52)), "service": "portal", "kind": "deploy", "version": "v1.8.2",
         "description": "portal: dashboard widgets"},
        {"time": _iso(onset - timedelta(minutes=2)), "service": "identity", "kind": "deploy", "version": "v2.4.0",
         "description": "identity: rotate JWT signing keys, new JWKS cache"},
        {"time": _iso(now - timedelta(minutes=5)), "service": "worker", "kind": "config", "version": "cfg-311",
         "description": "worker: raise concurrency to 8"},
    ]
    (directory / "deploys.yaml").write_text(yaml.safe_dump(deploys, sort_keys=False))
    env = {
        "postgres": {"dsn_env": pg_dsn_env},
        "redis": {"url_env": redis_url_env},
        "supabase": {"url": supabase.url, "anon_key_env": "DEMO_SUPABASE_ANON_KEY", "status_page": supabase.url},
        "services": {
            "identity": {"url": identity.url, "health": "/health",
                         "logs": {"files": str(directory / "identity.log*"), "format": "auto"}},
            "portal": {"url": portal.url, "health": "/api/health",
                       "logs": {"files": str(directory / "portal.log*"), "format": "auto"}},
        },
        "changes": {"file": "deploys.yaml"},
    }
    env_file = directory / "environment.yaml"
    env_file.write_text(yaml.safe_dump(env, sort_keys=False))
    return StagedServices(directory, env_file, [identity, portal, supabase], "v2.4.0", onset,
                          {"DEMO_SUPABASE_ANON_KEY": anon_key})
