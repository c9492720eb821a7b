"""The shipped DAG in a real Airflow (3.x, its own virtualenv, SQLite metadata): the Papermill provider's
PapermillOperator runs database_pressure against the sandbox and ``runbook record`` seals it into a record that
``archive verify`` accepts; once under ``airflow dags test``, once as ``runbook serve --airflow`` hands an alert to a
running Airflow (API server, scheduler with the LocalExecutor, DAG processor) through its REST API."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runbook_lib.sandbox import free_port, stage_database_pressure
from tests.helpers import wait_for
from tests.test_alerts import Server, am
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


@pytest.fixture
def running_airflow(airflow, sandbox, tmp_path):
    """A running Airflow: API server (SimpleAuthManager, one admin user), scheduler with the LocalExecutor on the
    SQLite metadata DB, and DAG processor; the task processes get the sandbox's DSNs. Yields (url, password, env)."""
    password, port = secrets.token_urlsafe(24), free_port()
    (tmp_path / "passwords.json").write_text(json.dumps({"runbook": password}))
    url = f"http://127.0.0.1:{port}"
    env = {**airflow, **sandbox.env(), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "runbook:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False", "AIRFLOW__API__BASE_URL": url,
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/", "AIRFLOW__CORE__PARALLELISM": "2"}
    airflow_bin = str(VENV / "bin" / "airflow")
    parsed = subprocess.run([airflow_bin, "dags", "reserialize"], env=env, capture_output=True, text=True, timeout=300)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    procs = [subprocess.Popen(cmd, env=env, stdout=open(tmp_path / f"{cmd[1]}.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
             for cmd in ([airflow_bin, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                         [airflow_bin, "scheduler"], [airflow_bin, "dag-processor"])]
    try:
        wait_for(lambda: _healthy(url), timeout=120, interval=1)
        yield url, password, env
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _api(url: str, password: str) -> httpx.Client:
    token = httpx.post(f"{url}/auth/token", json={"username": "runbook", "password": password}, timeout=10)
    return httpx.Client(base_url=f"{url}/api/v2", timeout=10,
                        headers={"Authorization": f"Bearer {token.json()['access_token']}"})


def test_serve_hands_each_alert_to_airflow_which_runs_and_records_it(running_airflow, sandbox, tmp_path):
    url, password, env = running_airflow
    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - {name: db, match: {alertname: PostgresLocks}, notebook: database_pressure,\n"
        "     parameters: {sample_seconds: 0.2}, incident: 'AFH-{{ labels.cluster }}'}\n"
        "  - {name: not-in-the-dag, match: {alertname: Probe}, notebook: retro}\n")
    login = {"RUNBOOK_AIRFLOW_USERNAME": "runbook", "RUNBOOK_AIRFLOW_PASSWORD": password}
    refused = run_cli("serve", "--port", str(free_port()), "--archive", str(tmp_path / "arch"), "--routes",
                      str(tmp_path / "routes.yaml"), "--airflow", url,
                      env={"RUNBOOK_WEBHOOK_TOKEN": "t" * 40, **login, "RUNBOOK_AIRFLOW_PASSWORD": "wrong"})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"Airflow at {url} refused: HTTP 401" in refused.stderr  # checked before listening, not at the first alert

    staged = stage_database_pressure(sandbox.postgres, readers=2, slow_statements=False)
    server = Server(tmp_path, extra_env={**login, "RUNBOOK_ARCHIVE": env["RUNBOOK_ARCHIVE"]},
                    extra_args=["--airflow", url]).start()
    api = _api(url, password)
    try:
        first = server.post(am("fp-afh", alertname="PostgresLocks", cluster="main"))
        assert first.status_code == 202, first.text
        [job] = first.json()["accepted"]
        again = server.post(am("fp-afh", alertname="PostgresLocks", cluster="main"))
        assert again.json()["duplicates"][0]["duplicate_of"] == job["id"]
        handed = wait_for(lambda: server.done().get(job["id"]), timeout=60, interval=0.5)
        result = handed["result"]
        assert handed["_where"] == "done" and result["handed_off"] == "airflow" and result["created"] is True
        assert result["status"] == "handed_off"  # Airflow holds the run: not a claim that it succeeded
        exposed = httpx.get(server.url + "/metrics", timeout=10).text
        assert "runbook_runs_handed_off_total 1.0" in exposed and "runbook_runs_succeeded_total 0.0" in exposed
        run_path = f"/dags/runbook_incident/dagRuns/{result['dag_run_id']}"
        dag_run = wait_for(lambda: _finished(api.get(run_path).json()), timeout=300, interval=2)
    finally:
        staged.stop()
    assert dag_run["state"] == "success", dag_run
    conf = dict(dag_run["conf"])
    alert = conf.pop("alert")
    assert conf == {"notebook": "database_pressure", "incident": "AFH-main", "environment": "local",
                    "parameters": {"sample_seconds": 0.2}}
    assert (alert["fingerprint"], alert["route"], alert["job_id"]) == ("fp-afh", "db", job["id"])
    runs = api.get("/dags/runbook_incident/dagRuns").json()
    assert runs["total_entries"] == 1  # one alert, one duplicate: one DAG run

    record = only_record(Path(env["RUNBOOK_ARCHIVE"]), "AFH-main")
    run = json.loads((record / "run.json").read_text())
    assert run["mode"] == "recorded" and run["status"] == "ok" and run["parameters"]["sample_seconds"] == 0.2
    assert run["alert"] == alert  # the retro sees which alert made this record, as with a local run
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert findings[f"pg.blocking:pid:{staged.pids['blocker']}"]["severity"] == "crit"
    verified = run_cli("archive", "verify", "--archive", env["RUNBOOK_ARCHIVE"])
    assert verified.returncode == 0 and "1 records checked, all intact" in verified.stdout

    refused_run = server.post(am("fp-probe", alertname="Probe"))
    [bad] = refused_run.json()["accepted"]
    failed = wait_for(lambda: server.done().get(bad["id"]), timeout=60, interval=0.5)
    assert failed["_where"] == "failed" and "Airflow refused the run: HTTP 400" in failed["result"]["reason"]
    server.stop()
    assert api.get("/dags/runbook_incident/dagRuns").json()["total_entries"] == 1


def test_a_hand_off_repeated_after_a_crash_finds_the_dag_run_instead_of_making_another(running_airflow):
    """What a restarted server does with a job it had handed off before dying: the same DAG run id, answered 409,
    counted as handed off."""
    from runbook_lib.handoff import AirflowClient, dag_conf, dag_run_id

    url, password, _ = running_airflow
    job = {"id": "1764500000000-0a1b2c3d", "incident_id": "AFH-2", "notebook": "triage", "environment": "local",
           "parameters": {}}
    os.environ.update({"RUNBOOK_AIRFLOW_USERNAME": "runbook", "RUNBOOK_AIRFLOW_PASSWORD": password})
    try:
        client = AirflowClient(url)
        first, second = client.trigger(dag_run_id(job), dag_conf(job)), client.trigger(dag_run_id(job), dag_conf(job))
    finally:
        for k in ("RUNBOOK_AIRFLOW_USERNAME", "RUNBOOK_AIRFLOW_PASSWORD"):
            os.environ.pop(k)
    assert first.created and not second.created and first.dag_run_id == second.dag_run_id
    assert second.url == f"{url}/dags/runbook_incident/runs/{first.dag_run_id}"
    runs = _api(url, password).get("/dags/runbook_incident/dagRuns").json()
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [first.dag_run_id]


def _finished(dag_run: dict) -> dict | None:
    return dag_run if dag_run.get("state") in ("success", "failed") else None


def test_airflow_down_keeps_the_job_claimed_and_retrying_then_requeued_on_restart(tmp_path, monkeypatch, capfd):
    """Nothing listens on the port (a real refused connection): the job is retried, counted and said once, never
    failed; stopped, it stays claimed, and the next start queues it again. No password from the URL is shown."""
    from runbook_lib import alerts
    from runbook_lib.errors import RunbookError
    from runbook_lib.handoff import AirflowClient, AirflowDispatch
    from runbook_lib.server import Metrics, Spool

    monkeypatch.setenv("RUNBOOK_AIRFLOW_TOKEN", "a-token-from-the-environment")
    url = f"http://admin:hunter2-airflow@127.0.0.1:{free_port()}"
    with pytest.raises(RunbookError) as refused:  # what serve says before it would listen
        AirflowClient(url).check()
    assert "hunter2-airflow" not in str(refused.value) and "ConnectError" in str(refused.value)

    spool, metrics = Spool(tmp_path / "spool", 600), Metrics()
    [alert] = alerts.parse_payload(am("fp-down", alertname="PostgresLocks"))
    job = alerts.route(alert, alerts.load_routes(None))
    assert job is not None
    accepted = spool.accept(job, 0.0)
    dispatch = AirflowDispatch(spool, metrics, AirflowClient(url), 1)
    dispatch.start()
    wait_for(lambda: (metrics.registry.get_sample_value("runbook_handoff_retries_total") or 0) >= 2, timeout=30,
             interval=0.2)
    dispatch.shutdown()
    assert spool.counts() == {"queued": 0, "running": 1, "done": 0, "failed": 0, "duplicates": 0}
    said = capfd.readouterr().err
    assert said.count(f"unavailable for job {accepted['id']}") == 1 and "hunter2-airflow" not in said
    assert Spool(tmp_path / "spool", 600).recover() == 1  # the next start re-queues it
