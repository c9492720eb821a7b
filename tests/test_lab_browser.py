"""``runbook lab`` driven in a real browser (Playwright on the system Chromium) as a responder works an incident.

Open the incident's working copy of ``database_pressure``, Run All, see the blocker; terminate it, watch the live view
settle, re-run only its section and see the summary drop it (with the time); re-run the start cell and leave no diagnostic session behind;
save and archive what is on screen, and verify the record. The tracked notebooks are never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runbook_lib import archive
from runbook_lib.config import project_dir
from runbook_lib.sandbox import free_port, stage_database_pressure
from tests.helpers import wait_for, waiting_on_lock

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INCIDENT = "INC-lab-1"


def tracked_notebooks() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in project_dir("notebooks").glob("*.ipynb")}


@pytest.fixture
def lab(sandbox, tmp_path) -> Iterator[dict[str, Any]]:
    """``runbook lab --incident`` on the sandbox, its settings private to the test (cells always in the DOM)."""
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "JPY_"))}
    env.update(sandbox.env(), RUNBOOK_LAB_DIR=str(tmp_path / "lab"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    root = tmp_path / "archive"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.cli", "lab", "--incident", INCIDENT, "--env", "local", "--archive",
         str(root), "--", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None and pytest.fail(proc.stdout.read())
    wait_for(up, timeout=90, interval=0.5)
    yield {"url": url, "token": token, "root": root, "dir": tmp_path / "lab" / INCIDENT, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def diagnostic_sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook-diagnostics'"
                         ).fetchone()[0]


class Notebook:
    """One notebook open in JupyterLab, driven through its menus, keyboard and DOM."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def cell(self, text: str) -> Any:
        return self.page.locator(".jp-Notebook .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea", has_text=text)).first

    def output(self, text: str) -> str:
        return self.cell(text).locator(".jp-OutputArea").text_content() or ""  # collapsed <details> too

    def menu(self, top: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text=item).first.click()

    def run_cell(self, text: str) -> None:
        """Select the cell (its prompt, not its editor) and run it with Shift+Enter, as a responder does."""
        count = self.execution_count(text)
        self.cell(text).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Shift+Enter")
        wait_for(lambda: self.execution_count(text) not in (count, None), timeout=120, interval=0.2)

    def execution_count(self, text: str) -> int | None:
        prompt = self.cell(text).locator(".jp-InputPrompt").inner_text().strip()  # "[12]:", "[*]:", "[ ]:"
        return int(prompt[1:-2]) if prompt[1:-2].isdigit() else None

    def wait_idle(self) -> None:
        wait_for(lambda: not self.page.locator(".jp-InputPrompt", has_text="[*]").count(), timeout=180, interval=0.3)


