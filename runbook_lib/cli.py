"""``runbook``: run, list and demo the diagnostic notebooks. Errors are one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RunbookError

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"runbook: error: {message} (see runbook --help)\n")


class _ParameterAction(argparse.Action):
    """``-p KEY=VALUE`` or, as papermill takes it, ``-p KEY VALUE``; repeatable, kept in order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if len(values) == 1 and "=" in values[0]:
            key, _, value = values[0].partition("=")
        elif len(values) == 2 and "=" not in values[0]:
            key, value = values
        else:
            parser.error(f"-p {' '.join(values)}: expected KEY=VALUE or KEY VALUE")
        if not key.strip():
            parser.error(f"-p {' '.join(values)}: the parameter has no name")
        getattr(namespace, self.dest).append((key.strip(), value))


def _add_parameters(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--parameter", dest="p", nargs="+", action=_ParameterAction, default=[],
                   metavar="KEY[=VALUE]", help="notebook parameter, KEY=VALUE or KEY VALUE (repeatable; wins over -f)")
    p.add_argument("-f", "--parameters-file", metavar="PARAMS.yaml",
                   help="a YAML mapping of parameters, typed as written (as papermill's -f)")


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    """``-f`` file's mapping, then each ``-p`` over it (strings, converted to the declared type by the runner)."""
    from .config import read_yaml

    out: dict[str, Any] = {}
    if args.parameters_file:
        loaded = read_yaml(Path(args.parameters_file), "parameters file")
        if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
            raise RunbookError(f"{args.parameters_file}: expected a mapping of parameter names to values")
        out.update(loaded)
    out.update(args.p)
    return out


def _emit_json(value: Any) -> None:
    """One JSON document on stdout (``--json``): for scripts and pipelines, not for reading."""
    import json

    print(json.dumps(value, indent=2, default=str))


def _result_json(result: Any) -> dict[str, Any]:
    from .findings import counts

    return {"notebook": result.record.name.split("-", 1)[-1], "incident": result.record.parent.name,
            "status": result.status, "reason": result.reason, "verdict": verdict(result.findings),
            "worst": result.worst.value, "counts": counts(result.findings),
            "findings": [f.to_dict() for f in result.findings], "record": str(result.record),
            "report": str(result.report), "remote": result.remote or None}


