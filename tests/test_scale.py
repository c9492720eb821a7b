"""Beyond one machine: the notebooks run unchanged under Airflow's PapermillOperator call, and the archive can
be an S3-compatible bucket through papermill's own I/O (tested against moto's server mode)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import nbformat
import pytest

from runbook_lib.sandbox import free_port
from tests.helpers import wait_for
from tests.test_runner import run_cli

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def test_database_pressure_runs_unchanged_the_way_airflows_papermill_operator_calls_it(sandbox, tmp_path,
                                                                                       monkeypatch):
    import papermill as pm

    monkeypatch.delenv("RUNBOOK_FINDINGS_PATH", raising=False)
    # the operator's output_nb is a templated field: Airflow renders it before execute() runs
    output_nb = jinja2.Template(str(tmp_path / "{{ ds }}" / "database_pressure-{{ run_id }}.ipynb")).render(
        ds="2026-11-27", run_id="scheduled__2026-11-27T17:00:00")
    Path(output_nb).parent.mkdir(parents=True)
    parameters = {"incident_id": "AIRFLOW-1", "environment": "local", "sample_seconds": 0.5}
    # exactly PapermillOperator.execute's call (no remote kernel connection: engine_name None)
    pm.execute_notebook(str(ROOT / "notebooks" / "database_pressure.ipynb"), output_nb, parameters=parameters,
                        progress_bar=False, report_mode=True, log_output=False, kernel_name="runbook",
                        language="python", engine_name=None)
    nb = nbformat.read(output_nb, as_version=4)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in code)  # report mode
    summary = next(c for c in code if "report.summary()" in c.source)
    assert "Findings:" in json.dumps(summary.outputs)
    assert nb.metadata.papermill.parameters["incident_id"] == "AIRFLOW-1"


@pytest.fixture
def moto_server():
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(binary).exists():
        pytest.skip("moto[server] is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False
    wait_for(up, timeout=30, interval=0.2)
    yield url
    proc.kill()
    proc.wait(timeout=10)


def test_archive_in_an_s3_compatible_bucket_through_papermill_io(sandbox, moto_server, tmp_path):
    import boto3

    creds = {"AWS_ACCESS_KEY_ID": "runbook-test", "AWS_SECRET_ACCESS_KEY": "runbook-test-secret",
             "AWS_DEFAULT_REGION": "us-east-1", "BOTO3_ENDPOINT_URL": moto_server}
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                      aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket="incidents")
    proc = run_cli("run", "database_pressure", "--incident", "S3-1", "--archive", "s3://incidents/records",
                   "-p", "sample_seconds=0.2", env={**creds, "RUNBOOK_PG_DSN": sandbox.postgres.monitor_dsn})
    assert proc.returncode == 0, proc.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="incidents", Prefix="records/S3-1/")["Contents"])
    names = sorted(k.rsplit("/", 1)[1] for k in keys)
    assert names == ["findings.json", "notebook.ipynb", "report.html", "run.json"]
    prefix = keys[0].rsplit("/", 1)[0]
    run = json.loads(s3.get_object(Bucket="incidents", Key=f"{prefix}/run.json")["Body"].read())
    for name, digest in run["files"].items():
        body = s3.get_object(Bucket="incidents", Key=f"{prefix}/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest
        assert sandbox.postgres.monitor_password.encode() not in body
    assert "s3://incidents/records/S3-1/" in proc.stdout