@pytest.mark.skipif(CHROMIUM is None, reason="needs the system Chromium (apt-get install chromium)")
def test_a_responder_works_an_incident_in_jupyterlab_and_archives_what_they_saw(lab, sandbox):
    from playwright.sync_api import sync_playwright

    before = tracked_notebooks()
    admin = sandbox.postgres.admin_dsn
    staged = stage_database_pressure(sandbox.postgres, slow_statements=False)
    blocker = staged.pids["blocker"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab['url']}/lab/tree/database_pressure.ipynb?token={lab['token']}")
            nb = Notebook(page)
            page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
            wait_for(lambda: "Idle" in page.locator(".jp-mod-kernel-status, #jp-main-statusbar").first.inner_text(),
                     timeout=90, interval=0.5)
            # the copy carries this incident's parameters, injected the way a papermill run's are
            assert f'incident_id = "{INCIDENT}"' in page.locator(".jp-Notebook").inner_text()

            nb.menu("Run", "Run All Cells")
            wait_for(lambda: "Not archived yet" in nb.output("inc.archive()"), timeout=180, interval=0.5)
            summary = nb.output("report.summary()")
            assert f"pid {blocker}" in summary and "CRIT" in summary and "as of" in summary

            with psycopg.connect(admin, autocommit=True) as c:  # the responder acts on the finding
                c.execute("SELECT pg_terminate_backend(%s)", (blocker,))
            wait_for(lambda: not waiting_on_lock(admin, staged.pids["ddl"]))
            # the live view Run All started sees it settle on its own
            wait_for(lambda: f"pid {blocker}" in nb.output("inc.watch(").partition("Since the view started")[2]
                     and "resolved" in nb.output("inc.watch("), timeout=30, interval=0.5)
            assert "Nothing to act on in these panels" in nb.output("inc.watch(")
            nb.run_cell("tree = postgres.blocking_tree(db)")  # only the "Who is blocking whom" section
            summary = nb.output("report.summary()")
            resolved = summary.split("Since each check's previous run")[1]
            assert "resolved" in resolved and f"pid {blocker}" in resolved
            assert "No session is waiting on a lock" in summary
            assert f"pid {blocker} blocks" not in summary.split("Since each check's previous run")[0]

            for _ in range(2):  # the start cell is re-runnable: one diagnostic session, whatever the count of runs
                nb.run_cell("inc = incident.start(")
                nb.run_cell("conns = postgres.connection_saturation(db)")
                assert wait_for(lambda: diagnostic_sessions(admin) == 1)
                assert "CRIT" not in nb.output("report.summary()")  # the summary on screen follows the new report
            nb.run_cell("tree = postgres.blocking_tree(db)")
            assert "No session is waiting on a lock" in nb.output("report.summary()")

            nb.cell("inc.watch(").locator("button", has_text="Stop").click()
            wait_for(lambda: "stopped by the responder" in nb.output("inc.watch("), timeout=15, interval=0.3)
            page.keyboard.press("Control+s")
            wait_for(lambda: not page.locator(".jp-mod-dirty").count(), timeout=30, interval=0.2)
            nb.run_cell("inc.archive()")
            archived = nb.output("inc.archive()")
            assert "Archived as a record of incident" in archived, archived
            browser.close()
    finally:
        staged.stop()

    [record] = archive.list_records(lab["root"], INCIDENT)
    run = json.loads((record / "run.json").read_text())
    assert (run["mode"], run["status"], run["notebook"]) == ("interactive", "ok", "database_pressure")
    assert run["parameters"]["incident_id"] == INCIDENT
    findings = json.loads((record / "findings.json").read_text())
    assert any(f["check"] == "pg.blocking" and f["severity"] == "ok" for f in findings)
    assert not any(f["check"] == "pg.blocking" and f["severity"] == "crit" for f in findings)
    rendered = (record / "report.html").read_text()
    assert "No session is waiting on a lock" in rendered
    assert "Live: Connections" in rendered and "stopped by the responder" in rendered  # the live view's last picture
    verify = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "archive", "verify", "--archive",
                             str(lab["root"])], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "1 records checked, all intact" in verify.stdout, verify.stdout + verify.stderr
    assert tracked_notebooks() == before  # JupyterLab saved into the working copy, never into notebooks/
    assert (lab["dir"] / "database_pressure.ipynb").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="needs the system Chromium (apt-get install chromium)")
def test_the_lab_terminal_finds_the_runbook_command_and_every_notebook_has_a_working_copy(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{lab['url']}/lab?token={lab['token']}")
        page.locator(".jp-LauncherCard", has_text="Terminal").first.click()  # File > New > Terminal, as a person
        page.locator(".xterm-screen").first.wait_for(timeout=60_000)
        page.locator(".xterm-screen").first.click()
        found = lab["dir"].parent / "found.txt"  # xterm draws on a canvas: the shell writes what it finds to a file
        page.keyboard.type(f"command -v runbook > {found}\n")
        wait_for(lambda: found.is_file() and found.read_text().strip(), timeout=30, interval=0.3)
        browser.close()
    assert found.read_text().strip() == str(Path(sys.executable).parent / "runbook")
    copies = sorted(p.stem for p in lab["dir"].glob("*.ipynb"))
    assert copies == sorted(p.stem for p in project_dir("notebooks").glob("*.ipynb"))