def _show_result(result: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(_result_json(result))
    else:
        _print_result(result)


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import prepare, run_notebook

    result = run_notebook(prepare(args.notebook, args.incident, environment=args.env, env_file=args.env_file,
                                  parameters=_parameters(args), archive_dir=args.archive,
                                  cell_timeout=args.cell_timeout, progress=sys.stderr.isatty()))
    _show_result(result, args.json)
    if result.status != "ok":
        print(f"runbook: run failed: {result.reason} (record: {result.record})", file=sys.stderr)
        return EXIT_RUN_FAILED
    return _fail_on(args.fail_on, [result])


def _cmd_record(args: argparse.Namespace) -> int:
    from .record import record_executed

    result = record_executed(args.executed, incident_id=args.incident, notebook=args.notebook,
                             archive_dir=args.archive)
    _show_result(result, args.json)
    return EXIT_OK if result.status == "ok" else EXIT_RUN_FAILED


def _fail_on(threshold: str | None, results: list[Any]) -> int:
    """EXIT_FINDINGS when any run found something at least as urgent as ``threshold`` (crit, error or warn)."""
    from .findings import Severity

    if not threshold:
        return EXIT_OK
    limit = Severity(threshold).rank
    hit = [r for r in results if r.worst.rank <= limit]
    if hit:
        print(f"runbook: --fail-on {threshold}: worst finding is {hit[0].worst.value}", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK


def verdict(findings: list[Any]) -> str:
    """What the findings add up to, in one line; a completed run is not an all-clear unless its checks say so."""
    from .findings import Severity, counts

    tally = counts(findings)
    active = [f for f in findings if f.severity.active]
    if not findings:
        return "Verdict: UNKNOWN: no check reported anything"
    if Severity.CRIT.value in tally:
        return f"Verdict: CRITICAL: {len(active)} to act on; worst: {active[0].title}"
    if Severity.ERROR.value in tally:
        return (f"Verdict: INCOMPLETE: {tally['error']} check(s) could not collect their evidence, so what they cover "
                f"is unknown{'; ' + str(len(active) - tally['error']) + ' more to act on' if len(active) > tally['error'] else ''}")
    if Severity.WARN.value in tally:
        return f"Verdict: WARNING: {len(active)} to act on; worst: {active[0].title}"
    return f"Verdict: nothing wrong found by the {tally.get('ok', 0) + tally.get('info', 0)} checks that reported"


def _print_result(result: Any) -> None:
    """Counts by severity and the verdict first, then each finding to act on with its next action, then the record.
    "Run completed" says the notebook finished; the verdict says what it found."""
    from .findings import counts

    fs = result.findings
    tally = counts(fs)
    nb, incident = result.record.name.split("-", 1)[-1], result.record.parent.name
    state = "run completed" if result.status == "ok" else f"run FAILED: {result.reason}"
    print(f"{nb} for incident {incident}: {state}")
    print("Found: " + (", ".join(f"{n} {sev}" for sev, n in tally.items()) or "no findings"))
    print(verdict(fs))
    for f in fs:
        if f.severity.active:
            print(f"[{f.severity.value.upper():5}] {f.title}\n        -> {f.action}")
    print(f"record: {result.record.as_uri()}")
    print(f"report: {result.report.as_uri()}")
    if result.remote:
        print(f"archived to: {result.remote}/")


def _cmd_list(args: argparse.Namespace) -> int:
    from .config import list_environments
    from .runner import describe_notebooks

    notebooks = describe_notebooks()
    if args.json:
        _emit_json({"notebooks": [{**nb, "parameters": [vars(p) for p in nb["parameters"]]} for nb in notebooks],
                    "environments": list_environments()})
        return EXIT_OK
    for nb in notebooks:
        print(f"{nb['name']}: {nb['title']}")
        for p in nb["parameters"]:
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    {p.name} ({p.type}) = {p.default}{help_text}")
    print(f"environments: {', '.join(list_environments()) or 'none'}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    outcome = run_demo(args.archive, args.incident, args.sample_seconds, say=lambda m: print(m, flush=True))
    triage = outcome.results[0]
    print("\nTriage ranked what to run next:")
    ranked = [f for f in triage.findings if f.check == "triage.next"]
    for i, f in enumerate(ranked, 1):
        print(f"  {i}. [{f.severity.value.upper()}] {f.title}")
    for result in outcome.results:
        print()
        _print_result(result)
    print(f"\narchive site: {outcome.site_index.as_uri() if outcome.site_index else '-'}")
    print(f"status update (saved as {outcome.status_path}):\n")
    print(outcome.status_update)
    return EXIT_OK if all(r.status == "ok" for r in outcome.results) else EXIT_RUN_FAILED


def _cmd_check_env(args: argparse.Namespace) -> int:
    from .config import load_environment, validate_environment

    env = load_environment(args.environment)
    errors, warnings = validate_environment(env)
    for e in errors:
        print(f"error: {env.name}: {e}", file=sys.stderr)
    for w in warnings:
        print(f"warning: {env.name}: {w}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    print(f"environment {env.name} ({env.path}) is valid: {len(env.services)} services"
          f"{', ' + str(len(warnings)) + ' warnings' if warnings else ''}")
    return EXIT_OK


def _duration(text: str) -> float:
    """``90s``, ``5m``, ``2h``, ``30d`` -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not m:
        raise RunbookError(f"duration {text!r}: use a number and s, m, h or d (e.g. 5m)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _print_compare(df: object) -> None:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    if df.empty:
        print("no findings to act on in either run")
    for r in df.itertuples():
        print(f"{r.change:10} {r.before:>5} -> {r.after:<5} {r.title}")
        if r.change == "unknown":
            print(f"           not known to be resolved: {r.why}")
        if r.change == "persisting" and r.evidence_before != r.evidence_after:
            print(f"           before: {_short(r.evidence_before)}\n           after:  {_short(r.evidence_after)}")


def _short(ev: object) -> str:
    import json

    text = json.dumps(ev, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _cmd_compare(args: argparse.Namespace) -> int:
    from . import archive, timeline

    root = archive.archive_root(args.archive)
    a = archive.resolve_record(root, args.run_a)
    if archive.is_incident(root, args.run_b):
        b = timeline.later_run_of(archive.records(root, args.run_b), a)
    else:
        b = archive.resolve_record(root, args.run_b)
        if a.started_at > b.started_at:
            a, b = b, a
    changes = timeline.compare(a, b)
    if args.json:
        _emit_json({"notebook": a.notebook, "before": a.run_id, "after": b.run_id,
                    "changes": changes.to_dict(orient="records")})
        return EXIT_OK
    print(f"{a.notebook}: {a.run_id} ({a.started_at:%H:%M:%S}) -> {b.run_id} ({b.started_at:%H:%M:%S})")
    _print_compare(changes)
    return EXIT_OK


def _cmd_note(args: argparse.Namespace) -> int:
    from . import archive
    from .config import parse_time

    root = archive.archive_root(args.archive)
    note = archive.add_note(root, args.incident, args.text, parse_time(args.at) if args.at else None)
    print(f"noted for {args.incident} at {note.at:%Y-%m-%d %H:%M:%S} UTC: {note.text}")
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    import time as _time

    from . import archive, timeline
    from .runner import prepare, run_notebook

    every, limit = _duration(args.every), _duration(args.timeout)
    deadline = _time.monotonic() + limit
    previous = None
    params = _parameters(args)
    round_no = 0
    while True:
        round_no += 1
        result = run_notebook(prepare(args.notebook, args.incident, environment=args.env, env_file=args.env_file,
                                      parameters=params, archive_dir=args.archive))
        current = archive.load_record(result.record)
        print(f"round {round_no}: {current.run_id} status {result.status}, worst {current.run.get('worst_severity')}")
        if previous is not None:
            _print_compare(timeline.compare(previous, current))
        previous = current
        if args.until_clear and timeline.is_clear(current):
            print("clear: the run completed, its checks reported, none is warn, crit or error")
            return EXIT_OK
        if _time.monotonic() + every > deadline:
            print(f"runbook: watch timed out after {args.timeout} without clearing", file=sys.stderr)
            return EXIT_RUN_FAILED
        _time.sleep(every)


def _cmd_status_update(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from . import archive, timeline

    root = archive.archive_root(args.archive)
    archive.validate_incident_id(args.incident)
    recs = archive.records(root, args.incident)
    if not recs:
        raise RunbookError(f"no records for incident {args.incident!r} under {root}")
    text = timeline.status_update(args.incident, recs, archive.read_notes(root, args.incident),
                                  next_update=timedelta(seconds=_duration(args.next_update)))
    path = archive.write_incident_file(root, args.incident,
                                       f"status-updates/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.md", text)
    print(text)
    print(f"saved: {path}")
    return EXIT_OK


def _cmd_archive(args: argparse.Namespace) -> int:
    from . import archive, site

    root = archive.archive_root(args.archive)
    if args.archive_command == "list":
        recs = archive.records(root, args.incident)
        if args.json:
            _emit_json([_record_json(r) for r in recs])
            return EXIT_OK
        for r in recs:
            print(f"{r.started_at:%Y-%m-%d %H:%M:%S}  {r.run_id:60}  {r.status:6}  worst {r.run.get('worst_severity', '?')}")
        if not recs:
            print(f"no records under {root}")
        return EXIT_OK
    if args.archive_command == "show":
        r = archive.resolve_record(root, args.run)
        if args.json:
            _emit_json({**_record_json(r), "reason": r.run.get("reason", ""), "verdict": verdict(r.findings()),
                        "findings": [f.to_dict() for f in r.findings()], "report": str(r.path / "report.html")})
            return EXIT_OK
        print(f"{r.run_id}: {r.notebook} for {r.incident_id}, {r.status}, started {r.started_at:%Y-%m-%d %H:%M:%S} UTC")
        if r.run.get("reason"):
            print(f"reason: {r.run['reason']}")
        print(verdict(r.findings()))
        for f in r.findings():
            print(f"[{f.severity.value.upper():5}] {f.title}" + (f"\n        -> {f.action}" if f.action and
                                                                 f.severity.active else ""))
        print(f"report: {r.path / 'report.html'}")
        return EXIT_OK
    if args.archive_command == "verify":
        problems = archive.verify(root)
        if args.json:
            _emit_json({"records": len(archive.list_records(root)), "intact": not problems,
                        "problems": [{"record": str(rec), "problem": what} for rec, what in problems],
                        "signatures": archive.signed_state(root)})
            return EXIT_RUN_FAILED if problems else EXIT_OK
        for rec, what in problems:
            print(f"{rec}: {what}")
        n = len(archive.list_records(root))
        print(f"{n} records checked, {len(problems)} problems" if problems else f"{n} records checked, all intact")
        print(archive.signed_state(root))
        return EXIT_RUN_FAILED if problems else EXIT_OK
    if args.archive_command == "site":
        index = site.build(root, Path(args.dir))
        print(f"site: {index}")
        return EXIT_OK
    if args.archive_command == "prune":
        old = archive.prune(root, _duration(args.older_than), dry_run=not args.yes)
        verb = "deleted" if args.yes else "would delete (add --yes to delete)"
        for p in old:
            print(f"{verb}: {p}")
        print(f"{len(old)} records older than {args.older_than}")
        return EXIT_OK
    raise RunbookError(f"unknown archive command {args.archive_command}")


def _record_json(r: Any) -> dict[str, Any]:
    return {"run_id": r.run_id, "incident": r.incident_id, "notebook": r.notebook, "status": r.status,
            "started_at": r.started_at.isoformat(), "worst": r.run.get("worst_severity"), "mode":
            r.run.get("mode", "papermill"), "path": str(r.path)}


def _require_extra(extra: str, *modules: str) -> None:
    """A one-line error naming the extra to install when a command's optional dependencies are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RunbookError(f"this command needs {', '.join(missing)}: pip install 'runbook-notebooks[{extra}]'")


def _cmd_lab(args: argparse.Namespace) -> int:
    _require_extra("lab", "jupyterlab", "ipywidgets")
    chosen = [a for a in args.lab_args if a.split("=")[0] in ("--ServerApp.root_dir", "--notebook-dir",
                                                               "--ServerApp.notebook_dir")]
    if chosen:
        raise RunbookError(f"{chosen[0].split('=')[0]}: runbook lab opens the incident's working copies; set "
                           "RUNBOOK_LAB_DIR to keep them elsewhere")
    from .kernel import ensure_kernelspec
    from .lab import open_workspace, server_command, server_environment

    ws = open_workspace(args.incident, args.env, args.archive)  # one-line errors before JupyterLab starts
    ensure_kernelspec()
    print(f"incident {ws.incident_id}, environment {ws.environment}: working copies in {ws.directory}")
    if ws.created:
        print(f"  created: {', '.join(ws.created)}")
    if ws.kept:
        print(f"  kept (your work so far): {', '.join(ws.kept)}")
    cmd = server_command(ws, [a for a in args.lab_args if a != "--"])
    os.execvpe(sys.executable, cmd, server_environment(ws, args.archive))
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    _require_extra("serve", "starlette", "uvicorn", "prometheus_client")
    from .archive import archive_root
    from .server import serve

    given = args.archive or os.environ.get("RUNBOOK_ARCHIVE") or ""
    archive = given if given.startswith("s3://") else str(archive_root(given or None))
    spool = Path(args.spool) if args.spool else (Path(archive) / ".runbook" / "spool" if not archive.startswith("s3://")
                                                   else Path(".runbook-spool"))
    serve(host=args.host, port=args.port, spool_dir=spool.resolve(), archive=archive, workers=args.workers,
          max_alerts=args.max_alerts, max_queued=args.max_queued,
          dedupe_window_s=_duration(args.dedupe_window), routes_file=args.routes)
    return EXIT_OK


def _cmd_from_alert(args: argparse.Namespace) -> int:
    from . import alerts
    from .runner import prepare, run_notebook

    try:
        body = Path(args.payload).read_bytes() if args.payload != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise RunbookError(f"cannot read {args.payload}: {e.strerror}") from None
    routes = alerts.load_routes(args.routes)
    failed = 0
    for alert in alerts.parse_payload(body):
        job = alerts.route(alert, routes)
        if job is None:
            print(f"no route for alert {alert.fingerprint} ({alert.labels.get('alertname', '?')})")
            continue
        result = run_notebook(prepare(job.notebook, job.incident_id, environment=job.environment,
                                      parameters=job.parameters, archive_dir=args.archive,
                                      run_fields={"alert": {**_alert_dict(alert), "route": job.route}}))
        print(f"{alert.status} alert {alert.fingerprint} -> {job.notebook} for {job.incident_id}: {result.status}")
        print(f"record: {result.record}")
        failed += result.status != "ok"
    return EXIT_RUN_FAILED if failed else EXIT_OK


def _alert_dict(alert: object) -> dict:
    from dataclasses import asdict

    return asdict(alert)  # type: ignore[call-overload]


def _cmd_check_alerts(args: argparse.Namespace) -> int:
    from . import alerts

    routes = alerts.load_routes(args.routes)
    problems = alerts.check_routes(routes)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{len(routes)} alert routes are valid")
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .models import schema

    print(json.dumps(schema(args.which), indent=2))
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from .completion import bash_script
    from .runner import list_notebooks

    print(bash_script(build_parser(), list_notebooks()), end="")
    return EXIT_OK


def _cmd_kernel(args: argparse.Namespace) -> int:
    from .kernel import ensure_kernelspec

    print(f"kernel spec 'runbook' at {ensure_kernelspec()}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runbook", description="Diagnostic notebooks for incident response.")
    parser.add_argument("--version", action="version", version=f"runbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="execute a notebook for an incident and archive the record",
                         epilog="example: runbook run database_pressure --incident INC-7 --env production "
                                "-p sample_seconds 10 -f incident-params.yaml")
    run.add_argument("notebook", help="notebook name (see runbook list)")
    run.add_argument("--incident", required=True, help="incident id (letters, digits, . _ -)")
    env = run.add_mutually_exclusive_group()
    env.add_argument("--env", help="environment name under params/environments/")
    env.add_argument("--env-file", help="path to an environment file")
    _add_parameters(run)
    run.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    run.add_argument("--cell-timeout", type=int, default=300, help="seconds one cell may run (default 300)")
    run.add_argument("--fail-on", choices=["crit", "error", "warn"],
                     help=f"exit {EXIT_FINDINGS} when a finding is at least this urgent (for automation)")
    run.set_defaults(func=_cmd_run)

    rec = sub.add_parser("record", help="archive a notebook executed elsewhere (papermill, Airflow) as a record",
                         description="Seal a notebook that papermill, Airflow's PapermillOperator or another engine "
                                     "executed into a record, as runbook run seals its own. Example: papermill "
                                     "notebooks/database_pressure.ipynb out.ipynb -p incident_id INC-7 && runbook "
                                     "record out.ipynb")
    rec.add_argument("executed", help="the executed .ipynb")
    rec.add_argument("--incident", help="incident id (default: the one the notebook's parameters name)")
    rec.add_argument("--notebook", help="notebook name in the record (default: the one its report names)")
    rec.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    rec.set_defaults(func=_cmd_record)

    note = sub.add_parser("note", help="add a human entry to the incident's timeline")
    note.add_argument("incident")
    note.add_argument("text")
    note.add_argument("--at", help="when it happened (ISO 8601 UTC or relative like -10m; default now)")
    note.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    note.set_defaults(func=_cmd_note)

    ls = sub.add_parser("list", help="show notebooks, their parameters, and environments")
    ls.set_defaults(func=_cmd_list)

    demo = sub.add_parser("demo", help="start a sandbox, stage database-pressure, queue-backlog and authentication "
                                       "incidents at once, run triage and what it recommends, write the archive site "
                                       "and a status update")
    demo.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    demo.add_argument("--incident", help="incident id (default demo-<UTC time>)")
    demo.add_argument("--sample-seconds", type=float, default=3.0, help="sampling interval (default 3)")
    demo.set_defaults(func=_cmd_demo)

    cmp_ = sub.add_parser("compare", help="what was resolved, is new, persists or is unknown between two runs of "
                                          "one notebook")
    cmp_.add_argument("run_a", help="record path, INCIDENT/RECORD, or INCIDENT (its latest run)")
    cmp_.add_argument("run_b", help="a later record of the same notebook, or INCIDENT: its latest run of run_a's notebook")
    cmp_.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    cmp_.set_defaults(func=_cmd_compare)

    watch = sub.add_parser("watch", help="re-run a notebook every interval and print what changed")
    watch.add_argument("notebook")
    watch.add_argument("--incident", required=True)
    wenv = watch.add_mutually_exclusive_group()
    wenv.add_argument("--env")
    wenv.add_argument("--env-file")
    _add_parameters(watch)
    watch.add_argument("--every", default="5m", help="interval between runs (default 5m)")
    watch.add_argument("--until-clear", action="store_true", help="stop when nothing is warn, crit or error")
    watch.add_argument("--timeout", default="2h", help="give up after this long (default 2h)")
    watch.add_argument("--archive")
    watch.set_defaults(func=_cmd_watch)

    su = sub.add_parser("status-update", help="write a stakeholder update from the incident's latest findings")
    su.add_argument("incident")
    su.add_argument("--next-update", default="30m", help="when the next update is due (default 30m)")
    su.add_argument("--archive")
    su.set_defaults(func=_cmd_status_update)

    arch = sub.add_parser("archive", help="list, show, verify, publish or prune records")
    asub = arch.add_subparsers(dest="archive_command", required=True, parser_class=_Parser)
    al = asub.add_parser("list", help="records, oldest first")
    al.add_argument("incident", nargs="?")
    ash = asub.add_parser("show", help="one record's findings")
    ash.add_argument("run", help="record path, INCIDENT/RECORD, or INCIDENT (its latest run)")
    asub.add_parser("verify", help="recompute every sha256 and report altered or incomplete records")
    ast = asub.add_parser("site", help="a static HTML index of the archive")
    ast.add_argument("dir")
    apr = asub.add_parser("prune", help="delete records older than an age (dry run unless --yes)")
    apr.add_argument("--older-than", required=True, help="e.g. 90d")
    apr.add_argument("--yes", action="store_true")
    for p in (run, rec, ls, cmp_, al, ash, asub.choices["verify"]):
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    for p in (al, ash, asub.choices["verify"], ast, apr):
        p.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    arch.set_defaults(func=_cmd_archive)

    lab = sub.add_parser("lab", help="open JupyterLab on an incident's working copies of the notebooks")
    lab.add_argument("--incident", default="adhoc", help="incident the working copies belong to (default adhoc)")
    lab.add_argument("--env", default="local", help="environment filled into every copy's parameters")
    lab.add_argument("--archive")
    lab.add_argument("lab_args", nargs=argparse.REMAINDER, help="passed to jupyter lab (after --)")
    lab.set_defaults(func=_cmd_lab)

    srv = sub.add_parser("serve", help="receive alerts (Alertmanager, Grafana, PagerDuty) and run notebooks")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--workers", type=int, default=2, help="executors running notebooks at once (default 2)")
    srv.add_argument("--spool", help="spool directory (default <archive>/.runbook/spool, which no record reader lists)")
    srv.add_argument("--max-alerts", type=int, default=100, help="alerts taken from one payload (default 100; more: 413)")
    srv.add_argument("--max-queued", type=int, default=500, help="runs waiting before the receiver answers 503 with "
                                                                 "Retry-After (default 500)")
    srv.add_argument("--dedupe-window", default="10m", help="same alert and route within this coalesce (default 10m)")
    srv.add_argument("--routes", help="alert routes file (default params/alerts.yaml)")
    srv.add_argument("--archive", help="archive directory or s3://bucket/prefix")
    srv.set_defaults(func=_cmd_serve)

    fa = sub.add_parser("from-alert", help="run the notebooks an alert payload routes to, once")
    fa.add_argument("payload", help="a JSON payload file, or - for standard input")
    fa.add_argument("--routes", help="alert routes file (default params/alerts.yaml)")
    fa.add_argument("--archive")
    fa.set_defaults(func=_cmd_from_alert)

    ca = sub.add_parser("check-alerts", help="validate the alert routes")
    ca.add_argument("--routes", help="alert routes file (default params/alerts.yaml)")
    ca.set_defaults(func=_cmd_check_alerts)

    check = sub.add_parser("check-env", help="validate an environment file (targets, log sources, changes)")
    check.add_argument("environment", help="a name under params/environments/ or a path")
    check.set_defaults(func=_cmd_check_env)

    schema = sub.add_parser("schema", help="print the JSON Schema of environment files or alert routes")
    schema.add_argument("which", choices=["env", "alerts"])
    schema.set_defaults(func=_cmd_schema)

    kernel = sub.add_parser("kernel-install", help="install the 'runbook' Jupyter kernel spec for this Python")
    kernel.set_defaults(func=_cmd_kernel)

    comp = sub.add_parser("completion", help="print shell completion for runbook",
                          epilog='example: eval "$(runbook completion bash)", or save it as '
                                 "~/.local/share/bash-completion/completions/runbook")
    comp.add_argument("shell", choices=["bash"])
    comp.set_defaults(func=_cmd_completion)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runbook`` command. Files it creates are private to the user (0600, directories 0700)
    unless ``RUNBOOK_UMASK`` says otherwise (e.g. 027 to share records with a group)."""
    args = build_parser().parse_args(argv)
    os.umask(int(os.environ.get("RUNBOOK_UMASK", "077"), 8))
    from .runner import quiet_libraries

    quiet_libraries()
    try:
        return int(args.func(args))
    except RunbookError as e:
        print(f"runbook: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("runbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
