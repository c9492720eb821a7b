"""Project paths, environment files (targets and the names of secret variables), time windows."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .redact import register_secret

PG_DSN_OVERRIDE = "RUNBOOK_PG_DSN"
REDIS_URL_OVERRIDE = "RUNBOOK_REDIS_URL"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def project_dir(kind: str) -> Path:
    """Directory of ``params`` or ``notebooks``: ``$RUNBOOK_<KIND>_DIR``; else a checkout's (next to the package);
    else ``./<kind>`` when there is one; else the copies the installed package ships."""
    override = os.environ.get(f"RUNBOOK_{kind.upper()}_DIR")
    if override:
        return Path(override).resolve()
    for candidate in (_REPO_ROOT / kind, Path.cwd() / kind):
        if candidate.is_dir():
            return candidate.resolve()
    return Path(str(resources.files("runbook_lib") / kind))


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

    def role_of(self, service: str) -> str:
        """What a service does (``services.<name>.role``; else inferred from its name, see :func:`infer_role`)."""
        spec = self.services.get(service) or {}
        return str(spec.get("role") or infer_role(service)) if isinstance(spec, dict) else infer_role(service)

    def services_with_role(self, role: str) -> list[str]:
        """The services that do ``role`` (auth, web, api, worker), in the file's order."""
        return [name for name in self.services if self.role_of(name) == role]

    def secret_values(self) -> list[str]:
        """Every secret value this environment can resolve right now (for scrubbing outputs)."""
        names = {PG_DSN_OVERRIDE, REDIS_URL_OVERRIDE}
        names.update(_secret_var_names(self.raw))
        values = [os.environ[n] for n in sorted(names) if os.environ.get(n)]
        for v in values:
            register_secret(v)
        return values


ROLE_WORDS = (("auth", ("identity", "auth", "login", "sso", "gotrue", "oauth")),
              ("web", ("portal", "web", "frontend", "next", "site", "ui")),
              ("worker", ("worker", "tasks", "jobs", "queue", "sidekiq", "celery")),
              ("api", ("api", "backend", "gateway")))


def infer_role(service: str) -> str:
    """A role from a service's name when the environment file gives none (the playbook's names: identity -> auth,
    portal -> web, worker/tasks -> worker); ``other`` when the name says nothing."""
    low = service.lower()
    return next((role for role, words in ROLE_WORDS if any(w in low for w in words)), "other")


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


def is_environment_path(name_or_path: str) -> bool:
    """True when an ``environment`` value is a file path rather than a name under params/environments."""
    return "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def resolve_environment_path(name_or_path: str) -> Path:
    """Path of the environment file for a name under ``params/environments`` or a path."""
    if not name_or_path:
        raise ConfigError("environment is empty: give a name under params/environments/ or a path")
    if is_environment_path(name_or_path):
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


MAX_YAML_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases: a few aliases nest into billions of nodes (a "YAML bomb")
    that every later walk over the data would expand; runbook's files never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("anchors and aliases (*name) are not supported in runbook files")
        return super().compose_node(parent, index)


def read_yaml(path: Path, what: str = "file") -> Any:
    """A YAML (or JSON) file as data, bounded: at most 1 MiB, text only, no aliases. Anything else is a one-line
    :class:`ConfigError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {len(raw):,} bytes; runbook reads at most {MAX_YAML_BYTES:,} of a {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (holds NUL bytes)")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None


def load_environment(name_or_path: str) -> Environment:
    """Read and validate an environment file; secrets may only be named, never written inline."""
    path = resolve_environment_path(name_or_path)
    data = read_yaml(path, "environment file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _reject_inline_secrets(data, path, [])
    from .models import EnvironmentFile, validate

    validate(EnvironmentFile, data, path)  # unknown keys and wrong shapes: one line naming the nearest valid key
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


_URL = re.compile(r"^https?://[^\s/]+")
_LOG_FORMATS = {"auto", "json", "pino", "bunyan", "logrus", "gotrue", "logfmt", "text"}


def validate_environment(env: Environment) -> tuple[list[str], list[str]]:
    """(errors, warnings) about an environment file's targets: what would make a notebook's source fail."""
    errors: list[str] = []
    warnings: list[str] = []
    raw = env.raw
    for section, key in (("postgres", "dsn_env"), ("redis", "url_env")):
        spec = raw.get(section)
        if spec is None:
            continue
        if not isinstance(spec.get(key), str):
            errors.append(f"{section}.{key}: name the environment variable that holds the secret")
        elif not os.environ.get(spec[key]):
            warnings.append(f"{section}.{key}: ${spec[key]} is not set in this shell")
    services = raw.get("services") or {}
    if not isinstance(services, dict):
        errors.append("services: must be a mapping of service name to settings")
        services = {}
    for name, spec in services.items():
        where = f"services.{name}"
        if not isinstance(spec, dict):
            errors.append(f"{where}: must be a mapping (url, health, logs)")
            continue
        if "url" in spec and not _URL.match(str(spec["url"])):
            errors.append(f"{where}.url: {spec['url']!r} is not an http(s) URL")
        if "health" in spec and not str(spec["health"]).startswith("/"):
            errors.append(f"{where}.health: a path starting with '/', got {spec['health']!r}")
        logs = spec.get("logs")
        if logs is None:
            continue
        if not isinstance(logs, dict) or not ({"files", "loki"} & set(logs)):
            errors.append(f"{where}.logs: give files: GLOB or loki: {{url, query}}")
            continue
        if "files" in logs and str(logs.get("format", "auto")) not in _LOG_FORMATS:
            errors.append(f"{where}.logs.format: one of {', '.join(sorted(_LOG_FORMATS))}")
        if "loki" in logs:
            loki = logs["loki"] if isinstance(logs["loki"], dict) else {}
            if not _URL.match(str(loki.get("url", ""))):
                errors.append(f"{where}.logs.loki.url: an http(s) URL is required")
            if not str(loki.get("query", "")).strip().startswith("{"):
                errors.append(f"{where}.logs.loki.query: a LogQL selector such as '{{app=\"{name}\"}}'")
    supa = raw.get("supabase")
    if supa is not None:
        if not isinstance(supa, dict):
            errors.append("supabase: must be a mapping (url, anon_key_env, status_page)")
        else:
            for key in ("url", "status_page"):
                if key in supa and not _URL.match(str(supa[key])):
                    errors.append(f"supabase.{key}: {supa[key]!r} is not an http(s) URL")
            if "url" in supa and not supa.get("anon_key_env"):
                errors.append("supabase.anon_key_env: name the variable that holds the anon key")
            elif supa.get("anon_key_env") and not os.environ.get(str(supa["anon_key_env"])):
                warnings.append(f"supabase.anon_key_env: ${supa['anon_key_env']} is not set in this shell")
    changes = raw.get("changes")
    if changes is not None:
        given = [k for k in ("file", "url", "git") if isinstance(changes, dict) and k in changes]
        if len(given) != 1:
            errors.append("changes: give exactly one of file, url or git")
        elif given[0] == "file":
            p = Path(changes["file"])
            p = p if p.is_absolute() or env.path is None else env.path.parent / p
            if not p.is_file():
                errors.append(f"changes.file: {p} does not exist")
        elif given[0] == "url" and not _URL.match(str(changes["url"])):
            errors.append(f"changes.url: {changes['url']!r} is not an http(s) URL")
        elif given[0] == "git" and not (Path(changes["git"]) / ".git").exists():
            errors.append(f"changes.git: {changes['git']} is not a git repository")
    return errors, warnings
