"""``runbook``: run, record, list and demo the diagnostic notebooks, on click. Errors are one line on stderr.

Exit codes: 0 done, 1 a run or check failed, 2 usage or configuration error, 3 ``--fail-on`` hit, 130 interrupted.
Commands import what they need when they run, so ``--help`` and shell completion stay fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import RunbookError

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3
_PARAMETER_FLAGS = ("-p", "--parameter")
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
_ARCHIVE_HELP = "archive directory (default $RUNBOOK_ARCHIVE, else ./archive)"


def pair_parameters(args: Sequence[str]) -> list[str]:
    """Every ``-p KEY=VALUE`` (also ``-pKEY=VALUE``, ``--parameter=KEY=VALUE``) rewritten as papermill's
    ``-p KEY VALUE``, so the option takes its two values either way. A first token with ``=`` is KEY=VALUE;
    without, the next token is the value unless it is a long option (``-p KEY --archive X`` lacks a value)."""
    out: list[str] = []
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if token == "--":
            return out + [token] + rest
        first = _attached_parameter(token)
        if first is None:
            out.append(token)
            continue
        if first == "":
            if not rest:
                raise click.UsageError(f"{token}: expected KEY=VALUE or KEY VALUE")
            first = rest.pop(0)
        if "=" in first:
            key, _, value = first.partition("=")
        elif rest and not rest[0].startswith("--"):  # a value may start with "-" (-30m), not with "--"
            key, value = first, rest.pop(0)
        else:
            raise click.UsageError(f"-p {first}: expected KEY=VALUE or KEY VALUE")
        if not key.strip():
            raise click.UsageError(f"-p {first}: the parameter has no name")
        out += ["-p", key.strip(), value]
    return out


def _attached_parameter(token: str) -> str | None:
    """What follows a ``-p`` flag inside ``token`` ("" for a bare flag); None when ``token`` is not one."""
    if token in _PARAMETER_FLAGS:
        return ""
    if token.startswith("--parameter="):
        return token.partition("=")[2]
    if token.startswith("-p") and not token.startswith("--"):
        return token[2:]
    return None


class ParameterCommand(click.Command):
    """A command taking notebook parameters as ``-p KEY VALUE`` or ``-p KEY=VALUE``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            paired = pair_parameters(args)
        except click.UsageError as e:
            e.ctx = ctx
            raise
        return super().parse_args(ctx, paired)


def _notebook_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from .runner import list_notebooks

    return [n for n in list_notebooks() if n.startswith(incomplete)]


def _parameter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-f", "--parameters-file", type=click.Path(dir_okay=False), metavar="PARAMS.yaml",
                     help="a YAML mapping of parameters, typed as written (as papermill's -f)")(f)
    return click.option("-p", "--parameter", "parameter", type=(str, str), multiple=True, metavar="KEY VALUE",
                        help="notebook parameter, KEY VALUE or KEY=VALUE (repeatable; wins over -f)")(f)


def _environment_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--env-file", type=click.Path(dir_okay=False), help="path to an environment file")(f)
    return click.option("--env", help="environment name under params/environments/")(f)


def _notebook_run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """NOTEBOOK, --incident, the environment and the parameters: what names one run (run, watch)."""
    f = _environment_options(_parameter_options(f))
    f = click.option("--incident", required=True, help="incident id (letters, digits, . _ -)")(f)
    return click.argument("notebook", shell_complete=_notebook_names)(f)


def _archive_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--archive", help=_ARCHIVE_HELP)(f)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of text")(f)


