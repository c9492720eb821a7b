"""Project paths, environment files (targets and the names of secret variables), time windows."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .redact import register_secret

PG_DSN_OVERRIDE = "RUNBOOK_PG_DSN"
REDIS_URL_OVERRIDE = "RUNBOOK_REDIS_URL"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def project_dir(kind: str) -> Path:
    """Directory of ``params`` or ``notebooks``: ``$RUNBOOK_<KIND>_DIR``, else next to the package, else cwd."""
    override = os.environ.get(f"RUNBOOK_{kind.upper()}_DIR")
    if override:
        return Path(override).resolve()
    beside = _REPO_ROOT / kind
    if beside.is_dir():
        return beside
    return (Path.cwd() / kind).resolve()


@dataclass(frozen=True)
class Environment:
    """Targets of one environment. Secrets are never stored here, only the names of variables holding them."""

    name: str
    path: Path | None
    postgres: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def secret(self, var_name: str) -> str | None:
        """Value of the environment variable ``var_name``, registered for redaction."""
        value = os.environ.get(var_name)
        register_secret(value)
        return value

    def postgres_dsn(self) -> tuple[str | None, str]:
        """(DSN or None, where it came from). ``RUNBOOK_PG_DSN`` overrides the file's target."""
        if os.environ.get(PG_DSN_OVERRIDE):
            return self.secret(PG_DSN_OVERRIDE), f"${PG_DSN_OVERRIDE}"
        var = self.postgres.get("dsn_env")
        if not var:
            return None, f"environment '{self.name}' declares no postgres target (postgres.dsn_env)"
        value = self.secret(var)
        if not value:
            return None, f"${var} (named by postgres.dsn_env in environment '{self.name}') is not set"
        return value, f"${var}"

    def redis_url(self) -> tuple[str | None, str]:
        """(URL or None, where it came from). ``RUNBOOK_REDIS_URL`` overrides the file's target."""
        if os.environ.get(REDIS_URL_OVERRIDE):
            return self.secret(REDIS_URL_OVERRIDE), f"${REDIS_URL_OVERRIDE}"
        var = self.redis.get("url_env")
        if not var:
            return None, f"environment '{self.name}' declares no redis target (redis.url_env)"
        value = self.secret(var)
        if not value:
            return None, f"${var} (named by redis.url_env in environment '{self.name}') is not set"
        return value, f"${var}"

    def secret_values(self) -> list[str]:
        """Every secret value this environment can resolve right now (for scrubbing outputs)."""
        names = {PG_DSN_OVERRIDE, REDIS_URL_OVERRIDE}
        names.update(_secret_var_names(self.raw))
        values = [os.environ[n] for n in sorted(names) if os.environ.get(n)]
        for v in values:
            register_secret(v)
        return values


def _secret_var_names(node: Any) -> set[str]:
    """Names of environment variables referenced by ``*_env`` keys anywhere in the file."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                found.add(v)
            else:
                found |= _secret_var_names(v)
    elif isinstance(node, list):
        for v in node:
            found |= _secret_var_names(v)
    return found


_SECRET_KEYS = re.compile(r"(?i)^(password|passwd|secret|token|api_key|apikey|dsn|url_with_password|anon_key|service_key)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def list_environments() -> list[str]:
    """Names of the environment files under ``params/environments``."""
    d = project_dir("params") / "environments"
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_environment_path(name_or_path: str) -> Path:
    """Path of the environment file for a name under ``params/environments`` or a path."""
    if not name_or_path:
        raise ConfigError("environment is empty: give a name under params/environments/ or a path")
    looks_like_path = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        p = Path(name_or_path).expanduser()
        if not p.is_file():
            raise ConfigError(f"environment file not found: {p}")
        return p.resolve()
    if not _NAME_RE.match(name_or_path):
        raise ConfigError(f"environment name {name_or_path!r} is not a valid name")
    p = project_dir("params") / "environments" / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(list_environments()) or "none"
        raise ConfigError(f"unknown environment {name_or_path!r} (known: {known})")
    return p


def load_environment(name_or_path: str) -> Environment:
    """Read and validate an environment file; secrets may only be named, never written inline."""
    path = resolve_environment_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _reject_inline_secrets(data, path, [])
    for section in ("postgres", "redis", "services", "thresholds"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
    name = path.stem
    return Environment(
        name=name,
        path=path,
        postgres=dict(data.get("postgres") or {}),
        redis=dict(data.get("redis") or {}),
        services=dict(data.get("services") or {}),
        thresholds=dict(data.get("thresholds") or {}),
        raw=data,
    )


def _reject_inline_secrets(node: Any, path: Path, trail: list[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            key = str(k)
            if _SECRET_KEYS.match(key) and isinstance(v, str) and v:
                where = ".".join(trail + [key])
                raise ConfigError(
                    f"{path}: '{where}' holds a secret inline; name an environment variable instead ({key}_env: VAR)"
                )
            if isinstance(v, str) and re.search(r"://[^:/@\s]+:[^@\s]+@", v):
                where = ".".join(trail + [key])
                raise ConfigError(f"{path}: '{where}' has a password in a URL; use an environment variable")
            _reject_inline_secrets(v, path, trail + [key])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_inline_secrets(v, path, trail + [str(i)])


_RELATIVE = re.compile(r"^\s*-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | datetime, *, now: datetime | None = None) -> datetime:
    """Parse ``now``, a relative offset such as ``-60m``/``-2h``, or ISO 8601 (naive means UTC)."""
    now = now or datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"time {text!r} is not ISO 8601 UTC, 'now', or a relative offset like -60m"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_window(start: str | datetime, end: str | datetime) -> tuple[datetime, datetime]:
    """Resolve an incident window to aware UTC datetimes; start must precede end."""
    now = datetime.now(timezone.utc)
    s, e = parse_time(start, now=now), parse_time(end, now=now)
    if s >= e:
        raise ConfigError(f"window_start {s.isoformat()} is not before window_end {e.isoformat()}")
    return s.astimezone(timezone.utc), e.astimezone(timezone.utc)
