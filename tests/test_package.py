"""The package as a new user installs it, outside the checkout: the wheel built from this checkout, installed with
its extras ``[lab,serve,demo]`` into a fresh venv by pip resolving every dependency from the package index (as
``pip install 'runbook-notebooks[lab,serve]'`` would), with no path back to the checkout or the test venv. Then,
from another directory: ``--version``, ``list``, a notebook run into a record, ``runbook demo`` end to end, and
``runbook serve`` turning an alert into a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runbook_lib.sandbox import free_port, stage_database_pressure
from tests.helpers import wait_for
from tests.test_alerts import TOKEN, am

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    """This process's environment without what would point Python at the checkout or the sandbox."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") and k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("package")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600, cwd=work)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = list((work / "dist").glob("runbook_notebooks-*.whl"))
    venv = work / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True,
                   timeout=120, env=_clean_env())
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                f"{wheel}[lab,serve,demo]"], capture_output=True, text=True, timeout=900,
                               env=_clean_env(), cwd=work)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _runbook(venv: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "runbook"), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**_clean_env(), **(env or {})})


def test_the_installed_wheel_carries_notebooks_and_params(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import runbook_lib; print(runbook_lib.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60, env=_clean_env())
    assert where.stdout.startswith(str(installed)), where.stdout  # the wheel's copy, not the checkout's
    assert _runbook(installed, "--version", cwd=tmp_path).stdout.strip() == "runbook 0.1.0"
    listed = json.loads(_runbook(installed, "list", "--json", cwd=tmp_path).stdout)
    names = {nb["name"] for nb in listed["notebooks"]}
    assert {"triage", "database_pressure", "queue_backlog", "auth_failures", "portal_outage"} <= names
    assert {"local", "example"} <= set(listed["environments"])


def test_the_installed_wheel_runs_a_notebook_into_a_record_from_any_directory(installed, sandbox, tmp_path):
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        proc = _runbook(installed, "run", "database_pressure", "--incident", "PKG-1", "-p", "sample_seconds=0.2",
                        "--archive", str(tmp_path / "arch"), "--json", cwd=tmp_path, env=sandbox.env())
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "ok" and out["worst"] == "crit" and out["record"].startswith(str(tmp_path / "arch"))
    blockers = [f for f in out["findings"] if f["check"] == "pg.blocking" and f["severity"] == "crit"]
    assert [f["subject"] for f in blockers] == [f"pid:{staged.pids['blocker']}"]  # through the wheel's local.yaml


def test_the_installed_package_has_its_own_dependencies_and_no_path_to_the_checkout(installed, tmp_path):
    probe = ("import sys, runbook_lib, pandas, jupyterlab, uvicorn, bullmq; "
             "print('\\n'.join([runbook_lib.__file__, pandas.__file__, *sys.path]))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, env=_clean_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(installed)) and lines[1].startswith(str(installed))
    assert not any(p.startswith(str(ROOT)) or p.startswith(sys.prefix) for p in lines[2:] if p)


def test_runbook_demo_from_the_installed_package_in_any_directory(installed, tmp_path):
    proc = _runbook(installed, "demo", "--archive", str(tmp_path / "arch"), "--sample-seconds", "1", cwd=tmp_path,
                    env={"NO_COLOR": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Triage ranked what to run next:" in proc.stdout and "# Status update: incident demo-" in proc.stdout
    verified = _runbook(installed, "archive", "verify", "--archive", str(tmp_path / "arch"), "--json", cwd=tmp_path)
    assert json.loads(verified.stdout)["intact"] is True and json.loads(verified.stdout)["records"] >= 4
    assert (tmp_path / "arch-site" / "index.html").exists()


def test_runbook_serve_from_the_installed_package_turns_an_alert_into_a_record(installed, sandbox, tmp_path):
    port, arch = free_port(), tmp_path / "arch"
    env = {**_clean_env(), **sandbox.env(), "RUNBOOK_WEBHOOK_TOKEN": TOKEN}
    server = subprocess.Popen([str(installed / "bin" / "runbook"), "serve", "--port", str(port), "--archive",
                               str(arch), "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}/healthz"), timeout=60, interval=0.3)
        reply = httpx.post(f"http://127.0.0.1:{port}/alerts", content=am("fp-pkg", alertname="PostgresLocks"),
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert reply.status_code == 202, reply.text
        done = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["done"] or None,
                        timeout=180, interval=0.5)
        assert done == 1
    finally:
        staged.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    [record] = [p for p in (arch / "alert-fp-pkg").iterdir() if p.is_dir()]  # the route's default incident
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert findings[f"pg.blocking:pid:{staged.pids['blocker']}"]["severity"] == "crit"
    assert json.loads((record / "run.json").read_text())["alert"]["fingerprint"] == "fp-pkg"


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