def _parameters(parameters_file: str | None, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``-f`` file's mapping, then each ``-p`` over it (strings, converted to the declared type by the runner)."""
    from .config import read_yaml

    out: dict[str, Any] = {}
    if parameters_file:
        loaded = read_yaml(Path(parameters_file), "parameters file")
        if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
            raise RunbookError(f"{parameters_file}: expected a mapping of parameter names to values")
        out.update(loaded)
    out.update(pairs)
    return out


def _duration(text: str) -> float:
    """``90s``, ``5m``, ``2h``, ``30d`` -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not m:
        raise RunbookError(f"duration {text!r}: use a number and s, m, h or d (e.g. 5m)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


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


def _require_extra(extra: str, *modules: str) -> None:
    """A one-line error naming the extra to install when a command's optional dependencies are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RunbookError(f"this command needs {', '.join(missing)}: pip install 'runbook-notebooks[{extra}]'")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog="\b\nExample:\n  runbook list\n  runbook run database_pressure --incident INC-7 --env production")
@click.version_option(__version__, "--version", prog_name="runbook", message="%(prog)s %(version)s")
def cli() -> None:
    """Diagnostic notebooks for incident response: evidence, ranked findings, archived records.

    Files it creates are private to the user (0600, directories 0700) unless RUNBOOK_UMASK says otherwise (e.g. 027
    to share records with a group)."""
    os.umask(int(os.environ.get("RUNBOOK_UMASK", "077"), 8))
    from .runner import quiet_libraries, skip_unused_imports

    quiet_libraries()
    skip_unused_imports()


@cli.command(cls=ParameterCommand, epilog="\b\nExample:\n  runbook run database_pressure --incident INC-7 --env "
             "production -p sample_seconds 10 -f incident-params.yaml")
@_notebook_run_options
@_archive_option
@click.option("--cell-timeout", type=int, default=300, show_default=True, help="seconds one cell may run")
@click.option("--fail-on", type=click.Choice(["crit", "error", "warn"]),
              help=f"exit {EXIT_FINDINGS} when a finding is at least this urgent (for automation)")
@_json_option
def run(notebook: str, incident: str, env: str | None, env_file: str | None, parameter: tuple[tuple[str, str], ...],
        parameters_file: str | None, archive: str | None, cell_timeout: int, fail_on: str | None,
        as_json: bool) -> int:
    """Execute a notebook (see runbook list) for an incident and archive the record."""
    from .console import show_result
    from .runner import kernel_ahead, prepare, run_notebook

    with kernel_ahead(archive) as kernel:
        plan = prepare(notebook, incident, environment=env, env_file=env_file,
                       parameters=_parameters(parameters_file, parameter), archive_dir=archive,
                       cell_timeout=cell_timeout, progress=sys.stderr.isatty())
        result = run_notebook(plan, kernel=kernel)
    show_result(result, as_json)
    if result.status != "ok":
        print(f"runbook: run failed: {result.reason} (record: {result.record})", file=sys.stderr)
        return EXIT_RUN_FAILED
    return _fail_on(fail_on, [result])


@cli.command(epilog="\b\nExample:\n  papermill notebooks/database_pressure.ipynb out.ipynb -p incident_id INC-7\n"
             "  runbook record out.ipynb")
@click.argument("executed", type=click.Path(dir_okay=False))
@click.option("--incident", help="incident id (default: the one the notebook's parameters name)")
@click.option("--notebook", help="notebook name in the record (default: the one its report names)")
@click.option("--alert", "alert_file", type=click.Path(dir_okay=False), help="a JSON file holding the alert behind "
              "the run (as runbook serve --airflow hands it to the DAG), kept in run.json")
@_archive_option
@_json_option
def record(executed: str, incident: str | None, notebook: str | None, alert_file: str | None, archive: str | None,
           as_json: bool) -> int:
    """Archive a notebook executed elsewhere (papermill, Airflow's PapermillOperator) as a record, sealed as
    runbook run seals its own."""
    from .console import show_result
    from .record import read_alert, record_executed

    alert = read_alert(alert_file) if alert_file else None
    result = record_executed(executed, incident_id=incident, notebook=notebook, archive_dir=archive, alert=alert)
    show_result(result, as_json)
    return EXIT_OK if result.status == "ok" else EXIT_RUN_FAILED


@cli.command(epilog="\b\nExample:\n  runbook note INC-7 'rolled back tasks to v41' --at -10m")
@click.argument("incident")
@click.argument("text")
@click.option("--at", help="when it happened (ISO 8601 UTC or relative like -10m; default now)")
@_archive_option
def note(incident: str, text: str, at: str | None, archive: str | None) -> int:
    """Add a human entry to the incident's timeline."""
    from . import archive as records
    from .config import parse_time

    root = records.archive_root(archive)
    entry = records.add_note(root, incident, text, parse_time(at) if at else None)
    print(f"noted for {incident} at {entry.at:%Y-%m-%d %H:%M:%S} UTC: {entry.text}")
    return EXIT_OK


@cli.command("list", epilog="\b\nExample:\n  runbook list --json | jq '.notebooks[].name'")
@_json_option
def list_(as_json: bool) -> int:
    """Show notebooks, their parameters, and environments."""
    from .config import list_environments
    from .console import emit_json
    from .runner import describe_notebooks

    notebooks = describe_notebooks()
    if as_json:
        emit_json({"notebooks": [{**nb, "parameters": [vars(p) for p in nb["parameters"]]} for nb in notebooks],
                   "environments": list_environments()})
        return EXIT_OK
    for nb in notebooks:
        print(f"{nb['name']}: {nb['title']}")
        for p in nb["parameters"]:
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    {p.name} ({p.type}) = {p.default}{help_text}")
    print(f"environments: {', '.join(list_environments()) or 'none'}")
    return EXIT_OK


@cli.command(epilog="\b\nExample:\n  runbook demo --archive /tmp/demo-archive")
@_archive_option
@click.option("--incident", help="incident id (default demo-<UTC time>)")
@click.option("--sample-seconds", type=float, default=3.0, show_default=True, help="sampling interval")
def demo(archive: str | None, incident: str | None, sample_seconds: float) -> int:
    """Start a sandbox, stage database-pressure, queue-backlog and authentication incidents at once, run triage and
    what it recommends, write the archive site and a status update."""
    from .console import label, print_result
    from .demo import run_demo

    outcome = run_demo(archive, incident, sample_seconds, say=lambda m: print(m, flush=True))
    print("\nTriage ranked what to run next:")
    ranked = [f for f in outcome.results[0].findings if f.check == "triage.next"]
    for i, f in enumerate(ranked, 1):
        print(f"  {i}. {label(f.severity)} {f.title}")
    for result in outcome.results:
        print()
        print_result(result)
    print(f"\narchive site: {outcome.site_index.as_uri() if outcome.site_index else '-'}")
    print(f"status update (saved as {outcome.status_path}):\n")
    print(outcome.status_update)
    return EXIT_OK if all(r.status == "ok" for r in outcome.results) else EXIT_RUN_FAILED


@cli.command(epilog="\b\nExample:\n  runbook compare INC-7/20261130T101500Z-database_pressure INC-7")
@click.argument("run_a")
@click.argument("run_b")
@_archive_option
@_json_option
def compare(run_a: str, run_b: str, archive: str | None, as_json: bool) -> int:
    """What was resolved, is new, persists or is unknown between two runs of one notebook.

    RUN_A is a record path, INCIDENT/RECORD, or INCIDENT (its latest run). RUN_B is a later record of the same
    notebook, or INCIDENT: its latest run of RUN_A's notebook."""
    from . import archive as records
    from . import timeline
    from .console import emit_json, print_compare

    root = records.archive_root(archive)
    a = records.resolve_record(root, run_a)
    if records.is_incident(root, run_b):
        b = timeline.later_run_of(records.records(root, run_b), a)
    else:
        b = records.resolve_record(root, run_b)
        if a.started_at > b.started_at:
            a, b = b, a
    changes = timeline.compare(a, b)
    if as_json:
        emit_json({"notebook": a.notebook, "before": a.run_id, "after": b.run_id,
                   "changes": changes.to_dict(orient="records")})
        return EXIT_OK
    print(f"{a.notebook}: {a.run_id} ({a.started_at:%H:%M:%S}) -> {b.run_id} ({b.started_at:%H:%M:%S})")
    print_compare(changes)
    return EXIT_OK


@cli.command(cls=ParameterCommand, epilog="\b\nExample:\n  runbook watch queue_backlog --incident INC-7 --env "
             "production --every 2m --until-clear")
@_notebook_run_options
@click.option("--every", default="5m", show_default=True, help="interval between runs")
@click.option("--until-clear", is_flag=True, help="stop when nothing is warn, crit or error")
@click.option("--timeout", default="2h", show_default=True, help="give up after this long")
@_archive_option
def watch(notebook: str, incident: str, env: str | None, env_file: str | None,
          parameter: tuple[tuple[str, str], ...], parameters_file: str | None, every: str, until_clear: bool,
          timeout: str, archive: str | None) -> int:
    """Re-run a notebook every interval and print what changed."""
    import time

    from . import archive as records
    from . import timeline
    from .console import print_compare
    from .runner import kernel_ahead, prepare, run_notebook

    interval, deadline = _duration(every), time.monotonic() + _duration(timeout)
    params = _parameters(parameters_file, parameter)
    previous = None
    round_no = 0
    while True:
        round_no += 1
        with kernel_ahead(archive) as kernel:
            result = run_notebook(prepare(notebook, incident, environment=env, env_file=env_file,
                                          parameters=params, archive_dir=archive), kernel=kernel)
        current = records.load_record(result.record)
        print(f"round {round_no}: {current.run_id} status {result.status}, worst {current.run.get('worst_severity')}")
        if previous is not None:
            print_compare(timeline.compare(previous, current))
        previous = current
        if until_clear and timeline.is_clear(current):
            print("clear: the run completed, its checks reported, none is warn, crit or error")
            return EXIT_OK
        if time.monotonic() + interval > deadline:
            print(f"runbook: watch timed out after {timeout} without clearing", file=sys.stderr)
            return EXIT_RUN_FAILED
        time.sleep(interval)


@cli.command("status-update", epilog="\b\nExample:\n  runbook status-update INC-7 --next-update 15m")
@click.argument("incident")
@click.option("--next-update", default="30m", show_default=True, help="when the next update is due")
@_archive_option
def status_update(incident: str, next_update: str, archive: str | None) -> int:
    """Write a stakeholder update from the incident's latest findings."""
    from datetime import timedelta

    from . import archive as records
    from . import timeline

    root = records.archive_root(archive)
    records.validate_incident_id(incident)
    recs = records.records(root, incident)
    if not recs:
        raise RunbookError(f"no records for incident {incident!r} under {root}")
    text = timeline.status_update(incident, recs, records.read_notes(root, incident),
                                  next_update=timedelta(seconds=_duration(next_update)))
    path = records.write_incident_file(root, incident,
                                       f"status-updates/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.md", text)
    print(text)
    print(f"saved: {path}")
    return EXIT_OK


@cli.group("archive", epilog="\b\nExample:\n  runbook archive list INC-7\n  runbook archive verify --json")
def archive_group() -> None:
    """List, show, verify, publish or prune records."""


@archive_group.command("list", epilog="\b\nExample:\n  runbook archive list INC-7 --json")
@click.argument("incident", required=False)
@_archive_option
@_json_option
def archive_list(incident: str | None, archive: str | None, as_json: bool) -> int:
    """Records, oldest first (of one incident when given)."""
    from . import archive as records
    from .console import emit_json, record_json

    root = records.archive_root(archive)
    recs = records.records(root, incident)
    if as_json:
        emit_json([record_json(r) for r in recs])
        return EXIT_OK
    for r in recs:
        print(f"{r.started_at:%Y-%m-%d %H:%M:%S}  {r.run_id:60}  {r.status:6}  worst {r.run.get('worst_severity', '?')}")
    if not recs:
        print(f"no records under {root}")
    return EXIT_OK


@archive_group.command("show", epilog="\b\nExample:\n  runbook archive show INC-7")
@click.argument("run_ref", metavar="RUN")
@_archive_option
@_json_option
def archive_show(run_ref: str, archive: str | None, as_json: bool) -> int:
    """One record's findings. RUN is a record path, INCIDENT/RECORD, or INCIDENT (its latest run)."""
    from . import archive as records
    from .console import emit_json, print_record, record_json, verdict

    r = records.resolve_record(records.archive_root(archive), run_ref)
    if as_json:
        emit_json({**record_json(r), "reason": r.run.get("reason", ""), "verdict": verdict(r.findings()),
                   "findings": [f.to_dict() for f in r.findings()], "report": str(r.path / "report.html")})
    else:
        print_record(r)
    return EXIT_OK


@archive_group.command("verify", epilog="\b\nExample:\n  RUNBOOK_ARCHIVE_KEY=... runbook archive verify --archive "
                       "/srv/incidents")
@_archive_option
@_json_option
def archive_verify(archive: str | None, as_json: bool) -> int:
    """Recompute every sha256 and signature and report altered, added, deleted or incomplete records."""
    from . import archive as records
    from .console import emit_json

    root = records.archive_root(archive)
    problems, n = records.verify(root), len(records.list_records(root))
    if as_json:
        emit_json({"records": n, "intact": not problems,
                   "problems": [{"record": str(rec), "problem": what} for rec, what in problems],
                   "signatures": records.signed_state(root)})
        return EXIT_RUN_FAILED if problems else EXIT_OK
    for rec, what in problems:
        print(f"{rec}: {what}")
    print(f"{n} records checked, {len(problems)} problems" if problems else f"{n} records checked, all intact")
    print(records.signed_state(root))
    return EXIT_RUN_FAILED if problems else EXIT_OK


@archive_group.command("site", epilog="\b\nExample:\n  runbook archive site ./archive-site")
@click.argument("directory", metavar="DIR")
@_archive_option
def archive_site(directory: str, archive: str | None) -> int:
    """A static HTML index of the archive: incidents, their timelines and reports."""
    from . import archive as records
    from . import site

    print(f"site: {site.build(records.archive_root(archive), Path(directory))}")
    return EXIT_OK


@archive_group.command("prune", epilog="\b\nExample:\n  runbook archive prune --older-than 90d --yes")
@click.option("--older-than", required=True, help="an age such as 90d")
@click.option("--yes", is_flag=True, help="delete (without it, only list what would go)")
@_archive_option
def archive_prune(older_than: str, yes: bool, archive: str | None) -> int:
    """Delete records older than an age (dry run unless --yes); the chain notes what was pruned."""
    from . import archive as records

    old = records.prune(records.archive_root(archive), _duration(older_than), dry_run=not yes)
    verb = "deleted" if yes else "would delete (add --yes to delete)"
    for p in old:
        print(f"{verb}: {p}")
    print(f"{len(old)} records older than {older_than}")
    return EXIT_OK


@cli.command(context_settings={"ignore_unknown_options": True},
             epilog="\b\nExample:\n  runbook lab --incident INC-7 --env production -- --port 8899")
@click.option("--incident", default="adhoc", show_default=True, help="incident the working copies belong to")
@click.option("--env", default="local", show_default=True, help="environment filled into every copy's parameters")
@_archive_option
@click.argument("lab_args", nargs=-1, type=click.UNPROCESSED)
def lab(incident: str, env: str, archive: str | None, lab_args: tuple[str, ...]) -> int:
    """Open JupyterLab on an incident's working copies of the notebooks (LAB_ARGS go to jupyter lab)."""
    _require_extra("lab", "jupyterlab", "ipywidgets")
    chosen = [a for a in lab_args if a.split("=")[0] in ("--ServerApp.root_dir", "--notebook-dir",
                                                          "--ServerApp.notebook_dir")]
    if chosen:
        raise RunbookError(f"{chosen[0].split('=')[0]}: runbook lab opens the incident's working copies; set "
                           "RUNBOOK_LAB_DIR to keep them elsewhere")
    from .kernel import ensure_kernelspec
    from .lab import open_workspace, server_command, server_environment

    ws = open_workspace(incident, env, archive)  # one-line errors before JupyterLab starts
    ensure_kernelspec()
    print(f"incident {ws.incident_id}, environment {ws.environment}: working copies in {ws.directory}")
    if ws.created:
        print(f"  created: {', '.join(ws.created)}")
    if ws.kept:
        print(f"  kept (your work so far): {', '.join(ws.kept)}")
    sys.stdout.flush()
    os.execvpe(sys.executable, server_command(ws, [a for a in lab_args if a != "--"]),
               server_environment(ws, archive))
    return EXIT_OK


@cli.command(epilog="\b\nExample:\n  runbook serve --port 8080 --workers 2 --archive /srv/incidents\n"
             "  RUNBOOK_AIRFLOW_TOKEN=... runbook serve --airflow https://airflow.internal")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="executors running notebooks at once")
