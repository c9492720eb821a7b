"""What the record tells people: run summaries, compare, loud misconfiguration, status updates, the incident in its
own time, readable offline reports, and the demo that starts where a responder starts."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socketserver
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib import archive, tables, timeline
from runbook_lib.errors import RunbookError
from runbook_lib.findings import Finding, Severity
from runbook_lib.sandbox import Sandbox, stage_database_pressure
from tests.test_runner import run_cli


@pytest.fixture
def own():
    sb = Sandbox.start()
    yield sb
    sb.stop()


# --------------------------------------------------------------------------- summaries and --fail-on

def test_run_summary_leads_with_the_verdict_not_a_status_and_fail_on_sets_the_exit(own, tmp_path):
    staged = stage_database_pressure(own.postgres, slow_statements=False)
    try:
        proc = run_cli("run", "database_pressure", "--incident", "SUM-1", "--archive", str(tmp_path), "-p",
                       "sample_seconds=0.2", env=own.env())
        failing = run_cli("run", "database_pressure", "--incident", "SUM-1", "--archive", str(tmp_path), "-p",
                          "sample_seconds=0.2", "--fail-on", "crit", env=own.env())
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "database_pressure for incident SUM-1: run completed"
    assert re.match(r"Found: \d+ crit(, \d+ \w+)*$", lines[1]), lines[1]
    assert lines[2].startswith("Verdict: CRITICAL:") and lines[3].startswith("[CRIT ]")
    assert "Status: ok" not in proc.stdout and "checks clear" not in proc.stdout
    assert any(ln.startswith("report: file:///") and ln.endswith("/report.html") for ln in lines)
    assert failing.returncode == 3 and "--fail-on crit: worst finding is crit" in failing.stderr
    clear = run_cli("run", "database_pressure", "--incident", "SUM-2", "--archive", str(tmp_path), "-p",
                    "sample_seconds=0.2", "--fail-on", "crit", env=own.env())
    assert clear.returncode == 0 and "Verdict: CRITICAL" not in clear.stdout


def test_a_notebook_whose_primary_source_is_not_configured_refuses_to_start(tmp_path):
    env_file = tmp_path / "staging.yaml"
    env_file.write_text("redis: {url_env: STAGING_REDIS_URL}\n")
    proc = run_cli("run", "database_pressure", "--incident", "CFG-1", "--env-file", str(env_file), "--archive",
                   str(tmp_path / "arch"), env={"RUNBOOK_PG_DSN": "", "RUNBOOK_REDIS_URL": ""})
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert "database_pressure needs Postgres" in line and "declares no postgres target" in line
    assert not archive.list_records(tmp_path / "arch")  # nothing archived: it never started


@pytest.mark.parametrize("text,message", [
    ("postgress: {dsn_env: X}\n", "unknown key 'postgress'; did you mean 'postgres'?"),
    ("services:\n  identity: {url: 'http://x', helth: /h}\n", "unknown key 'services.identity.helth'; did you mean 'health'?"),
    ("redis: {url: redis://x}\n", "unknown key 'redis.url'; did you mean 'url_env'?"),
    ("services:\n  identity: {logs: {files: x.log, format: yaml}}\n", "'services.identity.logs.format'"),
])
def test_environment_files_are_validated_strictly(tmp_path, text, message):
    p = tmp_path / "env.yaml"
    p.write_text(text)
    proc = run_cli("check-env", str(p))
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_alert_routes_are_validated_strictly_and_the_schemas_are_published(tmp_path):
    p = tmp_path / "routes.yaml"
    p.write_text("routes:\n  - name: q\n    match: {alertname: X}\n    notebook: triage\n    enviroment: production\n")
    proc = run_cli("check-alerts", "--routes", str(p))
    assert proc.returncode == 2 and "unknown key 'routes.0.enviroment'; did you mean 'environment'?" in proc.stderr
    for which, field in (("env", "services"), ("alerts", "routes")):
        out = run_cli("schema", which)
        assert out.returncode == 0 and field in json.loads(out.stdout)["properties"]


# --------------------------------------------------------------------------- compare like with like

def _record(root: Path, incident: str, notebook: str, at: datetime, findings: list[Finding],
            status: str = "ok") -> archive.Record:
    d = root / incident / f"{archive.utc_stamp(at)}-{notebook}"
    d.mkdir(parents=True)
    (d / "findings.json").write_text(json.dumps([f.to_dict() for f in findings]))
    (d / "run.json").write_text(json.dumps({"incident_id": incident, "notebook": notebook, "status": status,
                                            "started_at": at.isoformat()}))
    return archive.load_record(d)


T0 = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
BLOCKER = Finding("pg.blocking", "pid:42", Severity.CRIT, "pid 42 blocks 7 sessions", playbook="Database pressure")
CLEAR = Finding("pg.blocking", "all", Severity.OK, "No session waits on a lock")
ERRORED = Finding("pg.blocking", "postgres.blocking_tree", Severity.ERROR, "postgres blocking_tree: timed out")


@pytest.mark.parametrize("later,change", [([CLEAR], "resolved"), ([ERRORED], "unknown"), ([], "unknown"),
                                          ([BLOCKER], "persisting")])
def test_resolved_only_when_the_later_run_ran_the_check_and_it_came_back_clear(tmp_path, later, change):
    a = _record(tmp_path, "INC", "database_pressure", T0, [BLOCKER])
    b = _record(tmp_path, "INC", "database_pressure", T0 + timedelta(minutes=5), later)
    rows = {r.key: r for r in timeline.compare(a, b).itertuples()}
    assert rows["pg.blocking:pid:42"].change == change
    if later == [ERRORED]:  # the check's own error is new in the later run, and says why the blocker is unknown
        assert rows[ERRORED.key].change == "new" and "errored" in rows["pg.blocking:pid:42"].why
    resolved_at = timeline.finding_timeline([a, b]).iloc[0]["resolved_at"]
    if change == "resolved":
        assert resolved_at == pd.Timestamp(b.started_at)
    else:
        assert pd.isna(resolved_at)


def test_compare_takes_the_incidents_latest_run_of_the_same_notebook_and_refuses_two_notebooks(tmp_path):
    first = _record(tmp_path, "INC", "database_pressure", T0, [BLOCKER])
    _record(tmp_path, "INC", "triage", T0 + timedelta(minutes=2), [Finding("triage.next", "none", Severity.OK, "x")])
    last = _record(tmp_path, "INC", "database_pressure", T0 + timedelta(minutes=4), [CLEAR])
    proc = run_cli("compare", first.run_id, "INC", "--archive", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"-> {last.run_id}" in proc.stdout.splitlines()[0]
    assert any(ln.startswith("resolved") and "pid 42 blocks 7 sessions" in ln for ln in proc.stdout.splitlines())
    refused = run_cli("compare", first.run_id, f"INC/{sorted(p.name for p in (tmp_path / 'INC').iterdir())[1]}",
                      "--archive", str(tmp_path))
    assert refused.returncode == 2 and "compare two runs of one notebook" in refused.stderr
    with pytest.raises(RunbookError):
        timeline.later_run_of(archive.records(tmp_path, "INC"), last)


# --------------------------------------------------------------------------- readable reports

def test_evidence_tables_are_formatted_for_people():
    df = pd.DataFrame({"key": ["bull:emails:*"] * 60, "pattern": ["bull:emails:*"] * 60, "bytes": [25276510208] * 60,
                       "age_s": [4000.0] * 60, "latency_ms": [12.5] * 60, "used_pct": [93.12] * 60,
                       "xid": [9.223372e18] * 60, "query": ["SELECT * FROM t WHERE a = $1 AND b = $2"] * 60,
                       "t": [pd.Timestamp("2026-11-30 03:04:05", tz="UTC")] * 60})
    out = tables.html_table(df)
    assert "23.5 GiB" in out and "67m" in out and "12.5 ms" in out and "93.1%" in out
    assert "9,223,372,000,000,000,000" in out and "e+18" not in out
    assert "2026-11-30 03:04:05 UTC" in out and "$1 AND b = $2" in out
    assert "<th>key</th>" not in out and "not shown: key" in out
    assert out.index("<th>pattern</th>") < out.index("<th>bytes</th>") < out.index("<th>query</th>")
    assert "… and 10 more rows (60 in all)" in out and "tex2jax_ignore mathjax_ignore" in out


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_CONNECT = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed "
                                                               "(scripts/test installs it with apt-get)")
def test_report_is_offline_and_dollar_in_sql_stays_text_in_chromium(own, tmp_path):
    import psycopg

    stop = threading.Event()

    def app() -> None:  # during the sample, a statement pg_stat_statements shows with $1, $2 ... placeholders
        with psycopg.connect(own.postgres.admin_dsn, autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS dollars (a int, b text)")
            i = 0
            while not stop.is_set():
                c.execute("SELECT count(*), pg_sleep(0.02) FROM dollars WHERE a = %s AND b = %s", (i, "x"))
                i += 1
    worker = threading.Thread(target=app, daemon=True)
    worker.start()
    try:
        proc = run_cli("run", "database_pressure", "--incident", "HTML-1", "--archive", str(tmp_path / "arch"), "-p",
                       "sample_seconds=2", env=own.env())
    finally:
        stop.set()
        worker.join(timeout=10)
    assert proc.returncode == 0, proc.stderr
    report = archive.records(tmp_path / "arch", "HTML-1")[0].path / "report.html"
    text = report.read_text()
    sql = re.search(r"WHERE a = \$\d AND b = \$\d", text)
    assert sql and "MathJax" not in text
    assert not re.search(r"""(src|href)=["']https?://""", text)
    _Recorder.seen = []
    with socketserver.TCPServer(("127.0.0.1", 0), _Recorder) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        dom = subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                              f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
                              "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=3000", "--dump-dom",
                              report.as_uri()], capture_output=True, text=True, timeout=120).stdout
        proxy.shutdown()
    assert sql.group(0) in dom  # text, not typeset mathematics
    # nothing the page asked for was fetched from anywhere (Chromium's own time and update checks aside)
    page_requests = [u for u in _Recorder.seen if not re.search(r"(google|googleapis|gstatic)\.com", u)]
    assert "Findings:" in dom and page_requests == [], page_requests


