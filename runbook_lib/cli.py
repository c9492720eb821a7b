"""``runbook``: run, list and demo the diagnostic notebooks. Errors are one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from pathlib import Path

from .errors import RunbookError

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"runbook: error: {message} (see runbook --help)\n")


def _key_values(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RunbookError(f"-p {item!r}: expected key=value")
        out[key.strip()] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_notebook

    result = run_notebook(args.notebook, args.incident, environment=args.env, env_file=args.env_file,
                          parameters=_key_values(args.p), archive_dir=args.archive, cell_timeout=args.cell_timeout)
    _print_result(result)
    if result.status != "ok":
        print(f"runbook: run failed: {result.reason} (record: {result.record})", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK


def _print_result(result: object) -> None:
    from .runner import RunResult

    assert isinstance(result, RunResult)
    ranked = sorted(result.findings, key=lambda f: ["crit", "error", "warn", "info", "ok"].index(f["severity"]))
    for f in ranked:
        if f["severity"] != "ok":
            print(f"[{f['severity'].upper():5}] {f['title']}\n        -> {f['action']}")
    ok = sum(1 for f in ranked if f["severity"] == "ok")
    print(f"{ok} checks clear. Status: {result.status}.")
    print(f"record: {result.record}")
    print(f"report: {result.report}")


def _cmd_list(args: argparse.Namespace) -> int:
    from .config import list_environments
    from .runner import describe_notebooks

    for nb in describe_notebooks():
        print(f"{nb['name']}: {nb['title']}")
        for p in nb["parameters"]:
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    {p.name} ({p.type}) = {p.default}{help_text}")
    print(f"environments: {', '.join(list_environments()) or 'none'}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import sandbox
    from .runner import run_notebook
    from .sandbox_queues import stage_queue_backlog
    from .sandbox_services import stage_auth_incident

    incident = args.incident or f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    print("starting a sandbox PostgreSQL and Redis ...", flush=True)
    results = []
    with sandbox.Sandbox.start() as sb:
        os.environ.update(sb.env())
        try:
            print("staging a database-pressure incident: a migration's ALTER TABLE queued behind an "
                  "idle-in-transaction session, reads piling up behind it, slow reports running ...", flush=True)
            staged = sandbox.stage_database_pressure(sb.postgres)
            try:
                print(f"running database_pressure for incident {incident} ...", flush=True)
                results.append(run_notebook("database_pressure", incident, environment="local",
                                            parameters={"sample_seconds": str(args.sample_seconds)},
                                            archive_dir=args.archive))
            finally:
                staged.stop()
            print("staging a queue backlog: BullMQ 'emails' whose worker was killed mid-job (stalled jobs) while "
                  "a producer keeps adding, 'webhooks' failing every job ...", flush=True)
            queues = stage_queue_backlog(sb.redis.url)
            try:
                print(f"running queue_backlog for incident {incident} ...", flush=True)
                results.append(run_notebook("queue_backlog", incident, environment="local",
                                            parameters={"sample_seconds": str(args.sample_seconds), "samples": "4"},
                                            archive_dir=args.archive))
            finally:
                queues.stop()
            print("staging an authentication incident: identity deploy v2.4.0 breaks JWT verification (a 401 "
                  "spike in its logs, its /health failing), the Next.js portal failing session refreshes ...",
                  flush=True)
            with tempfile.TemporaryDirectory(prefix="runbook-demo-services-") as tmp:
                services = stage_auth_incident(Path(tmp))
                os.environ.update(services.secrets)
                try:
                    for nb in ("auth_failures", "portal_outage"):
                        print(f"running {nb} for incident {incident} ...", flush=True)
                        results.append(run_notebook(nb, incident, env_file=str(services.env_file),
                                                    archive_dir=args.archive))
                finally:
                    services.stop()
                    for k in services.secrets:
                        os.environ.pop(k, None)
        finally:
            for k in sb.env():
                os.environ.pop(k, None)
    for result in results:
        print()
        _print_result(result)
    print("\nOpen the report.html files above in a browser, or the notebook.ipynb beside them in JupyterLab.")
    return EXIT_OK if all(r.status == "ok" for r in results) else EXIT_RUN_FAILED


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


def _cmd_kernel(args: argparse.Namespace) -> int:
    from .kernel import ensure_kernelspec

    print(f"kernel spec 'runbook' at {ensure_kernelspec()}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runbook", description="Diagnostic notebooks for incident response.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="execute a notebook for an incident and archive the record")
    run.add_argument("notebook", help="notebook name (see runbook list)")
    run.add_argument("--incident", required=True, help="incident id (letters, digits, . _ -)")
    env = run.add_mutually_exclusive_group()
    env.add_argument("--env", help="environment name under params/environments/")
    env.add_argument("--env-file", help="path to an environment file")
    run.add_argument("-p", action="append", default=[], metavar="KEY=VALUE", help="notebook parameter (repeatable)")
    run.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    run.add_argument("--cell-timeout", type=int, default=300, help="seconds one cell may run (default 300)")
    run.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="show notebooks, their parameters, and environments")
    ls.set_defaults(func=_cmd_list)

    demo = sub.add_parser("demo", help="start a sandbox, stage database-pressure, queue-backlog and "
                                       "authentication incidents, run the notebooks and archive the records")
    demo.add_argument("--archive", help="archive directory (default $RUNBOOK_ARCHIVE, else ./archive)")
    demo.add_argument("--incident", help="incident id (default demo-<UTC time>)")
    demo.add_argument("--sample-seconds", type=float, default=3.0, help="sampling interval (default 3)")
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-env", help="validate an environment file (targets, log sources, changes)")
    check.add_argument("environment", help="a name under params/environments/ or a path")
    check.set_defaults(func=_cmd_check_env)

    kernel = sub.add_parser("kernel-install", help="install the 'runbook' Jupyter kernel spec for this Python")
    kernel.set_defaults(func=_cmd_kernel)
    return parser


def _quiet_libraries() -> None:
    """papermill/nbclient log cell errors and timeouts themselves; the run's outcome is reported once, by us."""
    import logging

    for name in ("papermill", "nbclient", "traitlets", "NotebookClient", "jupyter_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runbook`` command."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
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
