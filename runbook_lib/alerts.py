"""Alert payloads -> (notebook, incident, parameters): Prometheus Alertmanager (webhook version 4), Grafana
alerting, PagerDuty v3 webhooks. Routing rules live in ``params/alerts.yaml``."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2 import meta as jinja_meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from .archive import validate_incident_id
from .config import project_dir, read_yaml
from .errors import ConfigError, RunbookError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PayloadError(RunbookError):
    """A payload that is not a webhook we understand."""


@dataclass(frozen=True)
class Alert:
    """One alert, whatever sent it."""

    source: str                      # alertmanager | grafana | pagerduty
    status: str                      # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    starts_at: str = ""
    incident_hint: str = ""          # PagerDuty's incident id

    def context(self) -> dict[str, Any]:
        return {"labels": self.labels, "annotations": self.annotations, "fingerprint": self.fingerprint,
                "source": self.source, "status": self.status}

    def field(self, name: str) -> str | None:
        if name in ("source", "status", "fingerprint"):
            return getattr(self, name)
        return self.labels.get(name)


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


MAX_DEPTH = 20  # no webhook format nests deeper; a deeper body is refused before it is parsed


def parse_payload(body: bytes | str | dict[str, Any]) -> list[Alert]:
    """Alertmanager, Grafana or PagerDuty v3 JSON -> alerts. A :class:`PayloadError` says what is wrong."""
    if isinstance(body, (bytes, str)):
        if _depth(body if isinstance(body, bytes) else body.encode()) > MAX_DEPTH:
            raise PayloadError(f"payload is not JSON we accept (nested deeper than {MAX_DEPTH} levels)")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise PayloadError(f"payload is not JSON ({str(e)[:120]})") from None
    else:
        data = body
    if not isinstance(data, dict):
        raise PayloadError("payload is not a JSON object")
    if "event" in data and isinstance(data["event"], dict):
        return [_pagerduty(data["event"])]
    if isinstance(data.get("alerts"), list):
        source = "grafana" if ("orgId" in data or "title" in data and "version" in data and data.get("version") != "4") \
            else "alertmanager"
        if source == "alertmanager" and str(data.get("version", "4")) != "4":
            raise PayloadError(f"Alertmanager webhook version {data.get('version')} is not supported (expected 4)")
        common = _strings(data.get("commonLabels"), "commonLabels")
        out = []
        for a in data["alerts"]:
            if not isinstance(a, dict):
                raise PayloadError("an alert in 'alerts' is not an object")
            labels = {**common, **_strings(a.get("labels"), "labels")}
            status = str(a.get("status") or data.get("status") or "firing").lower()
            if status not in ("firing", "resolved"):
                raise PayloadError(f"alert status {status!r} is neither firing nor resolved")
            out.append(Alert(source, status, labels, _strings(a.get("annotations"), "annotations"),
                             str(a.get("fingerprint") or _fingerprint(labels))[:128], str(a.get("startsAt", ""))[:64]))
        if not out:
            raise PayloadError("payload has no alerts")
        return out
    raise PayloadError("not an Alertmanager, Grafana or PagerDuty v3 webhook payload")


def _depth(body: bytes) -> int:
    """How deeply a JSON text nests (brackets outside strings), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _strings(value: Any, what: str) -> dict[str, str]:
    """A label or annotation map as strings (absent is empty); any other shape is a :class:`PayloadError`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object of name: value, not {type(value).__name__}")
    return {str(k)[:256]: (v if isinstance(v, str) else json.dumps(v))[:4096] for k, v in value.items()}


def _pagerduty(event: dict[str, Any]) -> Alert:
    kind = str(event.get("event_type", ""))
    d = event.get("data") or {}
    if not kind.startswith("incident.") or not isinstance(d, dict) or not d.get("id"):
        raise PayloadError(f"PagerDuty event {kind or '?'} is not an incident event with data.id")
    status = "resolved" if kind == "incident.resolved" else "firing"
    service = (d.get("service") or {}).get("summary", "") if isinstance(d.get("service"), dict) else ""
    labels = {"alertname": str(d.get("title", "")), "service": str(service), "event_type": kind,
              "urgency": str(d.get("urgency", "")), "source": "pagerduty"}
    return Alert("pagerduty", status, labels, {"title": str(d.get("title", ""))}, str(d["id"]),
                 str(event.get("occurred_at", "")), incident_hint=str(d["id"]))


# --------------------------------------------------------------------------- routing

@dataclass(frozen=True)
class Route:
    name: str
    match: dict[str, str]
    notebook: str
    environment: str
    parameters: dict[str, Any]
    incident: str = ""

    def matches(self, alert: Alert) -> bool:
        for key, want in self.match.items():
            have = alert.field(key)
            if have is None:
                return False
            if want.startswith("~"):
                if not re.search(want[1:], have):
                    return False
            elif have != want:
                return False
        return True


@dataclass(frozen=True)
class Job:
    """What to run for one alert."""

    route: str
    notebook: str
    incident_id: str
    environment: str
    parameters: dict[str, Any]
    alert: Alert

    @property
    def dedupe_key(self) -> str:
        return f"{self.route}:{self.alert.fingerprint}"


_TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
TEMPLATE_NAMES = frozenset({"labels", "annotations", "fingerprint", "source", "status"})  # what Alert.context() has


def render(template: str, alert: Alert) -> str:
    """Render a route template (``{{ labels.queue }}``, ``{{ labels.env | default("prod") }}``) in Jinja2's
    sandbox; a label that is missing or empty, or anything the sandbox refuses, is a :class:`PayloadError`."""
    ctx = {k: ({lk: lv for lk, lv in v.items() if lv not in (None, "")} if isinstance(v, dict) else v)
           for k, v in alert.context().items()}
    try:
        return _TEMPLATES.from_string(template).render(**ctx)
    except (UndefinedError, SecurityError) as e:
        raise PayloadError(f"template {template!r}: {e.message or type(e).__name__} in this alert") from None
    except TemplateError as e:
        raise PayloadError(f"template {template!r}: {type(e).__name__}: {e.message}") from None


def check_template(template: str, where: str) -> None:
    """A :class:`ConfigError` naming ``where`` when ``template`` is not valid Jinja2 (caught when routes load)."""
    try:
        _TEMPLATES.parse(template)
    except TemplateSyntaxError as e:
        raise ConfigError(f"{where}: template {template!r} is not valid: {e.message}") from None


def load_routes(path: str | Path | None = None) -> list[Route]:
    """Read and validate ``params/alerts.yaml`` (or ``path``)."""
    from .models import RoutesFile, validate

    p = Path(path) if path else project_dir("params") / "alerts.yaml"
    data = read_yaml(p, "alert routes file") or {}

    model = validate(RoutesFile, data, p)  # unknown keys (enviroment:) name the nearest valid key
    routes = []
    for i, r in enumerate(model.routes):  # type: ignore[attr-defined]
        for v in r.match.values():
            if v.startswith("~"):
                try:
                    re.compile(v[1:])
                except re.error as e:
                    raise ConfigError(f"{p.name}: routes.{i}.match: bad regular expression {v!r}: {e}") from None
        for where, template in [("incident", r.incident), *((f"parameters.{k}", v) for k, v in r.parameters.items()
                                                            if isinstance(v, str))]:
            check_template(template, f"{p.name}: routes.{i}.{where}")
        routes.append(Route(r.name or f"route-{i}", dict(r.match), r.notebook, r.environment, dict(r.parameters),
                            r.incident))
    return routes


def check_routes(routes: list[Route]) -> list[str]:
    """Problems a route would hit at run time: unknown notebook, parameter or environment, bad template."""
    from .config import resolve_environment_path
    from .runner import notebook_parameters, notebook_path

    problems = []
    for r in routes:
        try:
            declared = notebook_parameters(notebook_path(r.notebook))
        except RunbookError as e:
            problems.append(f"route {r.name}: {e}")
            continue
        for k in r.parameters:
            if k not in declared or k == "incident_id":
                problems.append(f"route {r.name}: notebook {r.notebook} has no parameter {k!r}")
        try:
            resolve_environment_path(r.environment)
        except RunbookError as e:
            problems.append(f"route {r.name}: {e}")
        for text in [r.incident, *[v for v in r.parameters.values() if isinstance(v, str)]]:
            for name in sorted(jinja_meta.find_undeclared_variables(_TEMPLATES.parse(text)) - TEMPLATE_NAMES):
                problems.append(f"route {r.name}: template {text!r} uses {name!r}; alerts have "
                                f"{', '.join(sorted(TEMPLATE_NAMES))}")
    return problems


def route(alert: Alert, routes: list[Route]) -> Job | None:
    """The job for an alert (first matching route), or None when no route matches."""
    for r in routes:
        if r.matches(alert):
            incident = render(r.incident, alert) if r.incident else (alert.incident_hint or
                                                                     f"alert-{alert.fingerprint}")
            incident = _UNSAFE.sub("-", incident).strip("-.")[:120] or f"alert-{alert.fingerprint}"
            validate_incident_id(incident)
            params = {k: render(v, alert) if isinstance(v, str) else v for k, v in r.parameters.items()}
            return Job(r.name, r.notebook, incident, r.environment, params, alert)
    return None


# --------------------------------------------------------------------------- authentication

def verify_hmac(body: bytes, header: str, secret: str) -> bool:
    """``sha256=<hex>`` HMAC-SHA256 of the raw body (GitHub/Grafana style)."""
    want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(header) and hmac.compare_digest(header.strip(), want)


def verify_pagerduty(body: bytes, header: str, secret: str) -> bool:
    """PagerDuty v3: ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`` (one per active signing secret)."""
    want = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(sig.strip(), want) for sig in (header or "").split(",") if sig.strip())
