"""The notebook as a responder drives it in JupyterLab: cells re-run one at a time, out of order, the start cell again.

Report semantics are checked on the report itself; what needs a kernel (the one-line hint, the start cell re-run, the
summary that keeps updating) runs in a real ``runbook`` kernel against the sandbox Postgres.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from runbook_lib.findings import Finding, Report, Severity
from runbook_lib.hints import HINT
from runbook_lib.kernel import KERNEL_NAME, ensure_kernelspec
from runbook_lib.sandbox import stage_database_pressure
from tests.helpers import wait_for, waiting_on_lock


def crit(check: str, subject: str) -> Finding:
    return Finding(check, subject, Severity.CRIT, f"{check} {subject} is bad", action="fix it")


def ok(check: str) -> Finding:
    return Finding(check, "all", Severity.OK, f"{check}: nothing wrong")


# --------------------------------------------------------------------------- the report

def test_rerunning_a_check_replaces_all_its_findings_and_says_what_resolved():
    report = Report()
    report.add([crit("pg.blocking", "root:9342"), crit("pg.blocking", "root:9400")])
    report.add(ok("pg.connections"))
    report.add([ok("pg.blocking")])  # the blocker was terminated, the cell re-run: its subjects are gone
    assert [f.key for f in report.findings if f.check == "pg.blocking"] == ["pg.blocking:all"]
    assert report.worst() is Severity.OK
    change = report.changes["pg.blocking"]
    assert set(change.resolved) == {"pg.blocking root:9342 is bad", "pg.blocking root:9400 is bad"}
    assert change.new == () and change.persisting == ()
    assert report.evaluated_at("pg.connections") < report.evaluated_at("pg.blocking")
    html = report._repr_html_()
    assert "resolved" in html and "root:9342" in html and f"{report.evaluated_at('pg.blocking'):%H:%M:%S}" in html
    assert "Nothing to act on" in html


def test_a_check_that_failed_on_rerun_makes_its_old_findings_unknown_not_resolved():
    report = Report()
    report.add(crit("pg.blocking", "root:1"))
    report.add(Finding("pg.blocking", "error", Severity.ERROR, "Could not read pg_locks", action="retry"))
    change = report.changes["pg.blocking"]
    assert change.resolved == () and change.unknown == ("pg.blocking root:1 is bad",)
    assert "unknown" in report._repr_html_() and "resolved</b>" not in report._repr_html_()


def test_a_secondary_check_reported_beside_a_rule_leaves_when_the_rule_reruns_without_it():
    report = Report()
    report.add([ok("pg.replication"), crit("pg.replication_slots", "slot:orphan")])
    report.add([crit("pg.connections", "server")])
    report.add([ok("pg.replication")])  # the slot was dropped; the rule reports only its ok now
    assert {f.check for f in report.findings} == {"pg.replication", "pg.connections"}
    assert report.changes["pg.replication, pg.replication_slots"].resolved == ("pg.replication_slots slot:orphan is bad",)


def test_persisting_and_new_findings_are_told_apart():
    report = Report()
    report.add([crit("queue.backlog", "bull:emails"), ok("queue.selection")])
    report.add([crit("queue.backlog", "bull:emails"), crit("queue.backlog", "bull:sms"), ok("queue.selection")])
    change = report.changes["queue.backlog, queue.selection"]
    assert change.persisting == ("queue.backlog bull:emails is bad",) and change.new == ("queue.backlog bull:sms is bad",)
    assert len([f for f in report.findings if f.severity is Severity.CRIT]) == 2


def test_an_empty_evaluation_changes_nothing():
    report = Report()
    report.add(crit("pg.blocking", "root:1"))
    report.add([], None)
    assert [f.key for f in report.findings] == ["pg.blocking:root:1"] and report.changes == {}


# --------------------------------------------------------------------------- in a real kernel

class Kernel:
    """A ``runbook`` kernel (the spec JupyterLab starts) driven cell by cell, as a responder does."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        ensure_kernelspec()
        self.km = KernelManager(kernel_name=KERNEL_NAME)
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str) -> tuple[str, list[dict[str, Any]]]:
        """Execute one cell; its status and the messages it produced on IOPub."""
        msgs: list[dict[str, Any]] = []
        reply = self.kc.execute_interactive(code, output_hook=msgs.append, timeout=120)
        return reply["content"]["status"], msgs

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel(sandbox) -> Iterator[Kernel]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    k = Kernel({**env, **sandbox.env()})
    yield k
    k.close()


