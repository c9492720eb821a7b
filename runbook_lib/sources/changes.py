"""Deploys, config changes, migrations and flag flips: from a YAML/JSON file, an HTTP endpoint returning
JSON, or ``git log`` of a deploy repository. One row per change: time (UTC), service, kind, version,
description, source."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ..redact import redact
from . import SourceError

SOURCE = "changes"
COLUMNS = ["time", "service", "kind", "version", "description", "source"]
KINDS = {"deploy", "config", "migration", "flag", "rollback"}


def _frame(items: list[dict[str, Any]], source: str) -> pd.DataFrame | SourceError:
    rows, bad = [], 0
    for it in items:
        if not isinstance(it, dict) or "time" not in it:
            bad += 1
            continue
        kind = str(it.get("kind", "deploy")).lower()
        rows.append({"time": it.get("time"), "service": str(it.get("service", "") or ""),
                     "kind": kind if kind in KINDS else "deploy", "version": str(it.get("version", "") or ""),
                     "description": redact(str(it.get("description", "") or ""))[:300], "source": source})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["time"] = pd.to_datetime(df["time"].astype("object"), utc=True, errors="coerce", format="ISO8601") \
        if len(df) else pd.Series(dtype="datetime64[ns, UTC]")
    bad += int(df["time"].isna().sum())
    df = df.dropna(subset=["time"]).sort_values("time", ignore_index=True)
    df.attrs["skipped"] = bad
    return df


def from_file(path: str | Path) -> pd.DataFrame | SourceError:
    """A YAML or JSON list of ``{time, service, kind, version, description}``."""
    from ..config import read_yaml
    from ..errors import ConfigError

    p = Path(path)
    try:
        data = read_yaml(p, "changes file")
    except ConfigError as e:
        return SourceError(SOURCE, "file", "config" if "cannot read" in str(e) else "error", str(e))
    if isinstance(data, dict):
        data = data.get("changes", [])
    if not isinstance(data, list):
        return SourceError(SOURCE, "file", "error", f"{p} should hold a list of changes")
    return _frame(data, f"file:{p.name}")


def from_url(url: str, *, timeout_s: float = 5.0) -> pd.DataFrame | SourceError:
    """An HTTP endpoint returning a JSON list of changes (or ``{"changes": [...]}``)."""
    import httpx

    try:
        r = httpx.get(url, timeout=timeout_s)
        r.raise_for_status()
        data = r.json()
    except httpx.HTTPError as e:
        return SourceError(SOURCE, "url", "unreachable", f"{type(e).__name__}: {e}")
    except ValueError:
        return SourceError(SOURCE, "url", "error", "the changes endpoint did not return JSON")
    if isinstance(data, dict):
        data = data.get("changes", [])
    return _frame(data if isinstance(data, list) else [], f"url:{redact(url)}")


_VERSION = re.compile(r"\bv?\d+\.\d+(?:\.\d+)?(?:[-+][\w.]+)?\b")


def from_git(repo: str | Path, *, since: datetime, until: datetime, services: list[str] | None = None,
             max_commits: int = 500) -> pd.DataFrame | SourceError:
    """Commits of a deploy repository in the window: service from the subject (or the top folder changed),
    version from a ``vX.Y.Z`` in the subject, kind ``rollback`` when the subject says revert/rollback."""
    fmt = "%H%x1f%cI%x1f%s"
    try:
        out = subprocess.run(["git", "-C", str(repo), "log", f"--since={since.isoformat()}",
                              f"--until={until.isoformat()}", f"--max-count={max_commits}", f"--pretty=format:{fmt}",
                              "--name-only"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return SourceError(SOURCE, "git", "error", f"git log failed: {e}")
    if out.returncode != 0:
        return SourceError(SOURCE, "git", "config", f"git log in {repo}: {out.stderr.strip()[:200]}")
    items = []
    for chunk in out.stdout.split("\n\n"):
        lines = [ln for ln in chunk.splitlines() if ln.strip()]
        if not lines or "\x1f" not in lines[0]:
            continue
        sha, when, subject = lines[0].split("\x1f", 2)
        files = lines[1:]
        low = subject.lower()
        service = next((s for s in (services or []) if s in low), "")
        if not service and files:
            tops = {f.split("/", 1)[0] for f in files if "/" in f}
            service = tops.pop() if len(tops) == 1 else ""
        version = _VERSION.search(subject)
        kind = "rollback" if ("revert" in low or "rollback" in low or "roll back" in low) else \
            ("config" if "config" in low else ("migration" if "migrat" in low else "deploy"))
        items.append({"time": when, "service": service, "kind": kind,
                      "version": version.group(0) if version else sha[:10], "description": subject})
    return _frame(items, f"git:{Path(repo).name}")


def load_changes(env: Any, start: datetime, end: datetime) -> pd.DataFrame | SourceError:
    """The environment's change source (``changes: {file|url|git}``), limited to the window (plus an hour before
    it, so a deploy just before the window still lines up)."""
    spec = (env.raw.get("changes") if env is not None else None) or {}
    lead = start - timedelta(hours=1)
    if "file" in spec:
        path = Path(spec["file"])
        if not path.is_absolute() and env.path is not None:
            path = env.path.parent / path
        df = from_file(path)
    elif "url" in spec:
        df = from_url(str(spec["url"]))
    elif "git" in spec:
        df = from_git(spec["git"], since=lead, until=end, services=list((env.services or {}).keys()))
    else:
        return SourceError(SOURCE, "config", "config", "no change source declared",
                           hint="add changes: {file: deploys.yaml} (or url/git) to the environment file")
    if isinstance(df, SourceError):
        return df
    keep = (df["time"] >= pd.Timestamp(lead)) & (df["time"] <= pd.Timestamp(end))
    out = df[keep].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def lined_up(changes: pd.DataFrame | SourceError, onsets: pd.DataFrame, *, before_s: float = 1800.0,
             after_s: float = 120.0) -> pd.DataFrame:
    """Changes that landed from ``before_s`` before to ``after_s`` after each service's error onset, closest
    first; ``same_service`` when the change is to the service whose errors rose."""
    cols = ["service", "onset", "change_time", "change_service", "kind", "version", "description", "lead_s",
            "same_service"]
    if isinstance(changes, SourceError) or changes.empty or onsets.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for o in onsets.itertuples():
        lo, hi = o.onset - pd.Timedelta(seconds=before_s), o.onset + pd.Timedelta(seconds=after_s)
        near = changes[(changes["time"] >= lo) & (changes["time"] <= hi)]
        for c in near.itertuples():
            rows.append({"service": o.service, "onset": o.onset, "change_time": c.time, "change_service": c.service,
                         "kind": c.kind, "version": c.version, "description": c.description,
                         "lead_s": (o.onset - c.time).total_seconds(), "same_service": c.service == o.service})
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    df["_rank"] = (~df["same_service"]).astype(int) * 1e9 + df["lead_s"].abs()
    return df.sort_values("_rank", ignore_index=True).drop(columns="_rank")