# --------------------------------------------------------------------------- the incident in its own time

def test_notes_and_the_retro_put_the_incident_in_its_own_time(own, tmp_path):
    arch = tmp_path / "arch"
    staged = stage_database_pressure(own.postgres, slow_statements=False)
    try:
        assert run_cli("run", "database_pressure", "--incident", "TL-1", "--archive", str(arch), "-p",
                       "sample_seconds=0.2", env=own.env()).returncode == 0
    finally:
        staged.stop()
    assert run_cli("run", "database_pressure", "--incident", "TL-1", "--archive", str(arch), "-p",
                   "sample_seconds=0.2", env=own.env()).returncode == 0
    note = run_cli("note", "TL-1", "paged the billing team; token=abc123secretvalue", "--at=-45m",
                   "--archive", str(arch))
    assert note.returncode == 0 and "noted for TL-1" in note.stdout
    [n] = archive.read_notes(arch, "TL-1")
    assert "abc123secretvalue" not in n.text and "paged the billing team" in n.text
    events = timeline.incident_events(archive.records(arch, "TL-1"), [n])
    assert events.iloc[0]["kind"] == "note" and events["at"].min() < events[events["kind"] == "run"]["at"].min()
    assert {"run", "finding", "resolved", "note"} <= set(events["kind"])
    retro = run_cli("run", "retro", "--incident", "TL-1", "--archive", str(arch), env=own.env())
    assert retro.returncode == 0, retro.stderr
    draft = (arch / "TL-1" / "retro.md").read_text()
    assert "note: paged the billing team" in draft and "resolved:" in draft
    assert f"from {n.at:%Y-%m-%d %H:%M} UTC" in draft  # the incident starts at its first sign, not the first run
    site = run_cli("archive", "site", str(tmp_path / "site"), "--archive", str(arch))
    assert site.returncode == 0
    page = (tmp_path / "site" / "TL-1" / "index.html").read_text()
    assert "paged the billing team" in page and "retro.html" in page
    html_doc = (tmp_path / "site" / "TL-1" / "retro.html").read_text()
    assert "<h1>Post-incident review (draft): TL-1</h1>" in html_doc and "## Impact" not in html_doc