START = ('from runbook_lib import incident\n'
         'from runbook_lib.rules import postgres as rules\n'
         'from runbook_lib.sources import postgres\n'
         'inc = incident.start("cockpit", "local", "-10m", "now", {}, notebook="database_pressure")\n'
         'th, report, db = inc.thresholds, inc.report, inc.postgres()\n'
         'conns = postgres.connection_saturation(db)')
BLOCKING = 'tree = postgres.blocking_tree(db)\nreport.add(rules.blocking(tree, th))'


def diagnostic_sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook-diagnostics'"
                         ).fetchone()[0]


def test_a_cell_run_before_the_start_cell_fails_with_one_line_saying_what_to_run(kernel):
    status, msgs = kernel.run(BLOCKING)
    [error] = [m["content"] for m in msgs if m["msg_type"] == "error"]
    assert status == "error" and error["ename"] == "NameError"
    assert error["traceback"] == [HINT.format(name="postgres")]  # one line, no traceback under stale outputs
    assert "run the cells above this one first" in error["traceback"][0]


def test_a_kernel_the_runner_starts_has_its_preload_and_the_out_of_order_hint(tmp_path):
    """The runner's kernels (runbook run, the alert executors) add a preload to the kernel spec's start-up line;
    both must take effect (a second exec_lines option once turned both into inert strings)."""
    import nbformat
    from nbclient import NotebookClient

    from runbook_lib import runner

    warm = runner.warm_kernel(tmp_path / "arch")
    probe = ("import sys\nprint(sorted(m for m in sys.modules if m in ('pandas', 'runbook_lib.charts', "
             "'runbook_lib.incident')))\ninc.report")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)])
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (runbook)", "language": "python"}
    try:
        NotebookClient(nb, km=warm.km, timeout=60, allow_errors=True).execute()
    finally:
        runner.discard_warm(warm)
    printed, error = nb.cells[0].outputs
    assert printed["text"].strip() == "['pandas', 'runbook_lib.charts', 'runbook_lib.incident']"
    assert error["ename"] == "NameError" and error["traceback"] == [HINT.format(name="inc")]


