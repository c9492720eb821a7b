"""What ``runbook`` prints: verdicts, results, comparisons and records as text for people or JSON for scripts.
Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org); piped output is plain."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .findings import Finding, Severity, counts, worst

# ANSI styles per severity (the charts' colours are Severity.colour; a terminal has its own palette)
_STYLE: dict[Severity, dict[str, Any]] = {
    Severity.CRIT: {"fg": "red", "bold": True}, Severity.ERROR: {"fg": "magenta", "bold": True},
    Severity.WARN: {"fg": "yellow"}, Severity.OK: {"fg": "green"}, Severity.INFO: {},
}


def colour_enabled() -> bool:
    """True when stdout is a terminal and ``NO_COLOR`` is unset or empty."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, severity: Severity | None) -> str:
    """``text`` in ``severity``'s terminal style when colour is enabled; unchanged otherwise."""
    if severity is None or not colour_enabled():
        return text
    return click.style(text, **_STYLE[severity])


def label(severity: Severity) -> str:
    """``[CRIT ]``-style tag, coloured on a terminal."""
    return paint(f"[{severity.value.upper():5}]", severity)


def emit_json(value: Any) -> None:
    """One JSON document on stdout (``--json``): for scripts and pipelines, not for reading."""
    print(json.dumps(value, indent=2, default=str))


def verdict(findings: list[Finding]) -> str:
    """What the findings add up to, in one line; a completed run is not an all-clear unless its checks say so."""
    tally = counts(findings)
    active = [f for f in findings if f.severity.active]
    if not findings:
        return "Verdict: UNKNOWN: no check reported anything"
    if Severity.CRIT.value in tally:
        return f"Verdict: CRITICAL: {len(active)} to act on; worst: {active[0].title}"
    if Severity.ERROR.value in tally:
        more = len(active) - tally["error"]
        return (f"Verdict: INCOMPLETE: {tally['error']} check(s) could not collect their evidence, so what they cover "
                f"is unknown{'; ' + str(more) + ' more to act on' if more else ''}")
    if Severity.WARN.value in tally:
        return f"Verdict: WARNING: {len(active)} to act on; worst: {active[0].title}"
    return f"Verdict: nothing wrong found by the {tally.get('ok', 0) + tally.get('info', 0)} checks that reported"


def painted_verdict(findings: list[Finding]) -> str:
    """The verdict line in the worst finding's colour; uncoloured when nothing reported (UNKNOWN is not ok)."""
    return paint(verdict(findings), worst(findings) if findings else None)


def result_json(result: Any) -> dict[str, Any]:
    """A run's outcome as ``--json`` prints it."""
    return {"notebook": result.record.name.split("-", 1)[-1], "incident": result.record.parent.name,
            "status": result.status, "reason": result.reason, "verdict": verdict(result.findings),
            "worst": result.worst.value, "counts": counts(result.findings),
            "findings": [f.to_dict() for f in result.findings], "record": str(result.record),
            "report": str(result.report), "remote": result.remote or None}


def print_result(result: Any) -> None:
    """Counts by severity and the verdict first, then each finding to act on with its next action, then the record.
    "Run completed" says the notebook finished; the verdict says what it found."""
    fs = result.findings
    nb, incident = result.record.name.split("-", 1)[-1], result.record.parent.name
    state = "run completed" if result.status == "ok" else paint(f"run FAILED: {result.reason}", Severity.ERROR)
    print(f"{nb} for incident {incident}: {state}")
    print("Found: " + (", ".join(f"{n} {sev}" for sev, n in counts(fs).items()) or "no findings"))
    print(painted_verdict(fs))
    for f in fs:
        if f.severity.active:
            print(f"{label(f.severity)} {f.title}\n        -> {f.action}")
    print(f"record: {result.record.as_uri()}")
    print(f"report: {result.report.as_uri()}")
    if result.remote:
        print(f"archived to: {result.remote}/")


def show_result(result: Any, as_json: bool) -> None:
    """``--json`` document or the text summary."""
    if as_json:
        emit_json(result_json(result))
    else:
        print_result(result)


def print_compare(df: Any) -> None:
    """One line per change between two runs; why an unknown is not resolved; how a persisting finding's evidence
    moved."""
    if df.empty:
        print("no findings to act on in either run")
    for r in df.itertuples():
        print(f"{r.change:10} {r.before:>5} -> {r.after:<5} {r.title}")
        if r.change == "unknown":
            print(f"           not known to be resolved: {r.why}")
        if r.change == "persisting" and r.evidence_before != r.evidence_after:
            print(f"           before: {_short(r.evidence_before)}\n           after:  {_short(r.evidence_after)}")


def _short(ev: object) -> str:
    text = json.dumps(ev, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def record_json(r: Any) -> dict[str, Any]:
    """An archived record's identity and outcome, for ``archive list/show --json``."""
    return {"run_id": r.run_id, "incident": r.incident_id, "notebook": r.notebook, "status": r.status,
            "started_at": r.started_at.isoformat(), "worst": r.run.get("worst_severity"), "mode":
            r.run.get("mode", "papermill"), "path": str(r.path)}


def print_record(r: Any) -> None:
    """``archive show``: the record, its verdict and each finding with the next action for active ones."""
    print(f"{r.run_id}: {r.notebook} for {r.incident_id}, {r.status}, started {r.started_at:%Y-%m-%d %H:%M:%S} UTC")
    if r.run.get("reason"):
        print(f"reason: {r.run['reason']}")
    print(painted_verdict(r.findings()))
    for f in r.findings():
        action = f"\n        -> {f.action}" if f.action and f.severity.active else ""
        print(f"{label(f.severity)} {f.title}{action}")
    print(f"report: {r.path / 'report.html'}")