@click.option("--spool", help="spool directory (default <archive>/.runbook/spool, which no record reader lists)")
@click.option("--max-alerts", type=int, default=100, show_default=True, help="alerts taken from one payload "
              "(more: 413)")
@click.option("--max-queued", type=int, default=500, show_default=True, help="runs waiting before the receiver "
              "answers 503 with Retry-After")
@click.option("--dedupe-window", default="10m", show_default=True, help="same alert and route within this coalesce")
@click.option("--routes", help="alert routes file (default params/alerts.yaml)")
@click.option("--archive", help="archive directory or s3://bucket/prefix")
@click.option("--airflow", metavar="URL", help="hand each run to this Airflow (REST API v2) as a DAG run instead of "
              "running it here; credentials from RUNBOOK_AIRFLOW_TOKEN or RUNBOOK_AIRFLOW_USERNAME/PASSWORD")
@click.option("--airflow-dag", default="runbook_incident", show_default=True, help="the DAG --airflow triggers")
def serve(host: str, port: int, workers: int, spool: str | None, max_alerts: int, max_queued: int,
          dedupe_window: str, routes: str | None, archive: str | None, airflow: str | None, airflow_dag: str) -> int:
    """Receive alerts (Alertmanager, Grafana, PagerDuty) and run the notebooks they route to, here or (with
    --airflow) as DAG runs of integrations/airflow's runbook_incident."""
    _require_extra("serve", "starlette", "uvicorn", "prometheus_client")
    from .archive import archive_root
    from .server import serve as serve_alerts

    given = archive or os.environ.get("RUNBOOK_ARCHIVE") or ""
    target = given if given.startswith("s3://") else str(archive_root(given or None))
    spool_dir = Path(spool) if spool else (Path(target) / ".runbook" / "spool" if not target.startswith("s3://")
                                           else Path(".runbook-spool"))
    serve_alerts(host=host, port=port, spool_dir=spool_dir.resolve(), archive=target, workers=workers,
                 max_alerts=max_alerts, max_queued=max_queued, dedupe_window_s=_duration(dedupe_window),
                 routes_file=routes, airflow=airflow, airflow_dag=airflow_dag)
    return EXIT_OK


