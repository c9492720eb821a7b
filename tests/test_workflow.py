"""From the page to the retro: triage, compare, watch, status update, verify, the static site, retro, lab.
Each test here has its own PostgreSQL and Redis so earlier tests' leftovers cannot colour the verdicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from runbook_lib import archive
from runbook_lib.sandbox import Sandbox, free_port, stage_database_pressure
from tests.test_runner import RUNBOOK, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def own():
    sb = Sandbox.start()
    yield sb
    sb.stop()


def findings_of(record: Path) -> dict[str, dict]:
    return {f["key"]: f for f in json.loads((record / "findings.json").read_text())}


def test_triage_recommends_the_matching_notebook_first_and_nothing_when_healthy(own, tmp_path):
    staged = stage_database_pressure(own.postgres, slow_statements=False)
    try:
        proc = run_cli("run", "triage", "--incident", "TRI-1", "--archive", str(tmp_path), "-p",
                       "run_recommended=True", env=own.env())
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr
    recs = {r.notebook: r for r in archive.records(tmp_path, "TRI-1")}
    assert set(recs) == {"triage", "database_pressure"}  # triage ran what it recommended, in the same incident
    assert f"pg.blocking:pid:{staged.pids['blocker']}" in findings_of(recs["database_pressure"].path)
    assert recs["database_pressure"].run_id in (recs["triage"].path / "notebook.ipynb").read_text()
    sick = recs["triage"]
    found = findings_of(sick.path)
    top = sorted((f for f in found.values() if f["check"] == "triage.next"),
                 key=lambda f: ["crit", "warn", "info", "ok"].index(f["severity"]))
    assert top[0]["key"] == "triage.next:database_pressure" and top[0]["severity"] == "crit"
    assert "waiting on locks" in top[0]["title"]
    proc = run_cli("run", "triage", "--incident", "TRI-2", "--archive", str(tmp_path), env=own.env())
    assert proc.returncode == 0, proc.stderr
    healthy = findings_of(archive.records(tmp_path, "TRI-2")[0].path)
    assert [k for k, f in healthy.items() if f["check"] == "triage.next"] == ["triage.next:none"]
    assert healthy["triage.next:none"]["severity"] == "ok"


def test_compare_watch_status_update_and_retro_follow_the_blocker_until_it_is_gone(own, tmp_path):
    arch = str(tmp_path / "arch")
    staged = stage_database_pressure(own.postgres, slow_statements=False)
    blocker = staged.pids["blocker"]
    watch = subprocess.Popen([*RUNBOOK, "watch", "database_pressure", "--incident", "DB-7", "--every", "2s",
                              "--until-clear", "--timeout", "150s", "--archive", arch, "-p", "sample_seconds=0.2"],
                             env={**os.environ, **own.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not archive.list_records(Path(arch), "DB-7") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        staged.stop()  # the blocker is gone: the next round clears
    out, err = watch.communicate(timeout=180)
    assert watch.returncode == 0, err
    assert "clear: the run completed, its checks reported, none is warn, crit or error" in out and "resolved" in out
    recs = archive.records(Path(arch), "DB-7")
    assert len(recs) >= 2
    first, last = recs[0], recs[-1]
    assert f"pg.blocking:pid:{blocker}" in findings_of(first.path)

    cmp_ = run_cli("compare", first.run_id, last.run_id, "--archive", arch)
    assert cmp_.returncode == 0
    assert any(line.startswith("resolved") and "blocks" in line for line in cmp_.stdout.splitlines())

    su = run_cli("status-update", "DB-7", "--archive", arch)
    assert su.returncode == 0 and "# Status update: incident DB-7" in su.stdout
    assert "no active problems in the latest checks" in su.stdout
    assert list((Path(arch) / "DB-7" / "status-updates").glob("*.md"))

    retro = run_cli("run", "retro", "--incident", "DB-7", "--archive", arch, env=own.env())
    assert retro.returncode == 0, retro.stderr
    draft = (Path(arch) / "DB-7" / "retro.md").read_text()
    for section in ("## Impact", "## Timeline (UTC)", "## Root-cause candidates", "## Action items"):
        assert section in draft
    assert f"pid {blocker}" in draft and "resolved:" in draft


def _one_record(tmp_path: Path, incident: str, own: Sandbox) -> Path:
    proc = run_cli("run", "database_pressure", "--incident", incident, "--archive", str(tmp_path), "-p",
                   "sample_seconds=0.2", env=own.env())
    assert proc.returncode == 0, proc.stderr
    return archive.records(tmp_path, incident)[-1].path


def test_verify_catches_one_changed_byte_and_a_missing_file(own, tmp_path):
    altered = _one_record(tmp_path, "V-1", own)
    incomplete = _one_record(tmp_path, "V-2", own)
    assert run_cli("archive", "verify", "--archive", str(tmp_path)).returncode == 0
    report = altered / "report.html"
    data = bytearray(report.read_bytes())
    data[len(data) // 2] ^= 1
    report.write_bytes(bytes(data))
    (incomplete / "findings.json").unlink()
    proc = run_cli("archive", "verify", "--archive", str(tmp_path))
    assert proc.returncode == 1
    assert f"V-1/{altered.name}: report.html was altered" in proc.stdout
    assert f"V-2/{incomplete.name}: findings.json is missing" in proc.stdout
    assert "2 problems" in proc.stdout


def test_prune_is_a_dry_run_unless_told(own, tmp_path):
    rec = _one_record(tmp_path, "OLD-1", own)
    run = json.loads((rec / "run.json").read_text())
    run["started_at"] = "2020-01-01T00:00:00+00:00"
    (rec / "run.json").write_text(json.dumps(run))
    keep = _one_record(tmp_path, "NEW-1", own)
    dry = run_cli("archive", "prune", "--older-than", "30d", "--archive", str(tmp_path))
    assert dry.returncode == 0 and "would delete" in dry.stdout and rec.exists()
    real = run_cli("archive", "prune", "--older-than", "30d", "--yes", "--archive", str(tmp_path))
    assert real.returncode == 0 and not rec.exists() and keep.exists()


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-quic", "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", f"--user-data-dir={Path.cwd() / '.chromium'}",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed "
                                                               "(scripts/test installs it with apt-get)")
def test_archive_site_opens_in_headless_chromium_and_its_links_lead_to_the_reports(own, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = _one_record(tmp_path / "arch", "SITE-1", own)
    proc = run_cli("archive", "site", str(tmp_path / "site"), "--archive", str(tmp_path / "arch"))
    assert proc.returncode == 0
    index = tmp_path / "site" / "index.html"
    dom = _chromium("--dump-dom", index.as_uri()).stdout
    assert "SITE-1/index.html" in dom and ("CRIT" in dom or "OK" in dom)
    incident_page = tmp_path / "site" / "SITE-1" / "index.html"
    dom2 = _chromium("--dump-dom", incident_page.as_uri()).stdout
    href = f"{record.name}/report.html"
    assert href in dom2 and "database_pressure" in dom2
    report_dom = _chromium("--dump-dom", (incident_page.parent / href).as_uri()).stdout
    assert "Database pressure" in report_dom and "Findings:" in report_dom
    shot = tmp_path / "site.png"
    _chromium("--window-size=1200,900", f"--screenshot={shot}", incident_page.as_uri())
    assert shot.stat().st_size > 10_000


def test_runbook_lab_serves_the_incidents_working_copies_with_the_runbook_kernel(tmp_path):
    port, token = free_port(), "test-token-123"
    refused = run_cli("lab", "--incident", "LAB-1", "--", f"--ServerApp.root_dir={Path.cwd() / 'notebooks'}")
    assert refused.returncode == 2 and "opens the incident's working copies" in refused.stderr
    lab = subprocess.Popen([*RUNBOOK, "lab", "--incident", "LAB-1", "--", "--no-browser", f"--port={port}",
                            "--ip=127.0.0.1", f"--IdentityProvider.token={token}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "HOME": str(tmp_path), "RUNBOOK_LAB_DIR": str(tmp_path / "lab")})
    try:
        deadline, listing = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/contents", params={"token": token}, timeout=2)
                if r.status_code == 200:
                    listing = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert listing is not None, "JupyterLab did not start"
        names = {item["name"] for item in listing["content"]}
        assert {"database_pressure.ipynb", "queue_backlog.ipynb", "triage.ipynb", "retro.ipynb"} <= names
        copy = (tmp_path / "lab" / "LAB-1" / "database_pressure.ipynb").read_text()
        assert 'incident_id = \\"LAB-1\\"' in copy  # served from the incident's working copies, parameters filled
        specs = httpx.get(f"http://127.0.0.1:{port}/api/kernelspecs", params={"token": token}, timeout=5).json()
        assert specs["default"] == "runbook" and "runbook" in specs["kernelspecs"]
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
