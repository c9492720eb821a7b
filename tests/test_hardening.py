"""Hostile input and unlucky operators: redaction of every byte written, a sealed and chained archive that shows
tampering, exactly one finaliser per interrupted run, and one-line errors for bad files, ids and archives."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

import pytest

from runbook_lib import archive
from runbook_lib.redact import contains_credentials, redact, redact_tree
from tests.test_runner import run_cli

# (text, what must survive exactly): the secret is gone and the rest of the line is intact
REDACTION_CASES = [
    ('client_secret: "s3cr3t-value-123" in config', 'client_secret: "[REDACTED]" in config'),
    ('{"password": "hunter2hunter2", "user": "app"}', '{"password": "[REDACTED]", "user": "app"}'),
    ("password: hunter2 (rotated)", "password: [REDACTED] (rotated)"),
    ("POST /oauth refresh_token=abcdef123456&grant=refresh", "POST /oauth refresh_token=[REDACTED]&grant=refresh"),
    ("PGPASSWORD=supersecret psql -h db", "PGPASSWORD=[REDACTED] psql -h db"),
    ("Cookie: session=abc123def456; theme=dark", "Cookie: [REDACTED]"),
    ("Set-Cookie: sid=xyz; HttpOnly", "Set-Cookie: [REDACTED]"),
    ("Authorization: Token abcdef1234567890", "Authorization: Token [REDACTED]"),
    ("Authorization: Bearer ab", "Authorization: Bearer [REDACTED]"),
    ("retry with Bearer abc now", "retry with Bearer [REDACTED] now"),
    ("aws key AKIAIOSFODNN7EXAMPLE leaked", "aws key [REDACTED] leaked"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nnext line",
     "[REDACTED PRIVATE KEY]\nnext line"),
    ("postgresql://app:pw123@db:5432/app is down", "postgresql://app:[REDACTED]@db:5432/app is down"),
    ("x-api-key: 9f8e7d6c5b4a", "x-api-key: [REDACTED]"),
    ("slack xoxb-1234567890-abcdefghij posted", "slack [REDACTED] posted"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz here", "jwt [REDACTED] here"),
    ("user bob@example.com signed in", "user [EMAIL] signed in"),
    # not secrets: left as they are
    ("invalid JWT: unable to verify signature, key id 42 not found", "invalid JWT: unable to verify signature, key id 42 not found"),
    ("max_tokens: 100, tokens_used=5", "max_tokens: 100, tokens_used=5"),
    ("SELECT * FROM users WHERE password = $1", "SELECT * FROM users WHERE password = $1"),
    ("GET /dashboard 500 in 12ms", "GET /dashboard 500 in 12ms"),
]


@pytest.mark.parametrize("text,expected", REDACTION_CASES, ids=[c[0][:40] for c in REDACTION_CASES])
def test_redaction_removes_the_secret_and_keeps_the_rest(text, expected):
    assert redact(text) == expected


def test_redact_tree_blanks_secret_keys_keeps_structure_and_leaves_images():
    alert = {"labels": {"alertname": "DB"}, "annotations": {"dsn": "postgresql://u:p4ssw0rd@db/app",
                                                             "api_key": "k-123456789", "runbook": "see wiki"},
             "outputs": [{"data": {"image/png": "iVBORw0KGgoAAAANSUhEUgAKIAIOSFODNN7EXAMPLE"}}], "count": 123456}
    clean = redact_tree(alert)
    assert clean["annotations"] == {"dsn": "postgresql://u:[REDACTED]@db/app", "api_key": "[REDACTED]",
                                    "runbook": "see wiki"}
    assert clean["outputs"][0]["data"]["image/png"] == alert["outputs"][0]["data"]["image/png"]
    assert clean["labels"] == {"alertname": "DB"} and clean["count"] == 123456
    assert contains_credentials("postgresql://a:b@x/y") and not contains_credentials("ops@example.com")


def test_from_alert_run_json_keeps_no_secret_from_the_alert(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {name: retro, match: {alertname: Review}, notebook: retro, incident: 'rev-1'}\n")
    body = {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "Review", "team": "payments"}, "fingerprint": "f1",
        "annotations": {"summary": "db postgresql://app:Sup3rS3cret!@db:5432/app refused",
                        "token": "ghp_0123456789abcdefghijABCDEFGHIJ012345", "contact": "oncall@example.com",
                        "auth": "Authorization: Bearer abcdefghijklmnop",
                        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz"}}]}
    (tmp_path / "alert.json").write_text(json.dumps(body))
    proc = run_cli("from-alert", str(tmp_path / "alert.json"), "--routes", str(routes), "--archive",
                   str(tmp_path / "arch"))
    assert proc.returncode == 0, proc.stderr
    [rec] = archive.records(tmp_path / "arch", "rev-1")
    raw = (rec.path / "run.json").read_text()
    for secret in ("Sup3rS3cret!", "ghp_0123456789", "oncall@example.com", "abcdefghijklmnop", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in raw
    ann = rec.run["alert"]["annotations"]
    assert ann["summary"] == "db postgresql://app:[REDACTED]@db:5432/app refused" and ann["token"] == "[REDACTED]"
    assert rec.run["alert"]["labels"] == {"alertname": "Review", "team": "payments"}
    assert archive.verify(tmp_path / "arch") == []


# --------------------------------------------------------------------------- a sealed, chained, signed archive

def _seal(root: Path, incident: str, status: str = "ok") -> Path:
    stage = archive.begin(root, incident, "probe", {"parameters": {}})
    stage.file("notebook.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    stage.file("report.html").write_text("<html><body>report</body></html>")
    stage.file("findings.json").write_text("[]")
    time.sleep(1.05)  # one record per second: record names are UTC seconds
    return stage.finalize(status=status)


@pytest.fixture
def chain(tmp_path, monkeypatch):
    monkeypatch.setenv(archive.KEY_ENV, "k" * 40)
    root = tmp_path / "arch"
    recs = [_seal(root, "INC") for _ in range(3)]
    assert archive.verify(root) == []
    return root, recs


def _problems(root: Path) -> list[str]:
    return [f"{r}: {w}" for r, w in archive.verify(root)]


def test_verify_shows_an_edited_status_with_or_without_the_key(chain, monkeypatch):
    root, (a, b, c) = chain
    for rec in (a, c):
        run = json.loads((rec / "run.json").read_text())
        run["status"] = "failed"
        (rec / "run.json").write_text(json.dumps(run, indent=2))
    found = _problems(root)
    assert f"INC/{a.name}: run.json was altered (its signature does not match)" in found
    assert f"INC/{c.name}: run.json was altered (its signature does not match)" in found
    monkeypatch.delenv(archive.KEY_ENV)  # without the key, the next record's link still shows the first edit
    assert f"INC/{b.name}: the run.json of the record before it, {a.name}, was altered" in _problems(root)


def test_verify_shows_an_added_file_a_deleted_record_and_a_hash_edited_with_its_file(chain):
    import shutil

    root, (a, b, c) = chain
    (b / "extra.html").write_text("<script>evil()</script>")
    shutil.rmtree(a)
    findings = c / "findings.json"
    findings.write_text('[{"check": "x"}]')
    run = json.loads((c / "run.json").read_text())
    run["files"]["findings.json"] = archive.sha256_file(findings)  # the forger fixes the hash too
    (c / "run.json").write_text(json.dumps(run, indent=2))
    found = _problems(root)
    assert f"INC/{b.name}: extra.html was added after the record was sealed (not listed in run.json)" in found
    assert f"INC/{b.name}: the record before it, {a.name}, was deleted" in found
    assert f"INC/{c.name}: run.json was altered (its signature does not match)" in found


def test_prune_keeps_the_chain_verifiable_and_the_spool_is_not_a_record(chain):
    from datetime import datetime, timezone

    root, (a, b, c) = chain
    second = archive.load_record(b).started_at
    older_than = (datetime.now(timezone.utc) - second).total_seconds() + 0.5  # a only
    assert archive.prune(root, older_than, dry_run=False) == [a]
    (root / ".runbook" / "spool" / "queued").mkdir(parents=True)
    (root / ".runbook" / "spool" / "queued" / "1.json").write_text("{}")
    assert archive.verify(root) == [] and len(archive.list_records(root)) == 2
    out = run_cli("archive", "verify", "--archive", str(root), env={archive.KEY_ENV: "k" * 40})
    assert out.returncode == 0 and "2 records checked, all intact" in out.stdout
    assert "signatures checked" in out.stdout
    unsigned = run_cli("archive", "verify", "--archive", str(root), env={archive.KEY_ENV: ""})
    assert "signed records found, but $RUNBOOK_ARCHIVE_KEY is not set" in unsigned.stdout


# --------------------------------------------------------------------------- exactly one finaliser

def _staging_with_dead_runner(root: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        stage = archive.begin(root, "REC", "probe", {"parameters": {}})
        run = json.loads(stage.file("run.json").read_text())
        run["runner_pid"] = 2 ** 22 + i  # no such process
        stage.file("run.json").write_text(json.dumps(run))
        out.append(stage.path)
    return out


def _recover(root: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        results.append(len(archive.recover_interrupted(Path(root))))  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - the test reports any failure
        results.append(f"{type(e).__name__}: {e}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_recovery_finalises_each_interrupted_run_exactly_once(tmp_path, trial):
    root = tmp_path / "arch"
    _staging_with_dead_runner(root, 12)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier, results = manager.Barrier(3), manager.list()
        procs = [ctx.Process(target=_recover, args=(str(root), barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcome = list(results)
    assert all(isinstance(n, int) for n in outcome), outcome
    assert sum(outcome) == 12
    recs = archive.records(root, "REC")
    assert len(recs) == 12 and all(r.status == "failed" and "interrupted" in r.run["reason"] for r in recs)
    assert not [p for p in (root / "REC").iterdir() if p.name.startswith(".staging")]
    assert archive.verify(root) == []


# --------------------------------------------------------------------------- one-line errors

def test_bad_incident_ids_unwritable_archives_and_hostile_yaml_are_one_line_errors(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                    "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(os.urandom(4096) + b"\x00\xff")
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "y" * (2 << 20))
    afile = tmp_path / "not-a-dir"
    afile.write_text("")
    cases = [
        (["check-env", str(bomb)], "anchors and aliases (*name) are not supported"),
        (["check-env", str(binary)], "not a text file"),
        (["check-env", str(big)], "runbook reads at most"),
        (["run", "retro", "--incident", "ab\n", "--archive", str(tmp_path / "a")], "is not a safe name"),
        (["run", "retro", "--incident", "R-1", "--archive", str(afile / "sub")], "cannot write to the archive"),
        (["note", "bad/id", "x", "--archive", str(tmp_path / "a")], "is not a safe name"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_staging_directory_abandoned_while_being_built_is_removed_once_its_builder_is_gone(tmp_path):
    """begin() builds a staging directory as ``.init`` and renames it into place; a kill in between left it there
    for ever (seen in the kill matrix). Its run never started, so recovery removes it once the builder is dead."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    inc = tmp_path / "I-1"
    cases = {"dead": {"runner_pid": dead.pid}, "alive": {"runner_pid": os.getpid()}, "unwritten": None,
             "unwritten-old": None}
    for name, run in cases.items():
        d = inc / f".staging-20261130T000000Z-probe-{name}.init"
        d.mkdir(parents=True)
        if run is not None:
            (d / "run.json").write_text(json.dumps({"status": "running", **run}))
    old = inc / ".staging-20261130T000000Z-probe-unwritten-old.init"
    os.utime(old, (time.time() - archive.INIT_GRACE_S - 5,) * 2)
    assert archive.recover_interrupted(tmp_path) == []  # nothing to finalise: none of them ever ran
    assert sorted(p.name.split("-probe-")[1] for p in inc.iterdir()) == ["alive.init", "unwritten.init"]


