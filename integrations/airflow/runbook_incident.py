"""Airflow DAG ``runbook_incident``: a symptom notebook run by the Papermill provider's ``PapermillOperator``, then
sealed as an incident record by ``runbook record`` (a run whose cells failed is recorded too, as ``failed``).

Trigger it with a conf such as ``{"notebook": "database_pressure", "incident": "INC-7", "environment": "production",
"parameters": {"sample_seconds": 5}}``; ``runbook serve --airflow`` adds ``"alert"``, the alert behind the run, which
the record keeps in run.json. The workers need, in their environment:

- ``RUNBOOK_HOME``: the checkout (or installed copy) holding ``notebooks/``;
- ``RUNBOOK_BIN``: the ``runbook`` command of its virtualenv;
- ``JUPYTER_PATH``: that virtualenv's ``share/jupyter``, where the ``runbook`` kernel is;
- ``RUNBOOK_ARCHIVE``: where records go (a directory or ``s3://bucket/prefix``), and the variables the environment
  file names (DSNs, URLs), exactly as for ``runbook run``;
- optionally ``RUNBOOK_AIRFLOW_WORK``: where executed notebooks wait to be recorded (default /tmp/runbook-airflow).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import datetime
from typing import Any

from airflow.providers.papermill.operators.papermill import PapermillOperator
from airflow.sdk import DAG, Param, task

HOME = os.environ.get("RUNBOOK_HOME", "/opt/runbook")
RUNBOOK = os.environ.get("RUNBOOK_BIN", "runbook")
WORK = os.environ.get("RUNBOOK_AIRFLOW_WORK", "/tmp/runbook-airflow")
os.makedirs(WORK, mode=0o700, exist_ok=True)  # papermill writes into it but does not create it
NOTEBOOKS = ["triage", "auth_failures", "portal_outage", "queue_backlog", "database_pressure"]

with DAG(
    dag_id="runbook_incident",
    description="run a runbook notebook for an incident and archive it as the incident record",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,  # parameters keep their types (sample_seconds stays a float)
    params={
        "notebook": Param("triage", enum=NOTEBOOKS),
        "incident": Param("adhoc", type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        "environment": Param("local", type="string"),
        "parameters": Param({}, type="object"),
        "alert": Param({}, type="object"),
    },
) as dag:
    # run_id, not ts_nodash: a run triggered through the REST API (as runbook serve --airflow does) has no logical
    # date, and ts_nodash is then undefined
    executed = WORK + "/{{ params.incident }}-{{ params.notebook }}-{{ run_id }}.ipynb"
    run_notebook = PapermillOperator(
        task_id="run_notebook",
        input_nb=HOME + "/notebooks/{{ params.notebook }}.ipynb",
        output_nb=executed,
        kernel_name="runbook",
        parameters="{{ dict(params.parameters, incident_id=params.incident, environment=params.environment) }}",
    )

    @task(task_id="record", trigger_rule="all_done")  # a notebook that failed part-way is still a record of what
    def record(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:  # it found
        """``runbook record`` on the executed notebook, the alert (if any) passed as a file: no shell, no quoting."""
        assert params is not None and run_id is not None
        notebook_file = f"{WORK}/{params['incident']}-{params['notebook']}-{run_id}.ipynb"
        command = [RUNBOOK, "record", notebook_file, "--incident", params["incident"]]
        with tempfile.TemporaryDirectory(dir=WORK) as private:
            if params.get("alert"):
                alert_file = os.path.join(private, "alert.json")
                with open(alert_file, "w") as f:
                    json.dump(params["alert"], f)
                command += ["--alert", alert_file]
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        print(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"runbook record exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    run_notebook >> record()