@cli.command("from-alert", epilog="\b\nExample:\n  curl -s $ALERTMANAGER/api/v2/alerts | runbook from-alert -")
@click.argument("payload")
@click.option("--routes", help="alert routes file (default params/alerts.yaml)")
@_archive_option
def from_alert(payload: str, routes: str | None, archive: str | None) -> int:
    """Run the notebooks an alert payload (a JSON file, or - for standard input) routes to, once."""
    from dataclasses import asdict

    from . import alerts
    from .runner import prepare, run_notebook

    try:
        body = Path(payload).read_bytes() if payload != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise RunbookError(f"cannot read {payload}: {e.strerror}") from None
    table = alerts.load_routes(routes)
    failed = 0
    for alert in alerts.parse_payload(body):
        job = alerts.route(alert, table)
        if job is None:
            print(f"no route for alert {alert.fingerprint} ({alert.labels.get('alertname', '?')})")
            continue
        result = run_notebook(prepare(job.notebook, job.incident_id, environment=job.environment,
                                      parameters=job.parameters, archive_dir=archive,
                                      run_fields={"alert": {**asdict(alert), "route": job.route}}))
        print(f"{alert.status} alert {alert.fingerprint} -> {job.notebook} for {job.incident_id}: {result.status}")
        print(f"record: {result.record}")
        failed += result.status != "ok"
    return EXIT_RUN_FAILED if failed else EXIT_OK