def test_rerunning_the_start_cell_leaves_one_diagnostic_session_and_the_summary_keeps_updating(kernel, sandbox,
                                                                                              sessions):
    admin = sandbox.postgres.admin_dsn
    for attempt in range(3):  # the responder re-runs the start cell (the issue saw 0 -> 2 -> 3 -> 4 sessions)
        status, _ = kernel.run(START)
        assert status == "ok"
        assert wait_for(lambda: diagnostic_sessions(admin) == 1)
        if attempt == 0:
            status, msgs = kernel.run("report.summary()")
            [shown] = [m for m in msgs if m["msg_type"] == "display_data"]
            display_id = shown["content"]["transient"]["display_id"]
    status, msgs = kernel.run(BLOCKING)  # the check reports into the new report: the summary on screen follows
    assert status == "ok"
    updates = [m["content"] for m in msgs if m["msg_type"] == "update_display_data"]
    assert updates and updates[-1]["transient"]["display_id"] == display_id
    assert "No session is waiting on a lock" in updates[-1]["data"]["text/html"]
    for _ in range(3):
        sessions.open("cockpit-app")
    status, msgs = kernel.run("conns = postgres.connection_saturation(db)\n"
                              "print(conns.groupby('application_name')['sessions'].sum().to_dict())")
    assert status == "ok"  # the applications' sessions are counted, the tool's own session is not
    counted = ast.literal_eval("".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream"))
    assert counted.get("cockpit-app") == 3 and "runbook-diagnostics" not in counted
    assert diagnostic_sessions(admin) == 1
    kernel.run("inc.close()")
    assert wait_for(lambda: diagnostic_sessions(admin) == 0)


def test_terminated_blocker_leaves_the_summary_when_only_its_section_is_rerun(kernel, sandbox):
    staged = stage_database_pressure(sandbox.postgres, slow_statements=False)
    try:
        blocker = staged.pids["blocker"]
        assert kernel.run(START)[0] == "ok"
        kernel.run("report.summary()")
        status, msgs = kernel.run(BLOCKING)
        assert status == "ok"
        html = [m["content"] for m in msgs if m["msg_type"] == "update_display_data"][-1]["data"]["text/html"]
        assert f"pid {blocker}" in html and "CRIT" in html
        with psycopg.connect(sandbox.postgres.admin_dsn, autocommit=True) as c:  # the responder acts
            c.execute("SELECT pg_terminate_backend(%s)", (blocker,))
        wait_for(lambda: not waiting_on_lock(sandbox.postgres.admin_dsn, staged.pids["ddl"]))
        status, msgs = kernel.run(BLOCKING)  # only this section is re-run
        html = [m["content"] for m in msgs if m["msg_type"] == "update_display_data"][-1]["data"]["text/html"]
    finally:
        staged.stop()
    assert f"pid {blocker}" in html.split("Since each check")[1].split("</details>")[0]  # named as resolved
    assert "<b>resolved</b>" in html and "Nothing to act on" in html and "CRIT" not in html


def test_the_summary_says_a_sample_is_running_and_until_when_then_drops_the_line(kernel):
    assert kernel.run(START)[0] == "ok"
    kernel.run("report.summary()")
    status, msgs = kernel.run('import time\nwith report.sampling("Wait events", 1.0):\n    time.sleep(1.0)')
    assert status == "ok"
    shown = [m["content"]["data"]["text/html"] for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(shown) == 2
    assert "Wait events: sampling for 1 s, until about" in shown[0] and "sampling for" not in shown[1]


# --------------------------------------------------------------------------- live views

@pytest.fixture
def local_env(sandbox, monkeypatch):
    from runbook_lib.config import load_environment

    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    return load_environment("local")


def test_a_live_view_shows_a_terminated_blocker_resolved_and_holds_no_session_between_refreshes(sandbox, local_env):
    from runbook_lib.findings import Thresholds
    from runbook_lib.live import LiveView

    admin = sandbox.postgres.admin_dsn
    staged = stage_database_pressure(sandbox.postgres, slow_statements=False)
    try:
        blocker = staged.pids["blocker"]
        view = LiveView(local_env, Thresholds(), ["blocking", "lock_queue"])
        first = view.refresh()
        assert first.findings[f"pg.blocking:pid:{blocker}"].severity is Severity.CRIT
        assert diagnostic_sessions(admin) == 0  # the refresh closed its session
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (blocker,))
        wait_for(lambda: not waiting_on_lock(admin, staged.pids["ddl"]))
        view.refresh()
    finally:
        staged.stop()
    change = view.change()
    assert any(f"pid {blocker}" in t for t in change.resolved) and not change.new
    html = view._repr_html_()
    assert "resolved" in html and f"pid {blocker}" in html and "Nothing to act on in these panels" in html
    assert diagnostic_sessions(admin) == 0


def test_a_live_view_refreshes_in_the_background_and_stops_at_its_bound(sandbox, local_env):
    from runbook_lib.findings import Thresholds
    from runbook_lib.live import LiveView

    view = LiveView(local_env, Thresholds(), ["connections"], every_s=1, for_s=2.5).start()
    view.wait(timeout=30)
    assert view.stopped.startswith("stopped after 2 s") or view.stopped.startswith("stopped after 3 s")
    assert 2 <= view.refreshes <= 3
    assert view.last.findings["pg.connections:all"].severity is Severity.OK
    assert diagnostic_sessions(sandbox.postgres.admin_dsn) == 0


def test_a_live_queue_view_shows_the_backlog_change_rq_itself_counts(rd, monkeypatch, sandbox):
    import redis
    from rq import Queue

    from runbook_lib.config import load_environment
    from runbook_lib.findings import Thresholds
    from runbook_lib.live import LiveView

    monkeypatch.setenv("RUNBOOK_PG_DSN", sandbox.postgres.monitor_dsn)
    monkeypatch.setenv("RUNBOOK_REDIS_URL", rd.url)
    q = Queue("reports", connection=redis.Redis.from_url(rd.url))
    for i in range(5):
        q.enqueue("builtins.print", i)
    view = LiveView(load_environment("local"), Thresholds(), ["queues"])
    view.refresh()
    for i in range(7):
        q.enqueue("builtins.print", i)
    view.refresh()
    frame = view.last.frames["queues"]
    row = frame[(frame["system"] == "rq") & (frame["queue"] == "reports")].iloc[0]
    assert row["backlog"] == len(q) == 12  # rq's own count
    html = view._repr_html_()
    assert "backlog_change" in html and "<td>7</td>" in html


def test_live_panels_are_checked_and_bounded(local_env):
    from runbook_lib.errors import RunbookError
    from runbook_lib.findings import Thresholds
    from runbook_lib.live import MAX_SECONDS, LiveView

    with pytest.raises(RunbookError, match="unknown live panel nope: choose from connections"):
        LiveView(local_env, Thresholds(), ["nope"])
    view = LiveView(local_env, Thresholds(), ["blocking"], every_s=0.01, for_s=10**9)
    assert (view.every_s, view.for_s) == (1.0, MAX_SECONDS)


# --------------------------------------------------------------------------- runbook lab working copies

def test_working_copies_carry_the_incident_and_are_kept_on_a_second_open(tmp_path, monkeypatch):
    import nbformat

    from runbook_lib import lab
    from runbook_lib.config import project_dir

    monkeypatch.setenv(lab.LAB_DIR_ENV, str(tmp_path))
    ws = lab.open_workspace("INC-7", "local")
    names = sorted(p.stem for p in project_dir("notebooks").glob("*.ipynb"))
    assert ws.directory == tmp_path / "INC-7" and sorted(ws.created) == names and ws.kept == ()
    nb = nbformat.read(ws.directory / "database_pressure.ipynb", as_version=4)
    [injected] = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'incident_id = "INC-7"' in injected.source and 'environment = "local"' in injected.source
    assert "window_start" not in injected.source  # the window stays relative: a re-run looks at now
    assert all("papermill" not in c.metadata for c in nb.cells)
    nb.cells[0].source = "my notes"  # the responder's work
    nbformat.write(nb, ws.directory / "database_pressure.ipynb")
    again = lab.open_workspace("INC-7", "local")
    assert again.created == () and sorted(again.kept) == names
    assert nbformat.read(ws.directory / "database_pressure.ipynb", as_version=4).cells[0].source == "my notes"


@pytest.mark.parametrize("args, message", [
    (["--incident", "../etc"], "incident id"),
    (["--incident", "INC-8", "--env", "nowhere"], "nowhere"),
])
def test_runbook_lab_refuses_bad_input_in_one_line_before_writing_anything(tmp_path, args, message):
    import subprocess
    import sys

    env = {**os.environ, "RUNBOOK_LAB_DIR": str(tmp_path / "lab")}
    done = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "lab", *args], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lab").exists() or not any((tmp_path / "lab").rglob("*.ipynb"))
