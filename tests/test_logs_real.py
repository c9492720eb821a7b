"""Service logs written by the real writers: pino + pino-http serving real requests that fail with 401/403/500 through
its own error path; a Next.js production server's own output (next build && next start) beside the access log of an
nginx in front of it; Python's logging with tracebacks; a 2 GB copytruncate hole and binary garbage. Requests are
counted as requests, events as events, and rates, status splits and reasons match what the generators know."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest

from runbook_lib.config import Environment
from runbook_lib.findings import Severity, Thresholds
from runbook_lib.rules import services as rules
from runbook_lib.rules import triage
from runbook_lib.sandbox import free_port
from runbook_lib.sources import logs
from tests.helpers import wait_for

TH = Thresholds()
NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)


# --------------------------------------------------------------------------- pino + pino-http

@pytest.fixture
def identity(tmp_path, node_modules):
    log, port = tmp_path / "identity.log", free_port()
    proc = subprocess.Popen(["node", str(Path(__file__).parent / "node" / "auth_server.js")],
                            env={**os.environ, "NODE_PATH": str(node_modules), "LOG_FILE": str(log),
                                 "PORT": str(port)}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield f"http://127.0.0.1:{port}", log
    proc.kill()
    proc.wait(timeout=10)


def _traffic(url: str, plan: list[tuple[datetime, int, str, str, int]]) -> Counter:
    """Send (time, status, type, reason, count) requests; returns what was sent by (minute, status)."""
    sent: Counter = Counter()
    with httpx.Client(timeout=10) as c:
        for at, status, kind, reason, n in plan:
            for i in range(n):
                t = at + timedelta(seconds=i * 50 / max(n, 1))
                c.get(f"{url}/token", params={"status": status, "type": kind, "reason": reason},
                      headers={"X-Fake-Time": str(int(t.timestamp() * 1000))})
                sent[(at, status)] += 1
    return sent


def test_pino_http_requests_rates_status_split_and_reasons_match_what_was_sent(identity):
    url, log = identity
    onset = NOW - timedelta(minutes=10)
    plan = []
    for m in range(30, 10, -1):  # twenty quiet minutes: 40 good requests, 1 expired token each
        at = NOW - timedelta(minutes=m)
        plan += [(at, 200, "", "", 40), (at, 401, "TokenExpiredError", "jwt expired", 1)]
    for m in range(10, 0, -1):  # the deploy: a signing key is missing
        at = NOW - timedelta(minutes=m)
        plan += [(at, 200, "", "", 24), (at, 401, "JsonWebTokenError", f"invalid JWT: unable to verify signature, key "
                                                                        f"id {m + 1000} not found", 14),
                 (at, 403, "ForbiddenError", "forbidden: role viewer may not sign in", 1),
                 (at, 500, "Error", "connect ECONNREFUSED 10.0.0.7:6379", 1)]
    sent = _traffic(url, plan)
    wait_for(lambda: log.exists() and sum(1 for _ in log.open()) >= sum(sent.values()), timeout=30)

    df = logs.read_files("identity", str(log), start=NOW - timedelta(minutes=40), end=NOW)
    assert (df["status"].notna()).sum() == sum(sent.values())  # one request, one event: pino-http's own line
    rates = logs.error_rate(df, statuses=logs.AUTH_FAILURE_STATUSES)
    assert set(rates["denominator"]) == {"requests"}
    peak = rates.set_index("time").loc[pd.Timestamp(onset + timedelta(minutes=5))]
    assert peak["total"] == 40 and peak["errors"] == 16 and abs(peak["error_rate"] - 16 / 40) < 1e-9
    onsets = logs.onset(rates)
    [o] = onsets.itertuples()
    assert o.onset == pd.Timestamp(onset) and o.denominator == "requests" and abs(o.peak_rate - 0.4) < 1e-9
    details = logs.spike_details(df, onsets, statuses=logs.AUTH_FAILURE_STATUSES)
    [d] = details.itertuples()
    assert d.statuses == {401: 140, 403: 10, 500: 10}
    assert d.reasons_after[0] == ("JsonWebTokenError: invalid JWT: unable to verify signature, key id <n> not found",
                                  140)
    assert d.reasons_before == [("TokenExpiredError: jwt expired", 20)]
    [f] = rules.error_spikes(onsets, TH, rules.AUTH, what="failed authentications", details=details)
    assert f.severity is Severity.CRIT and "40% of 40 requests" in f.title and "401: 140, 403: 10, 500: 10" in f.title
    assert "failing requests over requests" in f.detail and "JsonWebTokenError: invalid JWT" in f.detail
    new = logs.error_templates(df, since=o.onset, statuses=logs.AUTH_FAILURE_STATUSES)
    fresh = set(new[new["new"]]["template"])
    assert "JsonWebTokenError: invalid JWT: unable to verify signature, key id <n> not found" in fresh
    assert "TokenExpiredError: jwt expired" not in fresh  # it was there before the onset
    [nf, *_] = rules.new_error_templates(new, TH, rules.AUTH)
    assert nf.severity is Severity.WARN and "invalid JWT" in nf.title


# --------------------------------------------------------------------------- Next.js production server and nginx

NEXT_APP = {
    "package.json": json.dumps({"name": "portal", "private": True}),
    "pages/index.js": "export default function Home() { return <p>ok</p>; }\n",
    "pages/dashboard.js": ("export async function getServerSideProps() {\n"
                           "  const load = eval('require');  // resolved at run time, like a module a deploy forgot\n"
                           "  load('./session-store');\n  return { props: {} };\n}\n"
                           "export default function Dashboard() { return <p>dashboard</p>; }\n"),
    "pages/account.js": ("export async function getServerSideProps() {\n"
                         "  throw new Error('Failed to refresh session: identity answered 401 (request 7f3a9c)');\n}\n"
                         "export default function Account() { return <p>account</p>; }\n"),
}
NGINX_CONF = """
worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log combined;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}
}}
"""


@pytest.fixture(scope="module")
def next_build(tmp_path_factory):
    if not shutil.which("npm"):
        pytest.fail("Node.js and npm are needed to build the Next.js app with Next.js itself")
    d = tmp_path_factory.mktemp("portal")
    for name, text in NEXT_APP.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    for cmd in (["npm", "install", "--silent", "--no-audit", "--no-fund", "next@15", "react@19", "react-dom@19"],
                ["npx", "next", "build"]):
        proc = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    return d


def test_next_start_output_is_error_events_and_nginx_in_front_gives_the_request_rate(next_build, tmp_path):
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is needed in front of the portal (scripts/test installs it with apt-get)")
    app_port, proxy_port = free_port(), free_port()
    out = (tmp_path / "portal.log").open("w")
    portal = subprocess.Popen(["npx", "next", "start", "-p", str(app_port)], cwd=next_build, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "NEXT_TELEMETRY_DISABLED": "1"},
                              start_new_session=True)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp_path, port=proxy_port, upstream=app_port))
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(tmp_path / "nginx.conf"),
                              "-p", str(tmp_path)], start_new_session=True)
    probes: list[int] = []
    try:
        wait_for(lambda: probes.append(_status(f"http://127.0.0.1:{proxy_port}/")) or probes[-1] == 200, timeout=60,
                 interval=0.5)
        sent = Counter()
        for path, n in (("/", 30), ("/dashboard", 6), ("/account", 4)):
            for _ in range(n):
                sent[(path, _status(f"http://127.0.0.1:{proxy_port}{path}"))] += 1
        assert sent == {("/", 200): 30, ("/dashboard", 500): 6, ("/account", 500): 4}
        time.sleep(1.0)
    finally:
        for p in (nginx, portal):
            os.killpg(p.pid, 9)
            p.wait(timeout=10)
        out.close()
    lines = (tmp_path / "portal.log").read_text().splitlines()
    app = logs.read_files("portal", str(tmp_path / "portal.log"), start=NOW - timedelta(hours=1))
    errors = app[app["level"] == "error"]
    # Next.js prints each failing render's error block (a dozen lines) once or more; counted as events, not lines
    assert len(errors) >= 10 and len(lines) > 4 * len(errors)
    assert errors["message"].str.startswith("Error: ").all()
    assert set(errors["reason"].map(logs.template_of)) == {
        "Error: Cannot find module <str>", "Error: Failed to refresh session: identity answered <n> (request <id>)"}
    assert "Require stack:" in errors.iloc[0]["stack"]
    alone = logs.error_rate(app)
    assert set(alone["denominator"]) == {"events"} and alone["error_rate"].isna().all()  # never a share of lines
    assert int(alone["errors"].sum()) == len(errors)

    env = Environment("t", None, services={"portal": {"logs": {"files": str(tmp_path / "portal.log")},
                                                      "requests": {"files": str(tmp_path / "access.log")}}})
    both = logs.read_service_logs(env, "portal", NOW - timedelta(hours=1), datetime.now(timezone.utc))
    rates = logs.error_rate(both)
    assert set(rates["denominator"]) == {"requests"}
    reached = [p for p in probes if p]  # readiness probes nginx answered (502 until next start listens) count too
    assert int(rates["total"].sum()) == 40 + len(reached)
    assert int(rates["errors"].sum()) == 10 + sum(1 for p in reached if p >= 500)
    templates = logs.error_templates(both)
    assert {"Error: Cannot find module <str>"} <= set(templates["template"])


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0


# --------------------------------------------------------------------------- Python tracebacks

def test_python_logging_tracebacks_are_one_event_each_with_the_exception_as_reason(tmp_path):
    path = tmp_path / "worker.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("billing-worker-test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for i in range(7):
            log.info("charging order %d", i)
            try:
                {"visa": 1}[f"card-{i}"]
            except KeyError:
                try:
                    raise ValueError(f"card declined for order {i}")
                except ValueError:
                    log.exception("charge failed")
    finally:
        log.removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    df = logs.read_files("worker", str(path))
    assert len(df) == 14 and len(lines) > 60  # 7 info + 7 errors, each error a two-exception traceback
    errs = df[df["level"] == "error"]
    assert len(errs) == 7 and set(errs["message"].str.replace(r"^.*: ", "", regex=True)) == {"charge failed"}
    assert set(errs["reason"].map(logs.template_of)) == {"ValueError: card declined for order <n>"}
    assert "During handling of the above exception" in errs.iloc[0]["stack"]


# --------------------------------------------------------------------------- production-size files

def _pino_lines(times: list[datetime]) -> str:
    return "".join(json.dumps({"level": 50 if i % 2 else 30, "time": int(t.timestamp() * 1000), "pid": 1,
                               "msg": "request failed" if i % 2 else "ok", "req": {"method": "GET", "url": "/x"},
                               "res": {"statusCode": 500 if i % 2 else 200}}) + "\n" for i, t in enumerate(times))


def test_a_2gb_copytruncate_hole_costs_the_window_not_the_file(tmp_path):
    path = tmp_path / "portal.log"
    with open(path, "wb") as f:
        f.truncate(2 << 30)  # what copytruncate leaves: the old size as a hole of NUL bytes
    with open(path, "a") as f:
        f.write(_pino_lines([NOW - timedelta(minutes=90) + timedelta(seconds=30 * i) for i in range(200)]))
    df = logs.read_files("portal", str(path), start=NOW - timedelta(minutes=60), end=NOW)
    assert len(df) == 121 and df["time"].min() >= pd.Timestamp(NOW - timedelta(minutes=60))  # both ends included
    assert df.attrs["unreadable_bytes"] >= 2 << 30 and df.attrs["read_bytes"] < 64 << 20
    [f] = rules.log_quality(df, "portal", rules.PORTAL)
    assert f.severity is Severity.WARN and "mostly unreadable" in f.title and "NUL" in f.title


def test_binary_garbage_is_not_read_as_log_lines(tmp_path):
    path = tmp_path / "core.log"
    path.write_bytes(os.urandom(5 << 20))
    df = logs.read_files("svc", str(path))
    assert len(df) < df.attrs["lines"] / 100 and df.attrs["unreadable_bytes"] > 4 << 20  # was: every fragment a line
    [f] = rules.log_quality(df, "svc", rules.PORTAL)
    assert f.severity is Severity.WARN and "mostly unreadable" in f.title


def test_rotated_files_outside_the_window_are_not_opened(tmp_path):
    import gzip

    old = tmp_path / "api.log.2.gz"
    with gzip.open(old, "wt") as f:
        f.write(_pino_lines([NOW - timedelta(days=2)]))
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    (tmp_path / "api.log").write_text(_pino_lines([NOW - timedelta(minutes=5)]))
    corrupt = tmp_path / "api.log.3.gz"
    corrupt.write_bytes(b"not gzip at all")
    os.utime(corrupt, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    df = logs.read_files("api", str(tmp_path / "api.log*"), start=NOW - timedelta(minutes=60), end=NOW)
    assert len(df) == 1 and df.attrs["skipped"] == 0  # the corrupt old file was never opened


# --------------------------------------------------------------------------- roles, not names

def test_triage_routes_by_role_not_by_name():
    health = pd.DataFrame([{"service": "gatekeeper", "ok": False}, {"service": "storefront", "ok": False}])
    ranked = triage.recommend(health=health, roles={"gatekeeper": "auth", "storefront": "web"})
    top = ranked.set_index("notebook")
    assert top.loc["auth_failures", "urgency"] == "crit" and "gatekeeper health check fails" in top.loc["auth_failures", "reasons"]
    assert top.loc["portal_outage", "urgency"] == "crit"
    env = Environment("t", None, services={"auth-api": {}, "web": {}, "gatekeeper": {"role": "auth"}, "billing": {}})
    assert env.services_with_role("auth") == ["auth-api", "gatekeeper"] and env.services_with_role("web") == ["web"]
    assert env.role_of("billing") == "other"
