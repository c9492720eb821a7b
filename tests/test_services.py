"""Service evidence against real local HTTP servers and real log files: health, Statuspage, Supabase keys,
logs in every format, Loki paging, changes, and both notebooks end to end."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from runbook_lib import archive
from runbook_lib.config import load_environment
from runbook_lib.findings import Severity, Thresholds
from runbook_lib.rules import services as rules
from runbook_lib.sandbox import free_port
from runbook_lib.sandbox.services import (Stub, health_json, loki_api, stage_auth_incident, statuspage_summary,
                                          supabase_api, write_identity_logs)
from runbook_lib.sources import SourceError, changes, http, logs
from tests.test_runner import all_archive_bytes, run_cli

TH = Thresholds()
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImF1dGhlbnRpY2F0ZWQifQ."
       "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def stubs():
    started: list[Stub] = []
    yield started
    for s in started:
        s.stop()


def test_health_checks_categorise_every_failure(stubs):
    s = Stub(routes={"/pass": health_json("pass"), "/warn": health_json("warn", {"db": [{"status": "warn"}]}),
                     "/fail": health_json("fail", {"redis:ping": [{"status": "fail", "output": "NOAUTH"}]}),
                     "/boom": (500, "text/plain", "boom")}, hang={"/slow"}, close={"/drop"}).start()
    stubs.append(s)
    df = http.check_health([("a", s.url + "/pass"), ("b", s.url + "/warn"), ("c", s.url + "/fail"),
                            ("d", s.url + "/slow"), ("e", s.url + "/drop"), ("f", f"http://127.0.0.1:{free_port()}/"),
                            ("g", s.url + "/boom")], timeout_s=1.0).set_index("service")
    assert df.loc["a", "ok"] and df.loc["a", "health"] == "pass"
    assert df.loc["b", "ok"] and df.loc["b", "health"] == "warn"
    assert not df.loc["c", "ok"] and df.loc["c", "failing_checks"] == ["redis:ping: fail (NOAUTH)"]
    assert df.loc["d", "category"] == "timeout" and not df.loc["d", "ok"]
    assert df.loc["e", "category"] == "protocol" and not df.loc["e", "ok"]
    assert df.loc["f", "category"] == "connect"
    assert df.loc["g", "category"] == "http_status" and df.loc["g", "status"] == 500
    found = {f.subject: f for f in rules.health(df.reset_index(), TH, rules.AUTH)}
    assert found["c"].severity is Severity.CRIT and "redis:ping" in found["c"].title
    assert found["b"].severity is Severity.WARN and found["d"].severity is Severity.CRIT


def test_statuspage_major_outage_is_critical(stubs):
    s = Stub(routes={"/api/v2/summary.json": statuspage_summary(
        "major", {"Auth": "major_outage", "Database": "operational", "Storage": "degraded_performance"},
        ["Elevated auth error rates in us-east-1"])}).start()
    stubs.append(s)
    page = http.statuspage(s.url)
    assert set(page["component"]) == {"(page)", "Auth", "Storage"}
    [f] = rules.statuspage(page, TH, rules.AUTH)
    assert f.severity is Severity.CRIT and "Auth: major_outage" in f.title and "us-east-1" in f.detail
    assert isinstance(http.statuspage(f"http://127.0.0.1:{free_port()}"), SourceError)


def test_supabase_key_rejected_outage_and_valid_never_show_the_key(stubs, tmp_path, monkeypatch):
    good, bad = "good-anon-key-123456", "stale-anon-key-987654"
    up = Stub(routes=supabase_api(good)).start()
    down = Stub(routes=supabase_api(good, down=True)).start()
    stubs += [up, down]
    for url, key, expect in ((up.url, good, "ok"), (up.url, bad, "key_rejected"), (down.url, good, "outage")):
        env_file = tmp_path / "e.yaml"
        env_file.write_text(f"supabase: {{url: '{url}', anon_key_env: TEST_ANON_KEY}}\n")
        monkeypatch.setenv("TEST_ANON_KEY", key)
        result = http.supabase_key_check(load_environment(str(env_file)))
        assert set(result["verdict"]) == {expect}
        findings = rules.supabase_key(result, TH, rules.PORTAL)
        assert key not in json.dumps([f.to_dict() for f in findings]) + result.to_json()
        if expect == "key_rejected":
            assert findings[0].severity is Severity.CRIT and "$TEST_ANON_KEY" in findings[0].title
    assert all(r[1].get("apikey") in (good, bad) for r in up.requests)  # the key went as a header


def _pino(t: datetime, i: int, status: int = 200, **extra) -> str:
    return json.dumps({"level": 50 if status >= 500 else 30, "time": int(t.timestamp() * 1000), "pid": 7,
                       "hostname": "api-1", "req": {"id": i, "method": "GET", "url": f"/tasks/{i}"},
                       "res": {"statusCode": status}, "responseTime": 12.5, "msg": "request completed", **extra})


def test_every_log_format_normalized_with_corrupt_and_mixed_lines_and_gzip(tmp_path, monkeypatch):
    t0 = NOW - timedelta(minutes=30)
    (tmp_path / "tasks.log.1.gz").write_bytes(gzip.compress(
        "\n".join(_pino(t0 + timedelta(seconds=i * 0.5), i) for i in range(100)).encode() + b"\n"))
    lines = [_pino(t0 + timedelta(minutes=1, seconds=i), 100 + i, 503 if i % 10 == 0 else 200) for i in range(300)]
    lines.insert(150, '{"level":30,"msg": not json')
    lines.insert(10, "")
    (tmp_path / "tasks.log").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(logs, "BLOCK_BYTES", 4096)  # many blocks: one corrupt line must cost one block only
    slow_blocks = []
    real = logs._parse_json_lines
    monkeypatch.setattr(logs, "_parse_json_lines", lambda ls, st: slow_blocks.append(len(ls)) or real(ls, st))
    df = logs.read_files("tasks", str(tmp_path / "tasks.log*"))
    assert df.attrs["parsed"] == 400 and df.attrs["skipped"] == 1 and "not json" in df.attrs["skipped_sample"][0]
    assert len(slow_blocks) == 1 and slow_blocks[0] < 40
    assert df.attrs["formats"] == {"pino": 400}
    row = df.iloc[-1]
    assert row["method"] == "GET" and row["route"].startswith("/tasks/") and row["latency_ms"] == 12.5
    assert int((df["status"] == 503).sum()) == 30 and set(df.loc[df["status"] == 503, "level"]) == {"error"}
    assert df["time"].dt.tz is not None and df["time"].is_monotonic_increasing

    (tmp_path / "bunyan.log").write_text(json.dumps({
        "name": "worker", "hostname": "w1", "pid": 3, "level": 40, "msg": "retrying job", "time": (t0).isoformat(),
        "v": 0, "err": {"message": "ECONNRESET", "name": "Error", "stack": "Error: ECONNRESET\n at x"}}) + "\n")
    b = logs.read_files("worker", str(tmp_path / "bunyan.log"))
    assert b.attrs["formats"] == {"bunyan": 1} and b.iloc[0]["level"] == "warn" and b.iloc[0]["error"] == "ECONNRESET"

    (tmp_path / "gotrue.log").write_text(json.dumps({
        "component": "api", "level": "warning", "msg": "request completed", "time": t0.isoformat(), "status": 401,
        "path": "/token", "method": "POST", "error_code": "invalid_credentials", "grant_type": "password",
        "duration": 4_500_000}) + "\n")
    g = logs.read_files("identity", str(tmp_path / "gotrue.log")).iloc[0]
    assert (g["level"], g["status"], g["route"], g["latency_ms"], g["error_code"], g["grant_type"]) == \
        ("warn", 401, "/token", 4.5, "invalid_credentials", "password")

    (tmp_path / "svc.logfmt").write_text(
        f'time={t0.isoformat()} level=error msg="payment failed" status=502 method=POST path=/pay\n'
        "garbage without pairs\n")
    lf = logs.read_files("pay", str(tmp_path / "svc.logfmt"))
    assert lf.attrs["skipped"] == 1 and lf.iloc[0]["status"] == 502 and lf.iloc[0]["message"] == "payment failed"

    (tmp_path / "next.log").write_text(
        f"{t0.isoformat()}  \x1b[32m✓\x1b[39m Ready in 2.3s\n"
        f"{(t0 + timedelta(seconds=5)).isoformat()}  \x1b[31m⨯\x1b[39m Error: fetch failed\n"
        "    at async Page (/app/.next/server/app/page.js:1:99)\n"
        f"{(t0 + timedelta(seconds=6)).isoformat()} GET /dashboard 500 in 41ms\n"
        + json.dumps({"level": "error", "msg": "json line in a text file", "time": t0.isoformat()}) + "\n")
    nx = logs.read_files("portal", str(tmp_path / "next.log"))
    # four events from five lines: the stack frame belongs to the error above it
    assert set(nx.attrs["formats"]) == {"text", "pino"} and len(nx) == 4 and nx.attrs["lines"] == 5
    texts = nx[nx["format"] == "text"].set_index("message")
    assert texts.loc["Ready in 2.3s", "level"] == "info" and texts.loc["Error: fetch failed", "level"] == "error"
    assert "at async Page" in texts.loc["Error: fetch failed", "stack"]
    assert "\x1b" not in "".join(nx["message"].astype(str))
    assert int(nx["status"].max()) == 500

    windowed = logs.read_files("tasks", str(tmp_path / "tasks.log*"), start=t0 + timedelta(minutes=1))
    assert len(windowed) == 300 and windowed.attrs["outside_window"] == 100


def test_secrets_in_log_lines_never_reach_the_frame(tmp_path):
    dsn = "postgresql://app:Sup3r-Secret-pw@db.internal:5432/app"
    (tmp_path / "a.log").write_text("\n".join([
        json.dumps({"level": 50, "time": int(NOW.timestamp() * 1000), "msg": f"db connect failed {dsn}",
                    "err": {"message": f"auth header Bearer {JWT}"}}),
        json.dumps({"level": 30, "time": int(NOW.timestamp() * 1000), "msg": f"token={JWT} user jane.doe@corp.com",
                    "apikey": "sk_live_abcdefghijklmnop1234"}),
    ]) + "\n")
    df = logs.read_files("api", str(tmp_path / "a.log"))
    text = df.astype(str).to_csv()
    for secret in ("Sup3r-Secret-pw", JWT, "jane.doe@corp.com", "sk_live_abcdefghijklmnop1234"):
        assert secret not in text


def test_loki_query_range_pages_past_the_entry_limit_with_the_tenant_header(stubs):
    base = int((NOW - timedelta(minutes=10)).timestamp() * 1e9)
    entries = [(base + i * 1_000_000_000, json.dumps({"level": "error" if i % 5 == 0 else "info", "msg": f"m{i}"}))
               for i in range(230)]
    entries += [(base + 99 * 1_000_000_000, "level=warn msg=\"same nanosecond as entry 99\"")]
    s = Stub(routes={"/loki/api/v1/query_range": loki_api(entries, {"app": "identity"}, max_limit=100,
                                                          tenant="team-a")}).start()
    stubs.append(s)
    df = logs.read_loki("identity", s.url, '{app="identity"}', start=NOW - timedelta(minutes=15), end=NOW,
                        org_id="team-a", page_limit=100)
    assert len(df) == 231 and sum(1 for p, _ in s.requests) >= 3
    assert all(h.get("x-scope-orgid") == "team-a" for _, h in s.requests)
    assert int((df["level"] == "error").sum()) == 46 and set(df["format"]) == {"pino", "logfmt"}
    denied = logs.read_loki("identity", s.url, '{app="identity"}', start=NOW - timedelta(minutes=15), end=NOW,
                            org_id="someone-else")
    assert isinstance(denied, SourceError) and denied.kind == "permission"


def test_changes_from_file_url_and_git_and_the_one_that_lines_up(tmp_path, stubs):
    onset = NOW - timedelta(minutes=20)
    items = [{"time": (onset - timedelta(minutes=3)).isoformat(), "service": "identity", "kind": "deploy",
              "version": "v2.4.0", "description": "rotate signing keys"},
             {"time": (onset - timedelta(hours=3)).isoformat(), "service": "portal", "kind": "deploy",
              "version": "v1.0.0"},
             {"time": "not a time", "service": "x"}]
    (tmp_path / "deploys.yaml").write_text(json.dumps(items))
    from_file = changes.from_file(tmp_path / "deploys.yaml")
    assert len(from_file) == 2 and from_file.attrs["skipped"] == 1
    s = Stub(routes={"/changes": (200, "application/json", json.dumps({"changes": items[:1]}))}).start()
    stubs.append(s)
    assert list(changes.from_url(s.url + "/changes")["version"]) == ["v2.4.0"]
    repo = tmp_path / "deploy-repo"
    repo.mkdir()
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
               "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=git_env)
    for minutes, folder, subject in ((90, "portal", "deploy portal v1.8.2"), (23, "identity", "deploy identity v2.4.0"),
                                     (2, "identity", "Revert identity v2.4.0")):
        (repo / folder).mkdir(exist_ok=True)
        (repo / folder / "release.txt").write_text(subject)
        when = (NOW - timedelta(minutes=minutes)).isoformat()
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=git_env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", subject], check=True,
                       env={**git_env, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": when})
    g = changes.from_git(repo, since=NOW - timedelta(hours=1), until=NOW, services=["identity", "portal"])
    assert list(g["version"]) == ["v2.4.0", "v2.4.0"] and list(g["kind"]) == ["deploy", "rollback"]
    assert set(g["service"]) == {"identity"}
    onsets = pd.DataFrame([{"service": "identity", "onset": pd.Timestamp(onset)}])
    lined = changes.lined_up(from_file, onsets)
    assert list(lined["version"]) == ["v2.4.0"] and bool(lined.iloc[0]["same_service"])
    [f] = rules.changes_lined_up(lined, from_file, TH, rules.AUTH)
    assert f.severity is Severity.CRIT and f.action.startswith("Roll back identity deploy v2.4.0")


def test_onset_error_templates_and_breakdown_from_real_identity_logs(tmp_path):
    start, onset = NOW - timedelta(minutes=40), NOW - timedelta(minutes=15)
    write_identity_logs(tmp_path / "identity.log", start, onset, NOW)
    df = logs.read_files("identity", str(tmp_path / "identity.log"))
    # the file ends with a corrupt line, so its last piece is read line by line: no field may go missing there
    assert df.attrs["skipped"] == 1 and df.loc[df["status"] == 401, "error_code"].notna().all()
    rates = logs.error_rate(df, statuses=logs.AUTH_FAILURE_STATUSES)
    found = logs.onset(rates)
    assert abs((found.iloc[0]["onset"] - pd.Timestamp(onset)).total_seconds()) <= 60
    templates = logs.error_templates(df, since=found.iloc[0]["onset"])
    top = templates.iloc[0]
    assert bool(top["new"]) and "invalid JWT" in top["template"] and "<id>" in top["template"]
    reasons = logs.breakdown(df)
    assert {"401 / bad_jwt / password", "400 / invalid_credentials / password"} <= set(reasons["reason"])


def test_both_notebooks_name_the_unhealthy_service_and_the_deploy_that_lines_up(sandbox, tmp_path):
    staged = stage_auth_incident(tmp_path / "incident")
    try:
        env = {**staged.secrets, "RUNBOOK_REDIS_URL": sandbox.redis.url}
        assert run_cli("check-env", str(staged.env_file), env=env).returncode == 0
        results = {}
        for nb in ("auth_failures", "portal_outage"):
            proc = run_cli("run", nb, "--incident", "AUTH-9", "--env-file", str(staged.env_file), "--archive",
                           str(tmp_path / "arch"), env=env)
            assert proc.returncode == 0, proc.stderr
        for record in archive.list_records(tmp_path / "arch", "AUTH-9"):
            results[record.name.split("-", 1)[1]] = {f["key"]: f for f in
                                                     json.loads((record / "findings.json").read_text())}
    finally:
        staged.stop()
    auth = results["auth_failures"]
    assert auth["svc.health:identity"]["severity"] == "crit"
    lined = [f for k, f in auth.items() if k.startswith("svc.change_lined_up:identity:identity")]
    assert lined and "Roll back identity deploy v2.4.0" in lined[0]["action"]
    assert auth["svc.error_spike:identity"]["severity"] == "crit"
    assert auth["svc.redis:all"]["severity"] == "ok"
    portal = results["portal_outage"]
    assert portal["svc.health:identity"]["severity"] == "crit" and portal["svc.supabase_key:all"]["severity"] == "ok"
    assert portal["svc.prolonged_outage:portal"]["severity"] == "crit"
    assert any("v2.4.0" in f["title"] for k, f in portal.items() if k.startswith("svc.change_lined_up"))
    assert staged.secrets["DEMO_SUPABASE_ANON_KEY"].encode() not in all_archive_bytes(tmp_path / "arch")


def test_check_env_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  identity: {url: 'ftp://x', health: 'health', logs: {loki: {url: 'x', query: 'app'}}}\n"
                   "supabase: {url: 'https://ref.supabase.co'}\nchanges: {file: missing.yaml}\n")
    proc = run_cli("check-env", str(bad))
    assert proc.returncode == 2
    for text in ("services.identity.url", "services.identity.health", "logs.loki.url", "logs.loki.query",
                 "supabase.anon_key_env", "changes.file"):
        assert text in proc.stderr
    assert run_cli("check-env", "nowhere").stderr.count("\n") == 1