@cli.command("check-alerts", epilog="\b\nExample:\n  runbook check-alerts --routes /etc/runbook/alerts.yaml")
@click.option("--routes", help="alert routes file (default params/alerts.yaml)")
def check_alerts(routes: str | None) -> int:
    """Validate the alert routes: notebooks exist, templates compile, environments load."""
    from . import alerts

    table = alerts.load_routes(routes)
    problems = alerts.check_routes(table)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{len(table)} alert routes are valid")
    return EXIT_OK


@cli.command("check-env", epilog="\b\nExample:\n  runbook check-env production")
@click.argument("environment")
def check_env(environment: str) -> int:
    """Validate an environment file (a name under params/environments/ or a path): targets, log sources, changes."""
    from .config import load_environment, validate_environment

    env = load_environment(environment)
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


@cli.command(epilog="\b\nExample:\n  runbook schema env > runbook-env.schema.json")
@click.argument("which", type=click.Choice(["env", "alerts"]))
def schema(which: str) -> int:
    """Print the JSON Schema of environment files or alert routes, for editors to validate the YAML."""
    import json

    from .models import schema as model_schema

    print(json.dumps(model_schema(which), indent=2))
    return EXIT_OK


@cli.command("kernel-install", epilog="\b\nExample:\n  runbook kernel-install")
def kernel_install() -> int:
    """Install the 'runbook' Jupyter kernel spec for this Python."""
    from .kernel import ensure_kernelspec

    print(f"kernel spec 'runbook' at {ensure_kernelspec()}")
    return EXIT_OK


@cli.command(epilog="\b\nExample:\n  eval \"$(runbook completion bash)\"\n  runbook completion zsh > "
             "~/.zfunc/_runbook")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print shell completion for runbook: commands, options, choices and notebook names, answered by runbook
    itself at each TAB, so it stays right after an upgrade."""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None
    print(complete(cli, {}, "runbook", "_RUNBOOK_COMPLETE").source())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runbook`` command: the exit code, with usage errors and RunbookErrors as one line."""
    try:
        return int(cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="runbook",
                            standalone_mode=False) or 0)
    except _NO_ARGS_IS_HELP as e:  # a bare ``runbook`` or ``runbook archive``: the help, as a usage error
        print(e.ctx.get_help() if e.ctx else "see runbook --help", file=sys.stderr)
        return EXIT_USAGE
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "runbook"
        print(f"runbook: error: {e.format_message()} (see {where} --help)", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as e:
        print(f"runbook: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except RunbookError as e:
        print(f"runbook: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, click.Abort):
        print("runbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
