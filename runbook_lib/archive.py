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
from .redact import REDACTED, redact

ARCHIVE_ENV = "RUNBOOK_ARCHIVE"
RECORD_FILES = ("notebook.ipynb", "report.html", "findings.json")
_INCIDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING_PREFIX = ".staging-"


def archive_root(path: str | os.PathLike[str] | None = None) -> Path:
    """``--archive DIR``, else ``$RUNBOOK_ARCHIVE``, else ``./archive``."""
    return Path(path or os.environ.get(ARCHIVE_ENV) or "archive").expanduser().resolve()


def validate_incident_id(incident_id: str) -> str:
    """An incident id must be a safe single path component: letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(incident_id, str) or not _INCIDENT_RE.match(incident_id) or ".." in incident_id:
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
                 if p.is_file() and p.name != "run.json" and not p.name.startswith(".")}
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
        _write_json_atomic(self.path / "run.json", run)
        incident_dir = self.root / self.incident_id
        base = f"{utc_stamp(self.started_at)}-{self.notebook}"
        final = incident_dir / base
        n = 2
        while final.exists():
            final = incident_dir / f"{base}-{n}"
            n += 1
        os.rename(self.path, final)
        return final


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
    path.mkdir(exist_ok=True)
    full = {"schema": 1, "incident_id": incident_id, "notebook": notebook,
            "started_at": started.isoformat(), "status": "running", "runner_pid": os.getpid(), **meta}
    _write_json_atomic(path / "run.json", full)
    return Staging(root, incident_id, notebook, started, path, {k: v for k, v in full.items() if k != "status"})


def scrub_secrets(directory: Path, secret_values: list[str]) -> int:
    """Replace secret values and URL passwords in the record's text files. Returns how many files changed."""
    count = 0
    for p in directory.iterdir():
        if not p.is_file() or p.suffix not in (".ipynb", ".html", ".json", ".md", ".txt", ".log"):
            continue
        text = p.read_text(errors="replace")
        clean = text
        for s in sorted({s for s in secret_values if len(s) >= 4}, key=len, reverse=True):
            clean = clean.replace(s, REDACTED)
            if p.suffix in (".ipynb", ".json"):
                clean = clean.replace(json.dumps(s)[1:-1], REDACTED)
        clean = _scrub_url_passwords(clean)
        if clean != text:
            count += 1
            tmp = p.with_name(f".{p.name}.scrub")
            tmp.write_text(clean)
            os.replace(tmp, p)
    return count


_URL_PW = re.compile(r"\b((?:postgres(?:ql)?|redis|rediss|amqp|mysql|https?)://[^:/@\s\"'\\]*:)([^@\s\"'\\]+)(@)")


def _scrub_url_passwords(text: str) -> str:
    return _URL_PW.sub(lambda m: m.group(1) + REDACTED + m.group(3) if m.group(2) != REDACTED else m.group(0), text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(root: Path) -> list[Path]:
    """Finalise as ``failed`` every staging record whose runner process is gone."""
    recovered: list[Path] = []
    if not root.is_dir():
        return recovered
    for staging_dir in root.glob(f"*/{_STAGING_PREFIX}*"):
        try:
            meta = json.loads((staging_dir / "run.json").read_text())
        except (OSError, ValueError):
            meta = {}
        pid = int(meta.get("runner_pid") or 0)
        if pid and _pid_alive(pid):
            continue
        started = datetime.fromisoformat(meta["started_at"]) if meta.get("started_at") else \
            datetime.fromtimestamp(staging_dir.stat().st_mtime, timezone.utc)
        nb = meta.get("notebook") or "unknown"
        meta.pop("status", None)
        st = Staging(root, staging_dir.parent.name, nb, started, staging_dir, meta)
        recovered.append(st.finalize(status="failed", reason=f"interrupted: runner process {pid} died mid-run"))
    return recovered


def list_records(root: Path, incident_id: str | None = None) -> list[Path]:
    """Finalised record directories, oldest first (all incidents, or one)."""
    if not root.is_dir():
        return []
    dirs = [root / incident_id] if incident_id else sorted(p for p in root.iterdir() if p.is_dir())
    out = []
    for d in dirs:
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and (p / "run.json").is_file())
    return out


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
