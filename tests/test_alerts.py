"""Runs from alerts: payload parsing, routing, ``runbook from-alert`` and a real ``runbook serve`` on loopback
(authentication, limits, the spool, duplicates, SIGKILL and restart, executor crash isolation)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from runbook_lib import alerts, archive
from runbook_lib.sandbox import free_port, start_redis
from runbook_lib.sandbox.queues import stage_queue_backlog
from tests.helpers import wait_for
from tests.test_runner import RUNBOOK, run_cli

PAYLOADS = Path(__file__).parent / "payloads"
TOKEN, SECRET = "tok-7c1d9e0a55b2-0f3e8d2c9b1a7e6f5d4c", "whsec-2f6d1c8b9a-4e3d2c1b0a9f8e7d6c5b"
pytestmark = pytest.mark.slow


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def am(fingerprint: str, status: str = "firing", alertname: str = "Probe", **labels: str) -> bytes:
    return json.dumps({"version": "4", "status": status, "receiver": "runbook", "groupKey": "g",
                       "alerts": [{"status": status, "labels": {"alertname": alertname, **labels},
                                   "annotations": {}, "fingerprint": fingerprint, "startsAt": "2026-11-27T17:00:00Z"}],
                       "commonLabels": {}, "groupLabels": {}}).encode()


def test_payloads_from_alertmanager_grafana_and_pagerduty():
    [q] = alerts.parse_payload(payload("alertmanager_queue_firing.json"))
    assert (q.source, q.status, q.labels["queue"], q.fingerprint) == ("alertmanager", "firing", "emails",
                                                                      "6d2c4f0e1b5e7a3c")
    grouped = alerts.parse_payload(payload("alertmanager_grouped_resolved.json"))
    assert [(a.status, a.labels["instance"]) for a in grouped] == [("resolved", "db-1"), ("firing", "db-2")]
    [g] = alerts.parse_payload(payload("grafana_firing.json"))
    assert g.source == "grafana" and g.labels["service"] == "portal"
    [p] = alerts.parse_payload(payload("pagerduty_triggered.json"))
    assert (p.source, p.incident_hint, p.labels["service"]) == ("pagerduty", "Q3M3JZ4J4V1K9A", "identity")
    for bad, why in ((b"{nope", "not JSON"), (b"[]", "not a JSON object"), (b'{"foo": 1}', "not an Alertmanager"),
                     (b'{"version": "3", "alerts": [{"labels": {}}]}', "version 3"),
                     (b'{"event": {"event_type": "service.updated", "data": {}}}', "not an incident event")):
        with pytest.raises(alerts.PayloadError, match=why):
            alerts.parse_payload(bad)


def test_routing_templates_and_check_alerts(tmp_path):
    routes = alerts.load_routes()
    job = alerts.route(alerts.parse_payload(payload("alertmanager_queue_firing.json"))[0], routes)
    assert (job.notebook, job.parameters["queue"], job.incident_id) == ("queue_backlog", "emails",
                                                                         "queue-emails-6d2c4f0e1b5e7a3c")
    pd_job = alerts.route(alerts.parse_payload(payload("pagerduty_triggered.json"))[0], routes)
    assert (pd_job.notebook, pd_job.incident_id) == ("auth_failures", "Q3M3JZ4J4V1K9A")
    assert alerts.route(alerts.parse_payload(am("x", alertname="Unrelated"))[0], routes) is None
    with pytest.raises(alerts.PayloadError, match="labels.queue"):
        alerts.route(alerts.parse_payload(am("y", alertname="QueueBacklog"))[0], routes)  # no queue label
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  - {name: a, match: {x: y}, notebook: nope}\n"
                   "  - {name: b, match: {x: y}, notebook: queue_backlog, parameters: {colour: red}}\n")
    proc = run_cli("check-alerts", "--routes", str(bad))
    assert proc.returncode == 2 and "unknown notebook 'nope'" in proc.stderr and "'colour'" in proc.stderr
    assert run_cli("check-alerts").returncode == 0


def test_route_templates_are_jinja2_in_a_sandbox_with_filters_and_strict_names(tmp_path):
    alert = alerts.parse_payload(am("z1", alertname="QueueBacklog", queue="Emails", env=""))[0]
    assert alerts.render("q-{{ labels.queue | lower }}-{{ labels.region | default('eu') }}", alert) == "q-emails-eu"
    with pytest.raises(alerts.PayloadError, match="labels.env"):  # an empty label is missing, not ""
        alerts.render("{{ labels.env }}", alert)
    for escape in ("{{ labels.__class__.__mro__ }}", "{{ ''.__class__.__subclasses__() }}",
                   "{{ cycler.__init__.__globals__ }}"):
        with pytest.raises(alerts.PayloadError):
            alerts.render(escape, alert)
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: a, match: {alertname: QueueBacklog}, notebook: queue_backlog,\n"
                      "     incident: 'q-{{ labels.queue '}\n")
    proc = run_cli("check-alerts", "--routes", str(routes))
    assert proc.returncode == 2 and "routes.0.incident: template" in proc.stderr and "not valid" in proc.stderr
    routes.write_text("routes:\n  - {name: a, match: {alertname: QueueBacklog}, notebook: queue_backlog,\n"
                      "     incident: 'q-{{ label.queue }}'}\n")
    proc = run_cli("check-alerts", "--routes", str(routes))
    assert proc.returncode == 2 and "uses 'label'" in proc.stderr


def test_from_alert_runs_queue_backlog_for_the_queue_in_the_labels(tmp_path):
    rd = start_redis()
    staged = stage_queue_backlog(rd.url, backlog=40, stalled=2)
    try:
        (tmp_path / "alert.json").write_bytes(payload("alertmanager_queue_firing.json"))
        proc = run_cli("from-alert", str(tmp_path / "alert.json"), "--archive", str(tmp_path / "arch"),
                       env={"RUNBOOK_REDIS_URL": rd.url})
    finally:
        staged.stop()
        rd.stop()
    reasons = [r.run.get("reason") for r in archive.records(tmp_path / "arch")]
    assert proc.returncode == 0, (proc.stdout, proc.stderr, reasons)
    [rec] = archive.records(tmp_path / "arch", "queue-emails-6d2c4f0e1b5e7a3c")
    assert rec.notebook == "queue_backlog" and rec.run["parameters"]["queue"] == "emails"
    assert rec.run["alert"]["fingerprint"] == "6d2c4f0e1b5e7a3c" and rec.run["alert"]["route"] == "queue-backlog"
    keys = {f.key for f in rec.findings()}
    assert "queue.stuck_jobs:bullmq:bull:emails:stalled" in keys
    assert not any(":bull:webhooks" in k for k in keys)  # only the queue the alert named


# --------------------------------------------------------------------------- a real server

def _probe_notebooks(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    for name, body in (("probe", "import time\ntime.sleep(float(pause))\n"
                                 "from runbook_lib.findings import Finding, Report, Severity\n"
                                 "Report(incident_id).add(Finding('probe', 'x', Severity.WARN, 'probe ran'))"),
                       ("crasher", "import os\nos._exit(3)")):
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "runbook", "display_name": "Python (runbook)", "language": "python"}
        params = new_code_cell('incident_id = "x"\nenvironment = "local"\nwindow_start = "-60m"\nwindow_end = "now"\n'
                               'pause = "0"')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, new_code_cell(body)]
        nbformat.write(nb, d / f"{name}.ipynb")
    shutil.copyfile(Path(__file__).parent.parent / "notebooks" / "queue_backlog.ipynb", d / "queue_backlog.ipynb")
    (tmp_path / "routes.yaml").write_text(
        "routes:\n"
        "  - {name: crash, match: {alertname: Crash}, notebook: crasher}\n"
        "  - {name: slow, match: {alertname: Slow}, notebook: probe, parameters: {pause: '1.5'}}\n"
        "  - {name: probe, match: {alertname: Probe}, notebook: probe}\n"
        "  - {name: queue-backlog, match: {alertname: QueueBacklog}, notebook: queue_backlog,\n"
        "     parameters: {queue: '{{ labels.queue }}', sample_seconds: 1, samples: 2}, incident: 'q-{{ labels.queue }}'}\n")
    return d


class Server:
    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None, notebooks: Path | None = None,
                 extra_args: list[str] | None = None):
        self.port = free_port()
        self.extra_args = extra_args or []
        self.url = f"http://127.0.0.1:{self.port}"
        self.archive = tmp_path / "arch"
        self.spool = tmp_path / "spool"
        self.env = {**os.environ, "RUNBOOK_WEBHOOK_TOKEN": TOKEN, "RUNBOOK_WEBHOOK_SECRET": SECRET,
                    **({"RUNBOOK_NOTEBOOKS_DIR": str(notebooks)} if notebooks else {}), **(extra_env or {})}
        self.routes = str(tmp_path / "routes.yaml")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.proc = subprocess.Popen([*RUNBOOK, "serve", "--port", str(self.port), "--archive", str(self.archive),
                                      "--spool", str(self.spool), "--routes", self.routes, *self.extra_args],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: self._up(), timeout=60, interval=0.2)
        return self

    def _up(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(headers or {})}
        return httpx.post(self.url + "/alerts", content=body, headers=h, timeout=30)

    def done(self) -> dict[str, dict]:
        out = {}
        for d in ("done", "failed"):
            for p in (self.spool / d).glob("*.json"):
                out[p.stem] = {**json.loads(p.read_text()), "_where": d}
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)


@pytest.fixture
def server_factory(tmp_path):
    made: list[Server] = []

    def make(**kw) -> Server:
        s = Server(tmp_path, notebooks=kw.pop("notebooks", None), extra_env=kw.pop("extra_env", None))
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop(signal.SIGTERM)  # the graceful path: executors clean up after themselves


def test_serve_runs_a_real_alertmanager_queue_alert_and_refuses_bad_requests(tmp_path, server_factory):
    rd = start_redis()
    nbs = _probe_notebooks(tmp_path)
    staged = stage_queue_backlog(rd.url, backlog=30, stalled=2)
    s = server_factory(notebooks=nbs, extra_env={"RUNBOOK_REDIS_URL": rd.url}).start()
    try:
        r = s.post(payload("alertmanager_queue_firing.json"))
        assert r.status_code == 202, r.text
        [accepted] = r.json()["accepted"]
        done = wait_for(lambda: s.done().get(accepted["id"]), timeout=120, interval=0.5)
        assert done["_where"] == "done", done
        [rec] = archive.records(s.archive, "q-emails")
        assert rec.notebook == "queue_backlog" and rec.run["parameters"]["queue"] == "emails"
        assert "queue.stuck_jobs:bullmq:bull:emails:stalled" in {f.key for f in rec.findings()}

        body = am("sig-1")
        good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert httpx.post(s.url + "/alerts", content=body).status_code == 401
        assert s.post(body, {"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(s.url + "/alerts", content=body, headers={"X-Runbook-Signature": "sha256=00"}).status_code == 401
        assert httpx.post(s.url + "/alerts", content=body, headers={"X-Runbook-Signature": good}).status_code == 202
        pd_body = payload("pagerduty_triggered.json")
        pd_sig = "v1=" + hmac.new(SECRET.encode(), pd_body, hashlib.sha256).hexdigest()
        r = httpx.post(s.url + "/alerts", content=pd_body, headers={"X-PagerDuty-Signature": f"v1=dead, {pd_sig}"})
        assert r.status_code == 202 and r.json()["unrouted"][0]["reason"] == "no route matches"
        assert httpx.post(s.url + "/alerts", content=pd_body, headers={"X-PagerDuty-Signature": "v1=dead"}).status_code == 401
        assert s.post(b"{not json").status_code == 400
        assert s.post(b'{"hello": "world"}').status_code == 422
        assert s.post(b"x" * (2 << 20)).status_code == 413
        metrics = httpx.get(s.url + "/metrics").text
        assert "runbook_runs_succeeded_total" in metrics and "runbook_requests_rejected_total 7" in metrics
        assert httpx.get(s.url + "/healthz").json()["status"] == "ok"
    finally:
        staged.stop()
        rd.stop()


def test_burst_of_200_alerts_with_duplicates_ends_in_exactly_one_run_each(tmp_path, server_factory):
    s = server_factory(notebooks=_probe_notebooks(tmp_path)).start()
    bodies = [am(f"fp-{i % 40:02d}") for i in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda b: s.post(b), bodies))
    assert all(r.status_code == 202 for r in replies)
    accepted = [a["id"] for r in replies for a in r.json()["accepted"]]
    dups = [d for r in replies for d in r.json()["duplicates"]]
    assert len(accepted) == 40 and len(dups) == 160 and set(d["duplicate_of"] for d in dups) <= set(accepted)
    done = wait_for(lambda: (lambda d: d if len(d) == 40 else None)(s.done()), timeout=240, interval=1)
    failed = {k: v.get("result") for k, v in done.items() if v["_where"] != "done"}
    log = (s.spool / "executors.log").read_text()[-2000:] if (s.spool / "executors.log").exists() else ""
    assert set(done) == set(accepted) and not failed, (failed, log)
    assert len(list((s.spool / "duplicates").glob("*.json"))) == 160
    assert len(archive.list_records(s.archive)) == 40
    m = httpx.get(s.url + "/metrics").text
    assert "runbook_runs_succeeded_total 40" in m and "runbook_alerts_deduplicated_total 160" in m
    # the alert resolves: one confirmation run, linked to the first
    r = s.post(am("fp-07", status="resolved"))
    [confirm] = r.json()["accepted"]
    origin = [a for rr, b in zip(replies, bodies) if b == am("fp-07") for a in rr.json()["accepted"]][0]["id"]
    assert confirm["confirms"] == origin
    wait_for(lambda: confirm["id"] in s.done(), timeout=60, interval=0.5)
    rec = archive.load_record(Path(s.done()[confirm["id"]]["result"]["record"]))
    assert rec.run["confirms"] == origin


def _one_record_per_job(s: "Server", accepted: list[str]) -> dict[str, Path]:
    """Every accepted job has exactly one record (found by the job id in its run.json)."""
    by_job: dict[str, list[Path]] = {}
    for rec in archive.records(s.archive):
        job = (rec.run.get("alert") or {}).get("job_id")
        if job:
            by_job.setdefault(job, []).append(rec.path)
    assert {j: len(v) for j, v in by_job.items() if len(v) != 1} == {}
    assert set(accepted) <= set(by_job), set(accepted) - set(by_job)
    return {j: v[0] for j, v in by_job.items()}


def test_server_killed_mid_queue_runs_the_spooled_alerts_after_restart(tmp_path, server_factory):
    nbs = _probe_notebooks(tmp_path)
    s = server_factory(notebooks=nbs).start()
    accepted = []
    for i in range(6):
        r = s.post(am(f"kill-{i}", alertname="Slow"))
        accepted += [a["id"] for a in r.json()["accepted"]]
    assert len(accepted) == 6
    s.stop(signal.SIGKILL)  # the server, its executors and their kernels die at once
    assert len(s.done()) < 6
    s2 = server_factory(notebooks=nbs)
    s2.port, s2.url = s.port, s.url
    s2.start()
    done = wait_for(lambda: (lambda d: d if set(accepted) <= set(d) else None)(s2.done()), timeout=180, interval=1)
    records = _one_record_per_job(s, accepted)
    for j in accepted:  # run after the restart, or sealed as the interrupted run it was: never both
        rec = archive.load_record(records[j])
        assert (done[j]["_where"], rec.status) in (("done", "ok"), ("failed", "failed")), done[j]
        if rec.status == "failed":
            assert "runbook serve stopped mid-run" in rec.run["reason"]
    assert archive.verify(s.archive) == []  # interrupted records are complete too, marked failed


def test_killing_only_the_server_takes_its_executors_with_it(tmp_path, server_factory):
    nbs = _probe_notebooks(tmp_path)
    s = server_factory(notebooks=nbs).start()
    [job] = [a["id"] for a in s.post(am("orphan-1", alertname="Slow")).json()["accepted"]]
    wait_for(lambda: any((s.archive).glob("*/.staging-*")), timeout=60, interval=0.1)  # mid-run
    executors = [int(p) for p in subprocess.run(["pgrep", "-f", "runbook_lib.warm"], capture_output=True,
                                                text=True).stdout.split()]
    os.kill(s.proc.pid, signal.SIGKILL)  # the main process only, not its group
    s.proc.wait(timeout=10)
    wait_for(lambda: not [p for p in executors if Path(f"/proc/{p}").exists() and
                          "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[1].split()[0]],
             timeout=20, interval=0.2)
    time.sleep(3)  # long enough for an orphan to have finished the 1.5 s job had it survived
    assert not archive.records(s.archive)  # nothing archived the job behind the dead server's back
    s2 = server_factory(notebooks=nbs)
    s2.port, s2.url = s.port, s.url
    s2.start()
    done = wait_for(lambda: s2.done().get(job), timeout=120, interval=0.5)
    assert done["_where"] == "failed" and "mid-run" in done["result"]["reason"]
    assert len(_one_record_per_job(s, [job])) == 1 and archive.verify(s.archive) == []


@pytest.mark.parametrize("trial", range(4))
def test_kill_matrix_every_accepted_alert_ends_in_exactly_one_record(tmp_path, server_factory, trial):
    """A burst with duplicates and resolved alerts, the server killed with SIGKILL (alone, or with its executors)
    at a random moment, restarted, drained: each 202 has one record or a duplicate link to one."""
    import random

    nbs = _probe_notebooks(tmp_path)
    rng = random.Random(trial)
    s = server_factory(notebooks=nbs).start()
    bodies = [am(f"m-{i % 12:02d}", alertname=rng.choice(["Probe", "Slow"])) for i in range(30)]
    bodies += [am(f"m-{i:02d}", status="resolved") for i in range(3)]
    accepted, linked = [], []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for r in pool.map(s.post, bodies):
            assert r.status_code == 202, r.text
            accepted += [a["id"] for a in r.json()["accepted"]]
            linked += [d["duplicate_of"] for d in r.json()["duplicates"]]
    time.sleep(rng.uniform(0.2, 4.0))
    if trial % 2:
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait(timeout=10)
    else:
        s.stop(signal.SIGKILL)
    s2 = server_factory(notebooks=nbs)
    s2.port, s2.url = s.port, s.url
    s2.start()
    wait_for(lambda: set(accepted) <= set(s2.done()), timeout=300, interval=1)
    _one_record_per_job(s, accepted)
    assert set(linked) <= set(accepted)
    assert not [p for p in s.archive.glob("*/.staging-*")]
    assert archive.verify(s.archive) == []


def test_one_crashing_notebook_does_not_stop_the_others(tmp_path, server_factory):
    s = server_factory(notebooks=_probe_notebooks(tmp_path)).start()
    ids = {}
    for name, fp in (("Crash", "c1"), ("Probe", "p1"), ("Probe", "p2"), ("Crash", "c2"), ("Probe", "p3")):
        ids[fp] = s.post(am(fp, alertname=name)).json()["accepted"][0]["id"]
    done = wait_for(lambda: (lambda d: d if len(d) == 5 else None)(s.done()), timeout=180, interval=1)
    assert {fp for fp, j in ids.items() if done[j]["_where"] == "done"} == {"p1", "p2", "p3"}
    assert {fp for fp, j in ids.items() if done[j]["_where"] == "failed"} == {"c1", "c2"}
    crashed = archive.load_record(Path(done[ids["c1"]]["result"]["record"]))
    assert crashed.status == "failed" and "runner:execution" in {f.key for f in crashed.findings()}
    assert "runbook_runs_failed_total 2" in httpx.get(s.url + "/metrics").text


# --------------------------------------------------------------------------- the receiver under hostile input

def _client(tmp_path: Path, window_s: float = 600, **limits: int):
    from starlette.testclient import TestClient

    from runbook_lib.server import Metrics, Spool, build_app

    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: probe, match: {alertname: Probe}, notebook: probe}\n")
    spool = Spool(tmp_path / "spool", window_s)
    app = build_app(spool=spool, metrics=Metrics(), routes=alerts.load_routes(routes), token=TOKEN, secret=SECRET,
                    **limits)
    return TestClient(app, raise_server_exceptions=False), spool


def _many(n: int, status: str = "firing") -> bytes:
    return json.dumps({"version": "4", "status": status, "alerts": [
        {"status": status, "labels": {"alertname": "Probe", "i": str(i)}, "fingerprint": f"f{i}"} for i in range(n)]}
    ).encode()


def test_malformed_headers_shapes_and_floods_get_4xx_or_503_never_a_500(tmp_path):
    client, spool = _client(tmp_path, max_alerts=100, max_queued=5)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/alerts", content=am("x"), headers={"Authorization": b"Bearer \xff\xfe\xfd"}).status_code == 401
    assert client.post("/alerts", content=am("x"), headers={"X-Runbook-Signature": b"sha256=\xe9\xe8"}).status_code == 401
    assert client.post("/alerts", content=am("x"), headers={"X-PagerDuty-Signature": b"v1=\xff"}).status_code == 401
    assert client.post("/alerts", content=b"[" * 1000 + b"]" * 1000, headers=auth).status_code in (400, 422)
    listed = b'{"version": "4", "alerts": [{"labels": {"alertname": "Probe"}, "annotations": ["a", "b"]}]}'
    r = client.post("/alerts", content=listed, headers=auth)
    assert r.status_code == 422 and "annotations must be an object" in r.json()["error"]
    r = client.post("/alerts", content=_many(101), headers=auth)
    assert r.status_code == 413 and "101 alerts" in r.json()["error"] and spool.queued() == 0
    r = client.post("/alerts", content=_many(5), headers=auth)
    assert r.status_code == 202 and len(r.json()["accepted"]) == 5
    full = client.post("/alerts", content=am("one-more"), headers=auth)
    assert full.status_code == 503 and full.headers["Retry-After"] == "30"


def test_resolved_alerts_are_deduplicated_like_firing_ones(tmp_path):
    client, spool = _client(tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    [run] = client.post("/alerts", content=am("r1"), headers=auth).json()["accepted"]
    first = client.post("/alerts", content=am("r1", status="resolved"), headers=auth).json()
    again = client.post("/alerts", content=am("r1", status="resolved"), headers=auth).json()
    assert first["accepted"][0]["confirms"] == run["id"]
    assert again["accepted"] == [] and again["duplicates"][0]["duplicate_of"] == first["accepted"][0]["id"]
    assert spool.queued() == 2


def test_a_repeat_after_the_dedupe_window_runs_again(tmp_path):
    client, spool = _client(tmp_path, window_s=0.5)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    [first] = client.post("/alerts", content=am("w1"), headers=auth).json()["accepted"]
    inside = client.post("/alerts", content=am("w1"), headers=auth).json()
    assert inside["duplicates"][0]["duplicate_of"] == first["id"]
    time.sleep(0.7)
    [later] = client.post("/alerts", content=am("w1"), headers=auth).json()["accepted"]
    assert later["id"] != first["id"] and spool.queued() == 2


def test_every_job_gets_a_fresh_kernel(tmp_path, server_factory):
    nbs = _probe_notebooks(tmp_path)
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "runbook", "display_name": "Python (runbook)", "language": "python"}
    params = new_code_cell('incident_id = "x"\nenvironment = "local"\nwindow_start = "-60m"\nwindow_end = "now"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("import builtins\nassert not hasattr(builtins, 'left_by_an_earlier_job')\n"
                                      "builtins.left_by_an_earlier_job = True")]
    nbformat.write(nb, nbs / "leak.ipynb")
    (tmp_path / "routes.yaml").write_text("routes:\n  - {name: leak, match: {alertname: Leak}, notebook: leak}\n")
    s = server_factory(notebooks=nbs).start()
    ids = []
    for i in range(3):  # two executors: at least one of them runs two of these jobs
        [job] = s.post(am(f"leak-{i}", alertname="Leak")).json()["accepted"]
        wait_for(lambda: job["id"] in s.done(), timeout=120, interval=0.3)
        ids.append(job["id"])
    assert [s.done()[j]["_where"] for j in ids] == ["done", "done", "done"]


def test_fuzzed_webhook_never_answers_5xx(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, _ = _client(tmp_path, max_queued=10_000)
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4), max_leaves=20)
    shaped = st.fixed_dictionaries({"version": st.sampled_from(["4", 4, "3", None]), "alerts": json_values,
                                    "commonLabels": json_values})
    bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                       shaped.map(lambda v: json.dumps(v).encode()))
    headers = st.dictionaries(st.sampled_from(["authorization", "x-runbook-signature", "x-pagerduty-signature",
                                               "content-type"]), st.binary(max_size=40), max_size=3)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, extra=headers, signed=st.booleans())
    def probe(body: bytes, extra: dict[str, bytes], signed: bool) -> None:
        h: dict[str, bytes] = dict(extra)
        if signed:
            h["authorization"] = f"Bearer {TOKEN}".encode()
        status = client.post("/alerts", content=body, headers=h).status_code
        assert status < 500 or status == 503, (body[:200], h, status)
    probe()


def test_serve_refuses_short_tokens(tmp_path):
    proc = run_cli("serve", "--port", "1", "--archive", str(tmp_path), env={"RUNBOOK_WEBHOOK_TOKEN": "short",
                                                                           "RUNBOOK_WEBHOOK_SECRET": ""})
    assert proc.returncode == 2 and "RUNBOOK_WEBHOOK_TOKEN has 5 characters; use at least 32" in proc.stderr


def test_metrics_are_prometheus_client_histograms_with_process_metrics_and_bounded(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from runbook_lib.server import Metrics, Spool

    metrics, spool = Metrics(), Spool(tmp_path / "spool", 300)

    def families() -> dict:
        body, content_type = metrics.render(spool)
        assert content_type.startswith("text/plain; version=")
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    metrics.alerts(5, 3, 1, 1)
    for i in range(10):
        metrics.run_finished(i % 5 != 0, 4.0)
    small = sum(len(f.samples) for f in families().values())
    for _ in range(10_000):
        metrics.run_finished(True, 42.0)
    got = families()
    assert sum(len(f.samples) for f in got.values()) == small  # the same series however many runs
    latency = {s.labels.get("le"): s.value for s in got["runbook_run_latency_seconds"].samples
               if s.name.endswith("_bucket")}
    assert latency["5.0"] == 10 and latency["60.0"] == 10_010 and latency["+Inf"] == 10_010
    assert got["runbook_runs_succeeded"].samples[0].value == 10_008
    assert got["runbook_runs_failed"].samples[0].value == 2
    assert got["runbook_alerts_deduplicated"].samples[0].value == 1
    assert got["process_resident_memory_bytes"].samples[0].value > 0 and "runbook_runs_queued" in got
