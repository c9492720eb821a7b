"""Typed configuration: environment files and alert routes as pydantic models that forbid unknown keys.

A misspelt key (``postgress:``, ``enviroment:``) is an error that names the file, the key's path and the nearest
valid key, instead of a setting silently ignored. ``runbook schema env|alerts`` prints the JSON Schema so editors
validate the YAML as it is typed.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

LogFormat = Literal["auto", "json", "pino", "bunyan", "logrus", "gotrue", "logfmt", "text"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresTarget(Strict):
    dsn_env: str = Field(description="name of the environment variable holding the DSN (never the DSN itself)")


class RedisTarget(Strict):
    url_env: str = Field(description="name of the environment variable holding the Redis URL")


class Supabase(Strict):
    url: str | None = Field(None, description="https://<ref>.supabase.co")
    anon_key_env: str | None = Field(None, description="variable holding the anon key")
    status_page: str | None = Field(None, description="Statuspage URL, e.g. https://status.supabase.com")


class Loki(Strict):
    url: str
    query: str = Field(description="a LogQL selector, e.g. '{app=\"identity\"}'")
    org_env: str | None = Field(None, description="variable holding X-Scope-OrgID")
    org: str | None = None


class Logs(Strict):
    files: str | None = Field(None, description="a glob; rotated .gz files included")
    format: LogFormat = "auto"
    loki: Loki | None = None


class Service(Strict):
    url: str | None = None
    health: str | None = Field(None, description="health path, e.g. /health")
    logs: Logs | None = None
    requests: Logs | None = Field(None, description="the access log of the proxy in front of it (nginx/ingress), "
                                                    "when the service logs no requests itself")
    role: str | None = Field(None, description="what the service does: auth, web, api, worker (default: from its "
                                               "name: identity -> auth, portal -> web, worker -> worker)")


class Changes(Strict):
    file: str | None = Field(None, description="a YAML list of {time, service, kind, version, description}")
    url: str | None = None
    git: str | None = None


class Prometheus(Strict):
    url: str = Field(description="the server's base URL, e.g. http://prometheus:9090")
    headers_env: str | None = Field(None, description="variable holding request headers as a JSON object, e.g. "
                                                      "'{\"Authorization\": \"Bearer ...\"}'")
    queries: dict[str, str] = Field(default_factory=dict, description="PromQL by query name, overriding the "
                                    "defaults (pg_connections, queue_depth, http_error_ratio, ...) or adding one")


class EnvironmentFile(Strict):
    """An environment: targets, and the names of the variables that hold their secrets."""

    postgres: PostgresTarget | None = None
    redis: RedisTarget | None = None
    supabase: Supabase | None = None
    services: dict[str, Service] = Field(default_factory=dict)
    changes: Changes | None = None
    prometheus: Prometheus | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)


class Route(Strict):
    """One alert route: which alerts, what to run, for which incident."""

    name: str | None = None
    match: dict[str, str] = Field(min_length=1, description="label (or source/status/fingerprint) -> value; ~regex")
    notebook: str
    environment: str = "local"
    parameters: dict[str, Any] = Field(default_factory=dict)
    incident: str = Field("", description="incident id template, e.g. 'queue-{{ labels.queue }}'")


class RoutesFile(Strict):
    routes: list[Route] = Field(min_length=1)


SCHEMAS: dict[str, type[Strict]] = {"env": EnvironmentFile, "alerts": RoutesFile}


def validate(model: type[Strict], data: Any, path: Path | str) -> Strict:
    """``data`` as ``model``, or a one-line :class:`ConfigError` naming the file, the key path and, for an unknown
    key, the nearest valid one."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: err.get("type") != "extra_forbidden")  # a typo explains the rest
        raise ConfigError(f"{path}: {describe(model, errors[0])}") from None


def describe(model: type[Strict], err: Any) -> str:
    loc = [str(x) for x in err.get("loc", ())]
    where = ".".join(loc) or "(top level)"
    if err.get("type") == "extra_forbidden":
        known = known_keys(model, loc[:-1])
        near = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else (f"; known: {', '.join(known)}" if known else "")
        return f"unknown key '{where}'{hint}"
    if err.get("type") == "missing":
        return f"'{where}' is required"
    return f"'{where}': {err.get('msg', 'invalid')}"


def known_keys(model: Any, loc: list[str]) -> list[str]:
    """The keys valid at ``loc`` inside ``model`` (walking nested models, dicts, lists and optionals)."""
    kind: Any = model
    for part in loc:
        kind = _unwrap(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(part)
            if field is None:
                return []
            kind = field.annotation
        elif typing.get_origin(kind) in (dict, list):
            kind = typing.get_args(kind)[-1]
        else:
            return []
    kind = _unwrap(kind)
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _unwrap(kind: Any) -> Any:
    if typing.get_origin(kind) in (Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of ``env`` or ``alerts`` files."""
    if name not in SCHEMAS:
        raise ConfigError(f"unknown schema {name!r} (known: {', '.join(SCHEMAS)})")
    return SCHEMAS[name].model_json_schema()
