"""The shipped DAG in a real Airflow (3.x, its own virtualenv, SQLite metadata, ``airflow dags test``): the Papermill
provider's PapermillOperator runs database_pressure against the sandbox and ``runbook record`` seals it into a record
that ``archive verify`` accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.sandbox import stage_database_pressure
from tests.test_runner import only_record, run_cli

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("RUNBOOK_AIRFLOW_VENV", "/var/tmp/runbook-airflow"))


@pytest.fixture
def airflow(tmp_path):
    if not (VENV / "bin" / "airflow").exists():
        pytest.skip(f"no Airflow in {VENV}: scripts/airflow_venv makes it")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "integrations" / "airflow"),
           "RUNBOOK_HOME": str(ROOT), "RUNBOOK_BIN": str(Path(sys.executable).parent / "runbook"),
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"), "RUNBOOK_ARCHIVE": str(tmp_path / "arch"),
           "RUNBOOK_AIRFLOW_WORK": str(tmp_path / "work"), "PYTHONPATH": str(ROOT)}
    migrated = subprocess.run([str(VENV / "bin" / "airflow"), "db", "migrate"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    return env


def test_the_dag_runs_a_notebook_with_papermilloperator_and_records_it(airflow, sandbox, tmp_path):
    conf = {"notebook": "database_pressure", "incident": "AF-1", "parameters": {"sample_seconds": 0.2}}
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        ran = subprocess.run([str(VENV / "bin" / "airflow"), "dags", "test", "runbook_incident", "-c", json.dumps(conf)],
                             env={**airflow, **sandbox.env()}, capture_output=True, text=True, timeout=600)
    finally:
        staged.stop()
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    record = only_record(tmp_path / "arch", "AF-1")
    run = json.loads((record / "run.json").read_text())
    assert run["mode"] == "recorded" and run["status"] == "ok" and run["notebook"] == "database_pressure"
    assert run["parameters"]["sample_seconds"] == 0.2  # a float through Airflow's templating, not "0.2"
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert findings[f"pg.blocking:pid:{staged.pids['blocker']}"]["severity"] == "crit"
    verified = run_cli("archive", "verify", "--archive", str(tmp_path / "arch"))
    assert verified.returncode == 0 and "1 records checked, all intact" in verified.stdout
    stored = b"".join(p.read_bytes() for p in record.rglob("*") if p.is_file())
    assert sandbox.postgres.monitor_password.encode() not in stored
