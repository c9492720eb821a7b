"""A notebook executed elsewhere (papermill alone, Airflow's PapermillOperator, nbclient) made into a record.

The notebook's report displays its findings as JSON (``FINDINGS_MIME``) beside its HTML table, so the executed
file carries them: the last such output is what its checks concluded, as the run left it. Parameters come from
papermill's metadata over the notebook's declared defaults. A run that stopped on an error becomes a ``failed``
record holding the findings made before it. The record is sealed as ``runbook run`` seals its own (rendering,
findings.json, scrubbing, hashes, run.json with ``mode: recorded``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from .errors import RunbookError
from .findings import FINDINGS_MIME, Finding
from .runner import Provenance, RunResult, archive_executed


def reported_findings(nb: Any) -> dict[str, Any] | None:
    """The last findings payload the notebook's outputs hold (incident_id, notebook, findings), or None."""
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(FINDINGS_MIME)
            if isinstance(payload, dict) and isinstance(payload.get("findings"), list):
                found = payload
    return found


def run_failure(nb: Any) -> str:
    """One line naming the cell error the run stopped on ("" when every cell completed)."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:300]
    return ""


def run_parameters(nb: Any) -> dict[str, Any]:
    """The notebook's declared defaults (its ``parameters`` cell), overlaid with what papermill injected."""
    declared: dict[str, Any] = {}
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            declared.update(_literal_assignments(cell.source))
    injected = nb.metadata.get("papermill", {}).get("parameters") or {}
    return {**declared, **injected}


def _literal_assignments(source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def record_executed(path: str | os.PathLike[str], *, incident_id: str | None = None, notebook: str | None = None,
                    archive_dir: str | os.PathLike[str] | None = None, command: str = "",
                    alert: dict[str, Any] | None = None) -> RunResult:
    """Make the executed notebook at ``path`` a record of ``incident_id`` (default: the incident its report
    named); ``alert``, the alert behind the run, goes into run.json as an alert run's does. A notebook without a
    runbook report's findings is refused: it would be a record that says nothing."""
    import nbformat

    source = Path(path)
    try:
        nb = nbformat.read(source, as_version=4)
    except (OSError, ValueError) as e:
        raise RunbookError(f"cannot read {source}: {type(e).__name__}: {str(e)[:120]}") from None
    payload = reported_findings(nb)
    if payload is None:
        raise RunbookError(f"{source} holds no runbook findings: it was not executed, its outputs were cleared, or "
                           "it is not a runbook notebook")
    findings = [Finding.from_dict(d) for d in payload["findings"]]
    incident = incident_id or str(payload.get("incident_id") or "")
    if not incident:
        raise RunbookError("the notebook names no incident: pass --incident ID")
    name = notebook or str(payload.get("notebook") or "") or _papermill_input(nb) or source.stem
    failure = run_failure(nb)
    provenance = Provenance(mode="recorded", command=command or f"runbook record {source.name}",
                            status="failed" if failure else "ok", reason=failure,
                            fields={"alert": alert} if alert else {})
    return archive_executed(source, incident, name, findings, run_parameters(nb), archive_dir, provenance)


def read_alert(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The alert a run was handed with (a JSON object, as the receiver spooled it), for ``runbook record --alert``."""
    import json

    try:
        alert = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunbookError(f"--alert {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(alert, dict):
        raise RunbookError(f"--alert {path}: expected a JSON object")
    return alert


def _papermill_input(nb: Any) -> str:
    input_path = nb.metadata.get("papermill", {}).get("input_path") or ""
    return Path(str(input_path)).stem if input_path else ""
