"""The incident record store.

Layout: ``<archive>/<incident-id>/<UTC timestamp>-<notebook>/`` holding ``notebook.ipynb``,
``report.html``, ``findings.json`` and ``run.json`` (sha256 of every other file).

A run is built in a hidden staging directory beside its final place and renamed into place
in one step, so a reader never sees a half-written record. A staging directory whose runner
died (killed, machine lost) is finalised as ``failed`` by :func:`recover_interrupted`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import RunbookError
from .findings import Finding, Severity, load_findings, worst
from .redact import redact, redact_markup, redact_tree

ARCHIVE_ENV = "RUNBOOK_ARCHIVE"
KEY_ENV = "RUNBOOK_ARCHIVE_KEY"
RECORD_FILES = ("notebook.ipynb", "report.html", "findings.json")
SEAL_FILES = ("run.json", "run.sig")  # run.json lists the sha256 of every other file; run.sig signs run.json
_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING_PREFIX = ".staging-"


def archive_root(path: str | os.PathLike[str] | None = None) -> Path:
    """``--archive DIR``, else ``$RUNBOOK_ARCHIVE``, else ``./archive`` (a local directory: commands that read
    records do not read buckets; ``runbook run``/``serve`` write to ``s3://`` through their own path)."""
    text = str(path or os.environ.get(ARCHIVE_ENV) or "archive")
    if "://" in text:
        raise RunbookError(f"{text} is not a local directory: this command reads a local archive "
                           "(copy the bucket down first, e.g. aws s3 sync)")
    return Path(text).expanduser().resolve()


def validate_incident_id(incident_id: str) -> str:
    """An incident id must be a safe single path component: letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(incident_id, str) or not _INCIDENT_RE.fullmatch(incident_id) or ".." in incident_id:
        raise RunbookError(
            f"incident id {incident_id!r} is not a safe name (letters, digits, '.', '_', '-'; max 128; no '..')")
    return incident_id


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def utc_stamp(dt: datetime) -> str:
    """``20261127T163042Z``: sortable, path-safe."""
    return dt.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Staging:
    """A record being written: files go into ``path``; :meth:`finalize` moves it into place."""

    root: Path
    incident_id: str
    notebook: str
    started_at: datetime
    path: Path
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    def finalize(self, *, status: str, reason: str = "", extra_secrets: Iterable[str] = (),
                 extra: dict[str, Any] | None = None) -> Path:
        """Scrub secrets, hash every file, write ``run.json`` and rename into place. Returns the record dir."""
        secrets_list = [s for s in extra_secrets if s]
        redactions = scrub_secrets(self.path, secrets_list)
        finished = datetime.now(timezone.utc)
        files = {p.name: sha256_file(p) for p in sorted(self.path.iterdir())
                 if p.is_file() and p.name not in SEAL_FILES and not p.name.startswith(".")}
        run = dict(self.meta)
        run.update(extra or {})
        run.update({
            "status": status,
            "reason": redact(reason, secrets_list),
            "finished_at": finished.isoformat(),
            "duration_s": round((finished - self.started_at).total_seconds(), 3),
            "files_scrubbed": redactions,
            "files": files,
        })
        run.pop("runner_pid", None)
        run.pop("findings_source", None)
        run["previous"] = previous_link(self.root, self.incident_id)  # the chain: deleting or editing shows
        run = redact_tree(run, secrets_list)  # the alert block, parameters, reason: every byte written is scrubbed
        _write_json_atomic(self.path / "run.json", run)
        sign(self.path)
        incident_dir = self.root / self.incident_id
        base = f"{utc_stamp(self.started_at)}-{self.notebook}"
        final = incident_dir / base
        n = 2
        while True:
            while final.exists():
                final = incident_dir / f"{base}-{n}"
                n += 1
            try:
                os.rename(self.path, final)  # atomic; fails if another run took the name meanwhile
                return final
            except OSError:
                if not final.exists():
                    raise


def previous_link(root: Path, incident_id: str) -> dict[str, str] | None:
    """The incident's latest sealed record and the sha256 of its run.json (None for the first record)."""
    recs = list_records(root, incident_id)
    if not recs:
        return None
    return {"record": recs[-1].name, "sha256": sha256_file(recs[-1] / "run.json")}


def _signature(run_json: Path, key: str) -> str:
    import hmac

    return hmac.new(key.encode(), run_json.read_bytes(), "sha256").hexdigest()


def sign(record: Path) -> bool:
    """Write ``run.sig`` (HMAC-SHA256 of run.json under ``$RUNBOOK_ARCHIVE_KEY``) when a key is set."""
    key = os.environ.get(KEY_ENV)
    if not key:
        return False
    (record / "run.sig").write_text(_signature(record / "run.json", key) + "\n")
    return True


def ensure_writable(root: Path, incident_id: str) -> None:
    """The archive can take a record for this incident, or a one-line :class:`RunbookError` saying why not (checked
    before a run starts, so an unwritable archive never costs a run)."""
    validate_incident_id(incident_id)
    target = root / incident_id
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".probe-{secrets.token_hex(4)}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunbookError(f"cannot write to the archive at {target}: {e.strerror or e}") from None


def plan_staging(root: Path, incident_id: str, notebook: str) -> Path:
    """The staging directory a run will use (not created yet)."""
    validate_incident_id(incident_id)
    stamp = utc_stamp(datetime.now(timezone.utc))
    return root / incident_id / f"{_STAGING_PREFIX}{stamp}-{notebook}-{secrets.token_hex(4)}"


def begin(root: Path, incident_id: str, notebook: str, meta: dict[str, Any], path: Path | None = None) -> Staging:
    """Create the staging directory and a ``run.json`` with status ``running`` (for crash recovery)."""
    validate_incident_id(incident_id)
    started = datetime.now(timezone.utc)
    path = path or plan_staging(root, incident_id, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"schema": 1, "incident_id": incident_id, "notebook": notebook,
            "started_at": started.isoformat(), "status": "running", "runner_pid": os.getpid(), **meta}
    # the staging directory appears with its run.json already in it, so recovery never mistakes it for orphaned
    building = path.with_name(path.name + ".init")
    building.mkdir()
    _write_json_atomic(building / "run.json", full)
    os.rename(building, path)
    return Staging(root, incident_id, notebook, started, path, {k: v for k, v in full.items() if k != "status"})


def scrub_secrets(directory: Path, secret_values: list[str]) -> int:
    """Redact every text file of a record in place: the secret values the environment names, URL passwords, and
    everything :func:`redact.redact` removes (tokens, keys, cookies, emails). JSON and notebooks are redacted value
    by value, so they stay valid; chart images are left byte for byte. Returns how many files changed."""
    count = 0
    for p in directory.iterdir():
        if not p.is_file() or p.suffix not in (".ipynb", ".html", ".json", ".md", ".txt", ".log"):
            continue
        text = p.read_text(errors="replace")
        clean = scrub_text(text, p.suffix, secret_values)
        if clean != text:
            count += 1
            tmp = p.with_name(f".{p.name}.scrub")
            tmp.write_text(clean)
            os.replace(tmp, p)
    return count


def scrub_text(text: str, suffix: str, secret_values: Iterable[str]) -> str:
    """One file's text, redacted by its kind (``.json``/``.ipynb`` value by value, markup around data URIs)."""
    secrets_list = [s for s in secret_values if s and len(s) >= 4]
    if suffix in (".json", ".ipynb"):
        try:
            data = json.loads(text)
        except ValueError:
            return redact(text, secrets_list)
        clean = redact_tree(data, secrets_list)
        if clean == data:
            return text
        return json.dumps(clean, indent=1 if suffix == ".ipynb" else 2, ensure_ascii=False) + "\n"
    return redact_markup(text, secrets_list)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(root: Path) -> list[Path]:
    """Finalise as ``failed`` every staging record whose runner process is gone. Each one is first claimed by an
    atomic rename, so when several processes recover at once exactly one finalises it."""
    recovered: list[Path] = []
    for staging_dir in (d for inc in incident_dirs(root) for d in inc.glob(f"{_STAGING_PREFIX}*")):
        if staging_dir.name.endswith(".init"):
            remove_abandoned_init(staging_dir)
            continue
        meta = _staging_meta(staging_dir)
        if meta is None:
            continue
        pid = int(meta.get("runner_pid") or 0)
        if pid and _pid_alive(pid):
            continue
        claimed = claim_staging(staging_dir)
        if claimed is None:
            continue  # another process is finalising it
        recovered.append(finalize_interrupted(root, claimed, meta, f"interrupted: runner process {pid} died mid-run"))
    return recovered


WARM_DIR = ".runbook/warm"  # kernels started ahead of their run write findings here (runner.warm_kernel)
INIT_GRACE_S = 60.0  # a staging directory still being built after this long, with no run.json, was abandoned


def remove_abandoned_init(building: Path) -> bool:
    """Remove a staging directory whose builder (:func:`begin`) was killed before it renamed it into place: its run
    never started, so it holds no evidence, and the job that made it runs again. Its builder is known dead from
    run.json's ``runner_pid``; without a readable run.json, once it is :data:`INIT_GRACE_S` old."""
    import time

    try:
        pid = int(json.loads((building / "run.json").read_text()).get("runner_pid") or 0)
    except (OSError, ValueError):
        pid = 0
    try:
        if (pid and _pid_alive(pid)) or (not pid and time.time() - building.stat().st_mtime < INIT_GRACE_S):
            return False
    except OSError:
        return False
    shutil.rmtree(building, ignore_errors=True)
    return True


_CLAIM = ".recovering-"


def _staging_meta(staging_dir: Path) -> dict[str, Any] | None:
    """A staging directory's run.json, or None while someone may still be writing it (or claiming it)."""
    if _CLAIM in staging_dir.name:
        owner = int(staging_dir.name.rsplit(_CLAIM, 1)[1] or 0)
        if owner and _pid_alive(owner):
            return None  # being finalised by a live process
    try:
        return json.loads((staging_dir / "run.json").read_text())
    except (OSError, ValueError):
        try:
            if datetime.now().timestamp() - staging_dir.stat().st_mtime < 600:
                return None  # unreadable but recent: leave it to whoever is writing it
        except OSError:
            return None  # gone: another process claimed it
        return {}


def claim_staging(staging_dir: Path) -> Path | None:
    """Rename ``staging_dir`` to a name that says this process finalises it; None if another process got there."""
    base = staging_dir.name.split(_CLAIM)[0]
    claimed = staging_dir.with_name(f"{base}{_CLAIM}{os.getpid()}")
    try:
        os.rename(staging_dir, claimed)
    except (FileNotFoundError, OSError):
        return None
    return claimed


def finalize_interrupted(root: Path, staging_dir: Path, meta: dict[str, Any], reason: str) -> Path:
    """Seal a claimed staging directory as a ``failed`` record with what the run had saved."""
    started = datetime.fromisoformat(meta["started_at"]) if meta.get("started_at") else \
        datetime.fromtimestamp(staging_dir.stat().st_mtime, timezone.utc)
    meta = {k: v for k, v in meta.items() if k != "status"}
    source = Path(meta.get("findings_source") or staging_dir / "findings.json")
    if source != staging_dir / "findings.json" and source.is_file():
        shutil.copyfile(source, staging_dir / "findings.json")
        if source.parent.parent == root / WARM_DIR:  # the killed run's kernel directory: now in the record
            shutil.rmtree(source.parent, ignore_errors=True)
    _complete_interrupted(staging_dir, reason)
    st = Staging(root, staging_dir.parent.name, meta.get("notebook") or "unknown", started, staging_dir, meta)
    return st.finalize(status="failed", reason=reason)


def find_job(root: Path, incident_id: str, job_id: str) -> tuple[str, Path] | None:
    """Where an alert job's run is: ``("record", dir)`` once sealed, ``("staging", dir)`` while unfinished, else
    None (the run never started)."""
    inc = root / incident_id
    if not inc.is_dir():
        return None
    for d in sorted(inc.iterdir()):
        try:
            run = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if (run.get("alert") or {}).get("job_id") == job_id:
            return ("staging" if d.name.startswith(_STAGING_PREFIX) else "record"), d
    return None


def _complete_interrupted(staging_dir: Path, reason: str) -> None:
    """Give an interrupted record every file the contract names: what it saved, else a note saying why not."""
    import html

    if not (staging_dir / "findings.json").is_file():
        (staging_dir / "findings.json").write_text("[]")
    if not (staging_dir / "notebook.ipynb").is_file():
        note = {"cell_type": "markdown", "id": "interrupted", "metadata": {},
                "source": f"**This run was interrupted before its notebook was saved.** {reason}"}
        (staging_dir / "notebook.ipynb").write_text(json.dumps(
            {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [note]}, indent=1))
    if not (staging_dir / "report.html").is_file():
        (staging_dir / "report.html").write_text(
            f"<html><body><h1>Run interrupted</h1><p>{html.escape(reason)}. The executed notebook beside this "
            "page holds what the run had done; findings.json what it had found.</p></body></html>")


def incident_dirs(root: Path) -> list[Path]:
    """Every incident folder of the archive (hidden working state such as ``.runbook/`` is not one)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def list_records(root: Path, incident_id: str | None = None) -> list[Path]:
    """Finalised record directories, oldest first (all incidents, or one)."""
    if not root.is_dir():
        return []
    dirs = [root / incident_id] if incident_id else incident_dirs(root)
    out = []
    for d in dirs:
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and (p / "run.json").is_file())
    return out


# --------------------------------------------------------------------------- reading records

@dataclass
class Record:
    """One archived run, read back from its directory."""

    path: Path
    run: dict[str, Any]

    @property
    def incident_id(self) -> str:
        return str(self.run.get("incident_id") or self.path.parent.name)

    @property
    def notebook(self) -> str:
        return str(self.run.get("notebook") or "?")

    @property
    def status(self) -> str:
        return str(self.run.get("status") or "?")

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.run["started_at"]) if self.run.get("started_at") else \
            datetime.fromtimestamp(self.path.stat().st_mtime, timezone.utc)

    @property
    def run_id(self) -> str:
        """``<incident>/<record dir>``: how commands name a record."""
        return f"{self.path.parent.name}/{self.path.name}"

    def findings(self) -> list[Finding]:
        """The record's findings, most urgent first."""
        return load_findings(self.path / "findings.json")

    @property
    def worst(self) -> Severity:
        """The most urgent severity the run recorded."""
        return worst(self.findings())


def load_record(path: Path) -> Record:
    """A record directory as a :class:`Record` (``run.json`` must be readable)."""
    try:
        return Record(path, json.loads((path / "run.json").read_text()))
    except (OSError, ValueError) as e:
        raise RunbookError(f"{path} is not a readable record ({type(e).__name__})") from None


def records(root: Path, incident_id: str | None = None) -> list[Record]:
    """Every readable record (one incident or all), oldest first."""
    out = []
    for p in list_records(root, incident_id):
        try:
            out.append(load_record(p))
        except RunbookError:
            continue
    return sorted(out, key=lambda r: (r.started_at, r.path.name))


def is_incident(root: Path, ref: str) -> bool:
    """``ref`` names an incident folder of the archive (not a record)."""
    return bool(_INCIDENT_RE.fullmatch(ref)) and (root / ref).is_dir() and not (root / ref / "run.json").is_file()


def resolve_record(root: Path, ref: str) -> Record:
    """A record by path, by ``<incident>/<record dir>``, or ``<incident>`` (its latest record)."""
    p = Path(ref).expanduser()
    if (p / "run.json").is_file():
        return load_record(p.resolve())
    if (root / ref / "run.json").is_file():
        return load_record(root / ref)
    if (root / ref).is_dir():
        recs = records(root, ref)
        if recs:
            return recs[-1]
    raise RunbookError(f"no record {ref!r} under {root} (give a record path, INCIDENT/RECORD or INCIDENT)")


def verify(root: Path) -> list[tuple[str, str]]:
    """Every problem with the archive: (record, what is wrong). Hashes are recomputed from the bytes; every file of
    a record must be listed in its run.json; each record's link to the incident's previous record must hold (an edited
    or deleted record shows); with ``$RUNBOOK_ARCHIVE_KEY`` set, every run.json must carry a valid signature."""
    problems: list[tuple[str, str]] = []
    key = os.environ.get(KEY_ENV)
    for incident_dir in incident_dirs(root):
        for rec in sorted(p for p in incident_dir.iterdir() if p.is_dir()):
            name = f"{incident_dir.name}/{rec.name}"
            if rec.name.startswith(_STAGING_PREFIX):
                problems.append((name, "unfinished run (staging directory); the next run finalises it as failed"))
                continue
            if rec.name.startswith(".") or rec.name in ("status-updates",):
                continue
            problems += [(name, what) for what in _record_problems(rec, key)]
    return problems


def _record_problems(rec: Path, key: str | None) -> list[str]:
    try:
        run = json.loads((rec / "run.json").read_text())
    except (OSError, ValueError):
        return ["run.json missing or unreadable"]
    out = []
    files = run.get("files") or {}
    out += [f"{required} is not listed in run.json" for required in RECORD_FILES if required not in files]
    for fname, digest in files.items():
        f = rec / fname
        if not f.is_file():
            out.append(f"{fname} is missing")
        elif sha256_file(f) != digest:
            out.append(f"{fname} was altered (sha256 differs from run.json)")
    out += [f"{p.name} was added after the record was sealed (not listed in run.json)" for p in sorted(rec.iterdir())
            if p.is_file() and p.name not in files and p.name not in SEAL_FILES and not p.name.startswith(".")]
    prev = run.get("previous")
    if prev:
        target = rec.parent / str(prev.get("record", ""))
        if not (target / "run.json").is_file():
            if _pruned(rec.parent).get(str(prev.get("record"))) != prev.get("sha256"):
                out.append(f"the record before it, {prev.get('record')}, was deleted")
        elif sha256_file(target / "run.json") != prev.get("sha256"):
            out.append(f"the run.json of the record before it, {prev.get('record')}, was altered")
    if key:
        sig = rec / "run.sig"
        if not sig.is_file():
            out.append("run.json is not signed (no run.sig)")
        elif sig.read_text().strip() != _signature(rec / "run.json", key):
            out.append("run.json was altered (its signature does not match)")
    return out


def signed_state(root: Path) -> str:
    """How the archive is protected, for the verify summary."""
    key = os.environ.get(KEY_ENV)
    sigs = any(root.glob("*/*/run.sig"))
    if key:
        return "signatures checked with $RUNBOOK_ARCHIVE_KEY"
    if sigs:
        return "signed records found, but $RUNBOOK_ARCHIVE_KEY is not set: signatures not checked"
    return "the archive is unsigned (set $RUNBOOK_ARCHIVE_KEY when runs write records to sign them)"


PRUNED_FILE = "pruned.jsonl"


def prune(root: Path, older_than_s: float, *, dry_run: bool = True) -> list[Path]:
    """Records started more than ``older_than_s`` ago; deleted only when ``dry_run`` is False. Each deletion is noted
    (name and run.json digest) in the incident's ``pruned.jsonl``, so the chain of the records after it still
    verifies."""
    cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
    old = [r.path for r in records(root) if r.started_at.timestamp() < cutoff]
    if not dry_run:
        for p in old:
            line = json.dumps({"record": p.name, "sha256": sha256_file(p / "run.json"),
                               "pruned_at": datetime.now(timezone.utc).isoformat()})
            with open(p.parent / PRUNED_FILE, "a") as f:
                f.write(line + "\n")
            shutil.rmtree(p)
    return old


def _pruned(incident_dir: Path) -> dict[str, str]:
    try:
        lines = (incident_dir / PRUNED_FILE).read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        try:
            d = json.loads(line)
            out[d["record"]] = d["sha256"]
        except (ValueError, KeyError, TypeError):
            continue
    return out


NOTES_FILE = "notes.jsonl"


@dataclass(frozen=True)
class Note:
    """A human timeline entry: when it happened (not when it was typed), what, and when it was written."""

    at: datetime
    text: str
    written_at: datetime


def add_note(root: Path, incident_id: str, text: str, at: datetime | None = None) -> Note:
    """Append a note to ``<archive>/<incident>/notes.jsonl`` (redacted, one line, fsynced); nothing is rewritten."""
    validate_incident_id(incident_id)
    text = " ".join(redact(str(text)).split())
    if not text:
        raise RunbookError("a note needs some text")
    now = datetime.now(timezone.utc)
    note = Note((at or now).astimezone(timezone.utc), text[:2000], now)
    path = root / incident_id / NOTES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": note.at.isoformat(), "text": note.text, "written_at": note.written_at.isoformat()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides (0600 by default)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return note


def read_notes(root: Path, incident_id: str) -> list[Note]:
    """The incident's notes in incident time (unreadable lines skipped)."""
    path = root / incident_id / NOTES_FILE
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            d = json.loads(line)
            out.append(Note(datetime.fromisoformat(d["at"]), str(d["text"]), datetime.fromisoformat(d["written_at"])))
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda n: n.at)


def write_incident_file(root: Path, incident_id: str, relative: str, text: str) -> Path:
    """Write a document (status update, retro draft) into the incident's folder, atomically, never over an
    existing file (a numbered name is used instead)."""
    validate_incident_id(incident_id)
    target = root / incident_id / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix, n = target.stem, target.suffix, 2
    while target.exists():
        target = target.with_name(f"{stem}-{n}{suffix}")
        n += 1
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(redact(text))
    os.replace(tmp, target)
    return target