# --------------------------------------------------------------------------- the demo, as a newcomer runs it

@pytest.mark.slow
def test_demo_starts_with_triage_and_ends_with_the_site_and_a_status_update_that_leads_with_impact(tmp_path):
    proc = run_cli("demo", "--archive", str(tmp_path / "archive"), "--incident", "DEMO-1", "--sample-seconds", "2",
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert out.index("running triage") < out.index("running database_pressure, as triage recommends")
    ranking = out[out.index("Triage ranked what to run next:"):]
    for nb in ("database_pressure", "queue_backlog", "auth_failures", "portal_outage"):
        assert f"Run {nb} next" in ranking
    recs = {r.notebook for r in archive.records(tmp_path / "archive", "DEMO-1")}
    assert recs == {"triage", "database_pressure", "queue_backlog", "auth_failures", "portal_outage"}
    assert (tmp_path / "archive-site" / "DEMO-1" / "index.html").is_file()
    update = out[out.index("# Status update: incident DEMO-1"):]
    impact = update[update.index("## Impact"):update.index("## What we know")]
    assert "Sign-in (identity) is failing" in impact and "The portal (portal)" in impact
    assert "Background jobs on bull:emails are delayed" in impact and "pid" not in impact
    doing = update[update.index("## What we are doing"):]
    assert "SELECT" not in doing and "pg_terminate_backend" not in doing and "Rolling back identity v2.4.0" in doing
    # "Since" is the onset in the evidence (identity's errors began 18 minutes before the demo), not the first run
    since, now = (re.search(p, update) for p in (r"Since (\d\d):(\d\d) UTC", r"\*\d{4}-\d\d-\d\d (\d\d):(\d\d) UTC"))
    assert since and now
    minutes = ((int(now[1]) * 60 + int(now[2])) - (int(since[1]) * 60 + int(since[2]))) % 1440
    assert 15 <= minutes <= 22, update
