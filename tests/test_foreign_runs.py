"""A notebook executed by papermill alone, as Airflow's PapermillOperator executes it, made into a full record by
``runbook record``: findings, report, scrubbing, hashes that ``archive verify`` accepts, ``mode: recorded``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runbook_lib import archive
from runbook_lib.kernel import KERNEL_NAME
from runbook_lib.sandbox import stage_database_pressure
from tests.test_runner import only_record, run_cli

PAPERMILL = [os.path.join(os.path.dirname(sys.executable), "papermill")]
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "database_pressure.ipynb"


def papermill(out: Path, env: dict[str, str], *params: str) -> subprocess.CompletedProcess[str]:
    """papermill's own CLI, with the kernel and parameters a DAG would give it."""
    args = [a for p in params for a in ("-p", *p.split("=", 1))]
    return subprocess.run([*PAPERMILL, str(NOTEBOOK), str(out), "-k", KERNEL_NAME, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_a_papermill_run_becomes_a_record_that_verifies(sandbox, tmp_path):
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        ran = papermill(tmp_path / "out.ipynb", sandbox.env(), "incident_id=PM-1", "sample_seconds=0.2")
    finally:
        staged.stop()
    assert ran.returncode == 0, ran.stderr[-2000:]
    proc = run_cli("record", str(tmp_path / "out.ipynb"), "--archive", str(tmp_path / "arch"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "database_pressure for incident PM-1: run completed"
    assert lines[2].startswith("Verdict: CRITICAL")
    record = only_record(tmp_path / "arch", "PM-1")
    run = json.loads((record / "run.json").read_text())
    assert run["mode"] == "recorded" and run["command"] == "runbook record out.ipynb" and run["status"] == "ok"
    assert run["parameters"]["incident_id"] == "PM-1" and run["parameters"]["sample_seconds"] == 0.2
    assert run["parameters"]["environment"] == "local"  # the notebook's declared default, not injected
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert findings[f"pg.blocking:pid:{staged.pids['blocker']}"]["severity"] == "crit"
    assert (record / "report.html").stat().st_size > 10_000
    verified = run_cli("archive", "verify", "--archive", str(tmp_path / "arch"))
    assert verified.returncode == 0 and "1 records checked, all intact" in verified.stdout, verified.stdout
    stored = b"".join(p.read_bytes() for p in record.rglob("*") if p.is_file())
    assert sandbox.postgres.monitor_password.encode() not in stored and b"pg.blocking" in stored


def test_a_run_that_stopped_on_an_error_is_a_failed_record_with_what_it_found(sandbox, tmp_path):
    ran = papermill(tmp_path / "out.ipynb", sandbox.env(), "incident_id=PM-2", "sample_seconds=soon")
    assert ran.returncode != 0 and (tmp_path / "out.ipynb").exists()  # papermill keeps the executed notebook
    proc = run_cli("record", str(tmp_path / "out.ipynb"), "--archive", str(tmp_path / "arch"))
    assert proc.returncode == 1
    record = only_record(tmp_path / "arch", "PM-2")
    run = json.loads((record / "run.json").read_text())
    assert run["status"] == "failed" and run["reason"].startswith("TypeError: ")  # sample_seconds="soon"
    checks = {f["check"] for f in json.loads((record / "findings.json").read_text())}
    assert {"pg.connections", "pg.blocking"} <= checks  # made before the cell that failed


def test_a_notebook_without_findings_is_refused_in_one_line(tmp_path):
    proc = run_cli("record", str(NOTEBOOK), "--incident", "PM-3", "--archive", str(tmp_path / "arch"))
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert "holds no runbook findings" in line
    assert not archive.list_records(tmp_path / "arch")
    missing = run_cli("record", str(tmp_path / "nope.ipynb"), "--archive", str(tmp_path / "arch"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_papermill_with_the_runbook_engine_records_in_one_step(sandbox, tmp_path):
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        ran = subprocess.run([*PAPERMILL, "--engine", "runbook", str(NOTEBOOK), str(tmp_path / "out.ipynb"), "-k",
                              KERNEL_NAME, "-p", "incident_id", "PM-4", "-p", "sample_seconds", "0.2"],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, **sandbox.env(), "RUNBOOK_ARCHIVE": str(tmp_path / "arch")})
    finally:
        staged.stop()
    assert ran.returncode == 0, ran.stderr[-2000:]
    record = only_record(tmp_path / "arch", "PM-4")
    assert f"runbook: recorded {record} (ok)" in ran.stderr
    run = json.loads((record / "run.json").read_text())
    assert run["mode"] == "recorded" and run["command"] == "papermill --engine runbook"
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert findings[f"pg.blocking:pid:{staged.pids['blocker']}"]["severity"] == "crit"
    assert (tmp_path / "out.ipynb").exists()  # papermill still writes its output as it always does
    assert run_cli("archive", "verify", "--archive", str(tmp_path / "arch")).returncode == 0
