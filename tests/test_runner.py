"""``runbook run`` end to end through papermill against the real sandbox, and its refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from runbook_lib import archive
from runbook_lib.archive import sha256_file
from runbook_lib.sandbox import free_port, stage_database_pressure
from tests.helpers import wait_for

RUNBOOK = [sys.executable, "-m", "runbook_lib.cli"]
pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RUNBOOK_PG_DSN", "RUNBOOK_REDIS_URL")}
    full_env.update(env or {})
    return subprocess.run([*RUNBOOK, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def only_record(root: Path, incident: str) -> Path:
    records = archive.list_records(root, incident)
    assert len(records) == 1, records
    return records[0]


def all_archive_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_database_pressure_record_names_the_blocker_and_the_queued_alter_table(sandbox, tmp_path):
    staged = stage_database_pressure(sandbox.postgres, readers=3)
    try:
        proc = run_cli("run", "database_pressure", "--incident", "INC-1042", "--env", "local",
                       "--archive", str(tmp_path), "-p", "sample_seconds=1",
                       env={"RUNBOOK_PG_DSN": sandbox.postgres.monitor_dsn})
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr
    record = only_record(tmp_path, "INC-1042")
    assert record.name.endswith("-database_pressure")
    assert sorted(p.name for p in record.iterdir()) == ["findings.json", "notebook.ipynb", "report.html", "run.json"]

    run = json.loads((record / "run.json").read_text())
    assert run["status"] == "ok" and run["notebook"] == "database_pressure" and run["incident_id"] == "INC-1042"
    for name, digest in run["files"].items():
        assert sha256_file(record / name) == digest
    assert set(run["files"]) == {"findings.json", "notebook.ipynb", "report.html"}

    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    blocker = findings[f"pg.blocking:pid:{staged.pids['blocker']}"]
    assert blocker["severity"] == "crit" and blocker["evidence"]["state"] == "idle in transaction"
    assert "billing-worker" in blocker["title"]
    ddl = findings["pg.ddl_lock_queue:relation:orders"]
    assert ddl["severity"] == "crit" and ddl["evidence"]["ddl_pid"] == staged.pids["ddl"]
    assert "ALTER TABLE orders" in ddl["evidence"]["ddl_query"] and ddl["evidence"]["queued"] == 3
    for f in findings.values():
        assert set(f) >= {"key", "check", "severity", "title", "detail", "action", "evidence"}
        assert f["severity"] in {"ok", "info", "warn", "crit", "error"}

    blob = all_archive_bytes(tmp_path)
    for secret in (sandbox.postgres.monitor_password, sandbox.postgres.admin_password):
        assert secret.encode() not in blob
    nb = nbformat.read(record / "notebook.ipynb", as_version=4)
    assert "postgresql://" not in json.dumps(nb.metadata["papermill"]["parameters"])
    html = (record / "report.html").read_text()
    assert "from runbook_lib import" not in html and "Findings:" in html
    assert str(staged.pids["blocker"]) in proc.stdout and "report:" in proc.stdout


def test_unreachable_postgres_gives_error_findings_and_an_archived_record(tmp_path):
    dsn = f"postgresql://runbook:pw-should-not-leak-123@127.0.0.1:{free_port()}/app"
    proc = run_cli("run", "database_pressure", "--incident", "INC-down", "--archive", str(tmp_path),
                   "-p", "sample_seconds=0.2", env={"RUNBOOK_PG_DSN": dsn})
    assert proc.returncode == 0, proc.stderr
    record = only_record(tmp_path, "INC-down")
    findings = json.loads((record / "findings.json").read_text())
    errors = [f for f in findings if f["severity"] == "error"]
    assert any(f["check"] == "pg.connections" and "unreachable" in f["title"] for f in errors)
    assert json.loads((record / "run.json").read_text())["status"] == "ok"
    assert b"pw-should-not-leak-123" not in all_archive_bytes(tmp_path)


def test_env_file_names_its_own_secret_variable(sandbox, tmp_path):
    env_file = tmp_path / "staging.yaml"
    env_file.write_text("postgres: {dsn_env: STAGING_PG_DSN}\nredis: {url_env: STAGING_REDIS_URL}\n")
    proc = run_cli("run", "database_pressure", "--incident", "INC-envfile", "--env-file", str(env_file),
                   "--archive", str(tmp_path / "arch"), "-p", "sample_seconds=0.2",
                   env={"STAGING_PG_DSN": sandbox.postgres.monitor_dsn})
    assert proc.returncode == 0, proc.stderr
    record = only_record(tmp_path / "arch", "INC-envfile")
    findings = json.loads((record / "findings.json").read_text())
    assert not [f for f in findings if f["severity"] == "error"], findings
    assert sandbox.postgres.monitor_password.encode() not in all_archive_bytes(tmp_path / "arch")


def _custom_notebooks(tmp_path: Path, body: str) -> Path:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "runbook", "display_name": "Python (runbook)", "language": "python"}
    params = new_code_cell('incident_id = "x"\nenvironment = "local"\nwindow_start = "-60m"\nwindow_end = "now"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(
        "from runbook_lib.findings import Finding, Report, Severity\n"
        "report = Report(incident_id)\n"
        "report.add(Finding('test.partial', 'x', Severity.WARN, 'found before the failure'))"),
        new_code_cell(body)]
    nbformat.write(nb, nb_dir / "probe.ipynb")
    return nb_dir


def test_failing_notebook_is_archived_as_failed_with_its_findings_so_far(tmp_path):
    nb_dir = _custom_notebooks(tmp_path, "raise RuntimeError('the source exploded\\nsecond line')")
    proc = run_cli("run", "probe", "--incident", "INC-fail", "--archive", str(tmp_path / "arch"),
                   env={"RUNBOOK_NOTEBOOKS_DIR": str(nb_dir)})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "RuntimeError: the source exploded" in proc.stderr
    record = only_record(tmp_path / "arch", "INC-fail")
    run = json.loads((record / "run.json").read_text())
    assert run["status"] == "failed" and "the source exploded" in run["reason"]
    keys = {f["key"] for f in json.loads((record / "findings.json").read_text())}
    assert {"test.partial:x", "runner:execution"} <= keys
    assert (record / "report.html").stat().st_size > 0


def test_runner_killed_mid_run_leaves_a_record_marked_failed(tmp_path):
    nb_dir = _custom_notebooks(tmp_path, "import time\ntime.sleep(120)")
    root = tmp_path / "arch"
    env = {k: v for k, v in os.environ.items()}
    env["RUNBOOK_NOTEBOOKS_DIR"] = str(nb_dir)
    proc = subprocess.Popen([*RUNBOOK, "run", "probe", "--incident", "INC-kill", "--archive", str(root)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def partial_written() -> bool:  # where the kernel writes them: run.json's findings_source
            for run_json in root.glob("INC-kill/.staging-*/run.json"):
                source = Path(json.loads(run_json.read_text())["findings_source"])
                assert source.is_relative_to(root)  # in the archive, not a temporary directory a reboot clears
                return source.exists() and "test.partial" in source.read_text()
            return False
        wait_for(partial_written, timeout=60, interval=0.2)
        assert archive.list_records(root, "INC-kill") == []  # nothing half-written is visible
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    recovered = archive.recover_interrupted(root)
    assert len(recovered) == 1
    run = json.loads((recovered[0] / "run.json").read_text())
    assert run["status"] == "failed" and "interrupted" in run["reason"]
    assert "test.partial:x" in (recovered[0] / "findings.json").read_text()
    assert not any((root / archive.WARM_DIR).iterdir())  # the killed kernel's directory went into the record
    assert archive.verify(root) == []  # notebook, report and findings all there, hashed


@pytest.mark.parametrize("args, message", [
    (["run", "nope", "--incident", "I1"], "unknown notebook 'nope'"),
    (["run", "database_pressure", "--incident", "../etc"], "not a safe name"),
    (["run", "database_pressure", "--incident", "I1", "-p", "sample_seconds"], "expected KEY=VALUE or KEY VALUE"),
    (["run", "database_pressure", "--incident", "I1", "-p", "sample_seconds=fast"], "not a valid float"),
    (["run", "database_pressure", "--incident", "I1", "-p", "colour=red"], "unknown parameter 'colour'"),
    (["run", "database_pressure", "--incident", "I1", "-p", "window_start=yesterday"], "not ISO 8601"),
    (["run", "database_pressure", "--incident", "I1", "--env", "nowhere"], "unknown environment 'nowhere'"),
    (["run", "database_pressure", "--incident", "I1", "-p", "thresholds={nope: 1}"], "unknown threshold 'nope'"),
    (["run", "database_pressure", "--incident", "I1", "-p", "environment=postgresql://u:hunter22@db/app"],
     "looks like it holds a credential"),
    (["run", "database_pressure"], "Missing option '--incident'"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, args, message):
    kept = tmp_path / "I1" / "20260101T000000Z-database_pressure"
    kept.mkdir(parents=True)
    (kept / "run.json").write_text("{}")
    proc = run_cli(*args, "--archive", str(tmp_path)) if args[0] == "run" and "--incident" in args else run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "hunter22" not in proc.stderr
    assert (kept / "run.json").exists() and [p.name for p in (tmp_path / "I1").iterdir()] == [kept.name]


def test_list_shows_notebooks_parameters_and_environments():
    proc = run_cli("list")
    assert proc.returncode == 0
    assert "database_pressure" in proc.stdout and "sample_seconds (float) = 5.0" in proc.stdout
    assert "environments:" in proc.stdout and "local" in proc.stdout


def test_cell_timeout_archives_a_failed_record(tmp_path):
    nb_dir = _custom_notebooks(tmp_path, "import time\ntime.sleep(60)")
    proc = run_cli("run", "probe", "--incident", "INC-slow", "--archive", str(tmp_path / "arch"), "--cell-timeout", "2",
                   env={"RUNBOOK_NOTEBOOKS_DIR": str(nb_dir)})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    record = only_record(tmp_path / "arch", "INC-slow")
    run = json.loads((record / "run.json").read_text())
    assert run["status"] == "failed" and "timed out" in run["reason"].lower()
    assert "test.partial:x" in (record / "findings.json").read_text()
