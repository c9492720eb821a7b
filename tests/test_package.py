"""The wheel alone, outside the checkout: it carries the notebooks and default params, and runs a notebook into a
record from any directory. The wheel is built from this checkout and installed with ``--no-deps`` in a fresh venv
that borrows the dependencies from the test venv through a ``.pth`` path (so the package is the wheel's copy, not
the checkout's, and nothing is downloaded but the build backend)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib.sandbox import stage_database_pressure

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
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], capture_output=True, text=True, check=True,
                                  env=_clean_env()).stdout.strip())
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   timeout=300, capture_output=True, env=_clean_env())
    (purelib / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # after: pip would see
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
