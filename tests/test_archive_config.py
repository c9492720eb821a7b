"""Archive layout and atomicity, incident-id safety, environment files, time windows, redaction."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from runbook_lib import archive
from runbook_lib.config import load_environment, parse_time, parse_window
from runbook_lib.errors import ConfigError, RunbookError
from runbook_lib.findings import Finding, Report, Severity, Thresholds
from runbook_lib.redact import redact, register_secret

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwicm9sZSI6ImFub24ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "x y", ".hidden", "a" * 129, "inc\n1", "a..b"])
def test_unsafe_incident_ids_are_refused(bad):
    with pytest.raises(RunbookError):
        archive.validate_incident_id(bad)


@pytest.mark.parametrize("good", ["INC-1042", "2026-11-27.db", "pd_Q1W2E3", "a"])
def test_safe_incident_ids_pass(good):
    assert archive.validate_incident_id(good) == good


def test_record_is_invisible_until_finalized_then_hashed_and_never_overwritten(tmp_path):
    st = archive.begin(tmp_path, "INC-7", "database_pressure", {"parameters": {"a": 1}})
    (st.file("notebook.ipynb")).write_text("{}")
    (st.file("findings.json")).write_text("[]")
    (st.file("report.html")).write_text("<html></html>")
    assert archive.list_records(tmp_path) == []
    first = st.finalize(status="ok")
    run = json.loads((first / "run.json").read_text())
    assert run["status"] == "ok" and set(run["files"]) == {"notebook.ipynb", "findings.json", "report.html"}
    assert "runner_pid" not in run
    # a second run started in the same second gets its own directory
    st2 = archive.begin(tmp_path, "INC-7", "database_pressure", {})
    st2.started_at = st.started_at
    second = st2.finalize(status="failed", reason="x")
    assert first != second and first.exists() and archive.list_records(tmp_path, "INC-7") == [first, second]


def test_finalize_scrubs_secret_values_and_url_passwords(tmp_path):
    st = archive.begin(tmp_path, "INC-8", "nb", {})
    st.file("notebook.ipynb").write_text(json.dumps({"out": "dsn postgresql://app:s3cr3t-value@db:5432/x and tok-XYZ-123"}))
    record = st.finalize(status="ok", extra_secrets=["tok-XYZ-123"])
    text = (record / "notebook.ipynb").read_text()
    assert "s3cr3t-value" not in text and "tok-XYZ-123" not in text and "[REDACTED]" in text
    assert json.loads((record / "run.json").read_text())["files_scrubbed"] == 1


def test_environment_file_refuses_inline_secrets(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("postgres: {dsn: 'postgresql://u:pw@db/app'}\n")
    with pytest.raises(ConfigError, match="inline"):
        load_environment(str(p))
    p.write_text("services: {identity: {url: 'https://u:pw@identity'}}\n")
    with pytest.raises(ConfigError, match="password in a URL"):
        load_environment(str(p))
    p.write_text("postgres: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_environment(str(p))


def test_environment_override_variables_win(tmp_path, monkeypatch):
    p = tmp_path / "e.yaml"
    p.write_text("postgres: {dsn_env: MY_DSN}\n")
    monkeypatch.setenv("MY_DSN", "postgresql://a:from-file-var@h/d")
    monkeypatch.delenv("RUNBOOK_PG_DSN", raising=False)
    env = load_environment(str(p))
    assert env.postgres_dsn() == ("postgresql://a:from-file-var@h/d", "$MY_DSN")
    monkeypatch.setenv("RUNBOOK_PG_DSN", "postgresql://a:override@h/d")
    assert env.postgres_dsn()[1] == "$RUNBOOK_PG_DSN"
    monkeypatch.delenv("RUNBOOK_PG_DSN")
    monkeypatch.delenv("MY_DSN")
    dsn, why = env.postgres_dsn()
    assert dsn is None and "MY_DSN" in why and "not set" in why


def test_time_windows():
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    assert parse_time("-90m", now=now) == now - timedelta(minutes=90)
    assert parse_time("now", now=now) == now
    assert parse_time("2026-11-27T10:00:00Z") == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    assert parse_time("2026-11-27T10:00:00").tzinfo is not None
    with pytest.raises(ConfigError):
        parse_time("last tuesday")
    with pytest.raises(ConfigError, match="not before"):
        parse_window("now", "-5m")


def test_thresholds_validate_names_and_types():
    assert Thresholds.from_mapping({"deadlocks_warn": 3}, {"sequence_warn_pct": 50}).deadlocks_warn == 3
    with pytest.raises(ConfigError, match="unknown threshold"):
        Thresholds.from_mapping({"nope": 1})
    with pytest.raises(ConfigError, match="must be a number"):
        Thresholds.from_mapping({"deadlocks_warn": "many"})


def test_redaction_of_tokens_jwts_dsns_and_emails():
    text = (f"Authorization: Bearer abcdefghijklmnop123 jwt={JWT} "
            "dsn=postgresql://svc:Very$ecret@db:5432/app password=hunter2 user jane.doe@example.com apikey=AKIA1234567890")
    out = redact(text)
    for secret in ("abcdefghijklmnop123", JWT, "Very$ecret", "hunter2", "jane.doe@example.com", "AKIA1234567890"):
        assert secret not in out
    register_secret("plain-registered-secret")
    assert "plain-registered-secret" not in redact("value is plain-registered-secret here")


def test_report_ranks_dedupes_and_persists_each_add(tmp_path):
    sink = tmp_path / "findings.json"
    r = Report("INC", sink=sink)
    r.add(Finding("c", "s1", Severity.WARN, "w"))
    assert json.loads(sink.read_text())[0]["key"] == "c:s1"
    r.add([Finding("c", "s2", Severity.OK, "fine"), Finding("c", "s1", Severity.CRIT, "worse")])
    assert [f.severity for f in r.findings] == [Severity.CRIT, Severity.OK]
    assert r.worst() is Severity.CRIT
    assert [d["title"] for d in json.loads(sink.read_text())] == ["worse", "fine"]
    assert "CRIT" in r._repr_html_()


def test_notebook_start_turns_bad_configuration_into_error_findings(tmp_path):
    from runbook_lib import incident
    from runbook_lib.sources import SourceError
    from runbook_lib.sources import postgres as pg

    inc = incident.start("INC-cfg", "no-such-env", "-60m", "now", {"nope": 1}, notebook="database_pressure")
    titles = [f.detail for f in inc.report.findings]
    assert any("unknown environment" in t for t in titles) and any("unknown threshold" in t for t in titles)
    conns = pg.connection_saturation(inc.postgres())
    assert isinstance(conns, SourceError) and conns.kind == "config"
    inc.close()