def test_files_are_private_to_the_user_unless_told(tmp_path):
    root = tmp_path / "arch"
    proc = run_cli("note", "P-1", "paged the db team", "--archive", str(root))
    assert proc.returncode == 0
    assert (root / "P-1" / "notes.jsonl").stat().st_mode & 0o077 == 0
    assert (root / "P-1").stat().st_mode & 0o077 == 0
    shared = run_cli("note", "P-2", "shared", "--archive", str(root), env={"RUNBOOK_UMASK": "027"})
    assert shared.returncode == 0 and (root / "P-2" / "notes.jsonl").stat().st_mode & 0o040


class _Silent:
    """A TCP server that accepts connections and never answers (a server wedged, or a black-holed network)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[object] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # held open, never read, never answered


def test_a_server_that_accepts_and_never_answers_is_an_error_finding_not_a_hang():
    from runbook_lib.rules import postgres as pg_rules
    from runbook_lib.rules import queues as q_rules
    from runbook_lib.sources import SourceError
    from runbook_lib.sources import postgres as pg
    from runbook_lib.sources import redis as R

    silent = _Silent()
    db = pg.Database(f"postgresql://u:wedged-pw@127.0.0.1:{silent.port}/app")
    conns = pg.connection_saturation(db)
    assert isinstance(conns, SourceError) and conns.kind in ("unreachable", "timeout")
    [f] = pg_rules.connection_saturation(conns, pg_rules.Thresholds())
    assert f.severity.value == "error" and "wedged-pw" not in json.dumps(f.to_dict())
    target = R.RedisTarget(f"redis://:wedged-pw@127.0.0.1:{silent.port}/0")
    info = R.server_info(target)
    assert isinstance(info, SourceError) and info.kind in ("timeout", "unreachable")
    [g] = q_rules.redis_memory(R.memory(info), q_rules.Thresholds())
    assert g.severity.value == "error" and "wedged-pw" not in json.dumps(g.to_dict())
