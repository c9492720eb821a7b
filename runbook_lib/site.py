"""A static HTML index of the archive that a retro attendee opens without Python: incidents, their runs with
severity badges, the incident's timeline in incident time (changes, onsets, alerts, findings, resolutions, runs,
notes), and its documents (status updates, the retro draft) rendered from Markdown; each run links to its report."""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from . import archive, timeline
from .findings import SEVERITY_COLOURS

BADGE = {**SEVERITY_COLOURS, "failed": SEVERITY_COLOURS["error"]}
MARKDOWN = None
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:6px;text-align:left;
vertical-align:top}.b{color:#fff;border-radius:4px;padding:1px 7px;font-size:.85em;font-weight:600}
a{color:#1565c0}small{color:#666}
"""


def _badge(sev: str) -> str:
    return f'<span class="b" style="background:{BADGE.get(sev, "#757575")}">{html.escape(sev.upper())}</span>'


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def build(root: Path, out: Path) -> Path:
    """Write the site into ``out`` (reports copied beside their pages) and return its index.html."""
    out.mkdir(parents=True, exist_ok=True)
    recs = archive.records(root)
    incidents: dict[str, list[archive.Record]] = {}
    for r in recs:
        incidents.setdefault(r.incident_id, []).append(r)
    rows = []
    for inc, runs in sorted(incidents.items(), key=lambda kv: kv[1][-1].started_at, reverse=True):
        worst = min((r.worst for r in runs), key=lambda s: s.rank).value
        rows.append(f"<tr><td><a href='{html.escape(inc)}/index.html'>{html.escape(inc)}</a></td>"
                    f"<td>{_badge(worst)}</td><td>{len(runs)}</td>"
                    f"<td>{runs[0].started_at:%Y-%m-%d %H:%M} to {runs[-1].started_at:%H:%M} UTC</td></tr>")
        _incident_page(root, inc, runs, out / inc)
    body = (f"<h1>Incident records</h1><p><small>{len(recs)} runs in {len(incidents)} incidents, "
            f"built from {html.escape(str(root))}</small></p>"
            "<table><tr><th>incident</th><th>worst</th><th>runs</th><th>when</th></tr>" + "".join(rows) + "</table>")
    index = out / "index.html"
    index.write_text(_page("Incident records", body))
    return index


def _document(doc: Path, incident_dir: Path, out: Path) -> str:
    """Copy a Markdown document beside its HTML rendering (escaped: no raw HTML passes); the list item linking it."""
    global MARKDOWN
    import mistune

    rel = os.path.relpath(doc, incident_dir)
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(doc, target)
    MARKDOWN = MARKDOWN or mistune.create_markdown(escape=True, plugins=["table", "task_lists"])
    page = target.with_suffix(".html")
    page.write_text(_page(rel, f"<p><a href='{'../' * rel.count('/')}index.html'>incident</a></p>"
                               + str(MARKDOWN(doc.read_text(errors="replace")))))
    rel_html = os.path.relpath(page, out)
    return f"<li><a href='{html.escape(rel_html)}'>{html.escape(rel)}</a> (<a href='{html.escape(rel)}'>Markdown</a>)</li>"


def _incident_page(root: Path, incident: str, runs: list[archive.Record], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run_rows = []
    for r in runs:
        target = out / r.path.name
        target.mkdir(exist_ok=True)
        for name in ("report.html", "findings.json", "run.json"):
            src = r.path / name
            if src.is_file():
                shutil.copyfile(src, target / name)
        act = [f for f in r.findings() if f.severity.active]
        items = [f"{_badge(f.severity.value)} {html.escape(f.title)}" for f in act]
        top = "<br>".join(items[:4]) + (f"<details><summary>{len(items) - 4} more</summary>{'<br>'.join(items[4:])}"
                                         "</details>" if len(items) > 4 else "")
        status = _badge("failed") if r.status != "ok" else _badge(r.worst.value)
        run_rows.append(f"<tr><td>{r.started_at:%H:%M:%S}</td><td><a href='{html.escape(r.path.name)}/report.html'>"
                        f"{html.escape(r.notebook)}</a></td><td>{status}</td><td>{top or '<small>nothing to act on</small>'}"
                        "</td></tr>")
    records = [r for r in runs if r.notebook != "retro"]
    events = timeline.incident_events(records, archive.read_notes(root, incident))
    ev_rows = "".join(
        f"<tr><td>{e.at:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(e.kind)}</td>"
        f"<td>{_badge(e.severity) if e.severity else ''} {html.escape(e.what)}</td></tr>" for e in events.itertuples())
    tl = timeline.finding_timeline(records)
    tl_rows = "".join(
        f"<tr><td>{_badge(t.worst)}</td><td>{html.escape(t.title)}<br><small>{html.escape(t.key)}</small></td>"
        f"<td>{t.first_seen:%H:%M:%S}</td><td>{t.last_seen:%H:%M:%S}</td>"
        f"<td>{'' if t.resolved_at != t.resolved_at else f'{t.resolved_at:%H:%M:%S}'}</td></tr>"
        for t in tl.itertuples())
    extras = [_document(doc, root / incident, out) for doc in
              sorted((root / incident).glob("*.md")) + sorted((root / incident).glob("status-updates/*.md"))]
    start = timeline.onset(events)
    body = (f"<p><a href='../index.html'>all incidents</a></p><h1>{html.escape(incident)}</h1>"
            + (f"<p>First sign in the evidence: {start:%Y-%m-%d %H:%M} UTC</p>" if start else "")
            + "<h2>Timeline (UTC)</h2><table><tr><th>when</th><th>what</th><th></th></tr>"
            + (ev_rows or "<tr><td colspan=3>no events</td></tr>") + "</table>"
            "<h2>Runs</h2><table><tr><th>UTC</th><th>notebook</th><th>result</th><th>findings to act on</th></tr>"
            + "".join(run_rows) + "</table><h2>Findings: first seen, last seen, resolved</h2>"
            "<table><tr><th></th><th>finding</th><th>first seen</th><th>last seen</th><th>resolved</th></tr>"
            + (tl_rows or "<tr><td colspan=5>no findings to act on</td></tr>") + "</table>"
            + (f"<h2>Documents</h2><ul>{''.join(extras)}</ul>" if extras else ""))
    (out / "index.html").write_text(_page(f"Incident {incident}", body))
