"""Papermill execution: validate parameters, run the notebook, render, archive.

``run_notebook`` is what ``runbook run`` calls. Everything a user can get wrong (unknown notebook,
malformed parameter, unsafe incident id, bad window or thresholds, a credential passed as a
parameter) is refused with a :class:`RunbookError` before anything runs. Once a run starts it always
ends as an archived record, ``ok`` or ``failed``, with the findings recorded so far.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__, archive
from .config import Environment, is_environment_path, load_environment, parse_window, project_dir
from .errors import ConfigError, RunbookError
from .findings import FINDINGS_PATH_ENV, Finding, Severity, Thresholds, counts, load_findings, worst
from .kernel import KERNEL_NAME, ensure_kernelspec
from .redact import contains_credentials, redact

RUNNER_PARAMETERS = ("incident_id", "environment", "window_start", "window_end")


@dataclass
class RunResult:
    """How a run ended (``ok``: the notebook completed, whatever it found; ``failed``) and where its record is."""

    status: str
    record: Path
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    remote: str = ""

    @property
    def report(self) -> Path:
        return self.record / "report.html"

    @property
    def worst(self) -> Severity:
        """The most urgent severity found (ok when nothing was)."""
        return worst(self.findings)


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` for a known notebook name; a clear error listing the known ones."""
    nb_dir = project_dir("notebooks")
    if not name or "/" in name or name.startswith("."):
        raise RunbookError(f"notebook name {name!r} is not valid (known: {', '.join(list_notebooks()) or 'none'})")
    path = nb_dir / f"{name.removesuffix('.ipynb')}.ipynb"
    if not path.is_file():
        raise RunbookError(f"unknown notebook {name!r} (known: {', '.join(list_notebooks()) or 'none'})")
    return path


def quiet_libraries() -> None:
    """papermill/nbclient log cell errors and timeouts themselves; a run's outcome is reported once, by us (the CLI
    and the alert executors alike)."""
    import logging

    for name in ("papermill", "nbclient", "traitlets", "NotebookClient", "jupyter_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# Imported by libraries we load only for checks this process never makes: jsonschema (through nbformat) compiles
# rfc3987-syntax's Lark grammars for its "iri" formats when the package is installed (JupyterLab brings it), about
# 2 s of a 5 s run here; nbformat validates no formats.
UNUSED_IMPORTS = ("rfc3987_syntax",)


def skip_unused_imports() -> None:
    """Mark :data:`UNUSED_IMPORTS` absent in this process (the CLI, the alert executors; not kernels, not JupyterLab),
    so a library that tries them (``with suppress(ImportError)``) goes on without them."""
    for name in UNUSED_IMPORTS:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def list_notebooks() -> list[str]:
    """Names of the runnable notebooks."""
    return sorted(p.stem for p in project_dir("notebooks").glob("*.ipynb"))


@dataclass(frozen=True)
class Parameter:
    """A notebook parameter: name, Python type of its default, default source text, help comment."""

    name: str
    type: str
    default: str
    help: str


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """Parameters declared in the cell tagged ``parameters`` (types inferred from the defaults)."""
    import papermill

    out = {}
    for name, p in papermill.inspect_notebook(str(path)).items():
        try:
            kind = type(ast.literal_eval(p["default"])).__name__
        except (ValueError, SyntaxError):
            kind = "str"
        out[name] = Parameter(name, kind, p["default"], p.get("help", ""))
    return out


def _typed_value(key: str, value: Any, kind: str) -> Any:
    """A value that arrived typed (a YAML parameters file, an alert route, a spooled job) checked against the
    declared type: an int is a valid float, a number is a valid str (as its text)."""
    if kind == "NoneType":  # no default type to hold it to
        return value
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if type(value).__name__ == kind:
        return value
    raise RunbookError(f"parameter {key}={value!r} is not a valid {kind}")


def coerce_parameters(declared: dict[str, Parameter], raw: dict[str, Any]) -> dict[str, Any]:
    """Convert ``key=value`` strings to each parameter's declared type; unknown names are an error."""
    import yaml

    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in declared:
            raise RunbookError(f"unknown parameter {key!r} (this notebook takes: {', '.join(declared)})")
        kind = declared[key].type
        if not isinstance(value, str):
            out[key] = _typed_value(key, value, kind)
            continue
        try:
            if kind == "str" or kind == "NoneType":
                out[key] = value
            elif kind == "bool":
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                out[key] = low in ("true", "1", "yes")
            elif kind == "int":
                out[key] = int(value)
            elif kind == "float":
                out[key] = float(value)
            elif kind in ("dict", "list"):
                parsed = yaml.safe_load(value)
                if type(parsed).__name__ != kind:
                    raise ValueError
                out[key] = parsed
            else:
                out[key] = value
        except (ValueError, yaml.YAMLError):
            raise RunbookError(f"parameter {key}={value!r} is not a valid {kind}") from None
    for key, value in out.items():
        if contains_credentials(json.dumps(value, default=str)):
            raise RunbookError(f"parameter {key} looks like it holds a credential; pass secrets through the "
                               "environment variables named in the environment file")
    return out


# Imported by the kernel while it boots (in parallel with the runner's own start-up), bound to no name. Passed as
# ``code_to_run``, not a second ``exec_lines``: two ``exec_lines`` options make traitlets keep both as literal
# strings, which silently dropped this preload and the kernel spec's own out-of-order hint.
KERNEL_PRELOAD = ("__import__('pandas'); __import__('matplotlib.figure'); __import__('psycopg'); "
                  "__import__('runbook_lib.charts'); __import__('runbook_lib.incident'); "
                  "__import__('runbook_lib.hints').hints.install()")


def start_kernel(extra_env: dict[str, str]) -> Any:
    """Launch the ``runbook`` kernel now, with the run's private variables, without waiting for it.

    The kernel boots (and pre-imports pandas and matplotlib) while the runner goes on: with
    :func:`kernel_ahead`, while it validates the run and imports papermill.
    """
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    import tempfile

    # IPC sockets in a private directory: concurrent kernels (executors, parallel runs) cannot race for TCP ports
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, transport="ipc",
                            ip=str(Path(tempfile.mkdtemp(prefix="runbook-kernel-")) / "kernel"))
    env = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}  # a run started from a lab kernel
    env.update(extra_env)                                                     # is not that notebook
    asyncio.run(km.start_kernel(extra_arguments=["--IPKernelApp.log_level=ERROR",
                                                 "--HistoryManager.hist_file=:memory:",
                                                 f"--IPKernelApp.code_to_run={KERNEL_PRELOAD}"], env=env))
    return km


def stop_kernel(km: Any) -> None:
    """Stop the kernel at once: its notebook is saved, and the connections it opened end with it."""
    import asyncio

    if km is None:
        return
    try:
        if km.has_kernel:
            asyncio.run(asyncio.wait_for(km.shutdown_kernel(now=True), timeout=10))
    except Exception:
        pass
    try:
        km.context.destroy(linger=0)  # do not let process exit wait on lingering sockets
    except Exception:
        pass
    if getattr(km, "transport", "") == "ipc":
        shutil.rmtree(Path(km.ip).parent, ignore_errors=True)


class _RendererWarmup:
    """Imports nbconvert and loads the HTML template in a thread while the notebook executes."""

    def __init__(self) -> None:
        import threading

        self._thread = threading.Thread(target=self._load, daemon=True)
        self._thread.start()

    @staticmethod
    def _load() -> None:
        try:
            report_exporter()
        except Exception:
            pass

    def wait(self) -> None:
        self._thread.join(timeout=30)


def _versions() -> dict[str, str]:
    out = {"runbook": __version__, "python": platform.python_version()}
    for pkg in ("papermill", "nbclient", "nbconvert", "pandas", "matplotlib", "psycopg", "redis", "httpx"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


REPORT_TEMPLATES = Path(__file__).parent / "templates"


def report_exporter() -> Any:
    """nbconvert's HTML exporter with our template: the lab look with nothing loaded from the network."""
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="runbook_report", extra_template_basedirs=[str(REPORT_TEMPLATES)])


def render_html(nb_path: Path, out_path: Path, title: str) -> None:
    """Render an executed notebook to self-contained, offline HTML without input cells or prompts (for readers)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    exporter = report_exporter()
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(body)
    os.replace(tmp, out_path)


@dataclass(frozen=True)
class RunPlan:
    """One run, validated before anything starts: the notebook, the incident, the final parameters (window
    resolved to UTC), the environment, where the record goes. :func:`run_notebook` executes it."""

    notebook: Path
    incident_id: str
    parameters: dict[str, Any]
    environment: Environment
    archive_root: Path
    remote: str = ""                                   # an s3:// archive the record is uploaded to
    cell_timeout: int = 300
    run_fields: dict[str, Any] = field(default_factory=dict)  # more for run.json (the alert behind the run)
    progress: bool = False                             # a line on stderr as each section starts

    @property
    def name(self) -> str:
        return self.notebook.stem


def prepare(notebook: str, incident_id: str, *, environment: str | None = None, env_file: str | None = None,
            parameters: dict[str, Any] | None = None, archive_dir: str | os.PathLike[str] | None = None,
            cell_timeout: int = 300, run_fields: dict[str, Any] | None = None, progress: bool = False) -> RunPlan:
    """Validate everything about a run before it starts (a one-line RunbookError otherwise) and return its plan."""
    archive.validate_incident_id(incident_id)
    path = notebook_path(notebook)
    declared = notebook_parameters(path)
    missing = [p for p in RUNNER_PARAMETERS if p not in declared]
    if missing:
        raise RunbookError(f"notebook {notebook} does not declare {', '.join(missing)} in its parameters cell")
    raw = dict(parameters or {})
    for reserved in ("incident_id",):
        if reserved in raw:
            raise RunbookError(f"set {reserved} with --incident, not -p")
    if environment and env_file:
        raise RunbookError("give --env or --env-file, not both")
    params = coerce_parameters(declared, raw)
    params["incident_id"] = incident_id
    if env_file:
        params["environment"] = str(Path(env_file).expanduser().resolve())
    elif environment:
        params["environment"] = environment
    env_name = params.get("environment") or ast.literal_eval(declared["environment"].default)
    env = load_environment(env_name)  # raises a one-line ConfigError
    if is_environment_path(env_name):  # the kernel runs elsewhere: hand it the absolute path
        params["environment"] = str(env.path)
    start, end = parse_window(params.get("window_start", ast.literal_eval(declared["window_start"].default)),
                              params.get("window_end", ast.literal_eval(declared["window_end"].default)))
    params["window_start"], params["window_end"] = start.isoformat(), end.isoformat()
    if "thresholds" in params:
        Thresholds.from_mapping(env.thresholds, params["thresholds"])
    require_sources(path, env)
    root, remote = _local_root(archive_dir)
    archive.ensure_writable(root, incident_id)
    return RunPlan(path, incident_id, params, env, root, remote, cell_timeout, dict(run_fields or {}), progress)


def notebook_requires(path: Path) -> list[str]:
    """The sources a notebook cannot run without (``metadata.runbook.requires``: postgres, redis, services)."""
    import nbformat

    meta = nbformat.read(path, as_version=4).metadata.get("runbook", {})
    return [str(x) for x in meta.get("requires", [])]


def require_sources(path: Path, env: Environment) -> None:
    """Refuse to start a notebook whose primary source the environment does not configure: a run that could only
    report "not configured" is a misconfiguration, not a record. One line naming what to set."""
    for need in notebook_requires(path):
        if need == "postgres" and env.postgres_dsn()[0] is None:
            raise ConfigError(f"{path.stem} needs Postgres: {env.postgres_dsn()[1]} (set it, or RUNBOOK_PG_DSN)")
        if need == "redis" and env.redis_url()[0] is None:
            raise ConfigError(f"{path.stem} needs Redis: {env.redis_url()[1]} (set it, or RUNBOOK_REDIS_URL)")
        if need == "services" and not env.services:
            raise ConfigError(f"{path.stem} needs services: environment '{env.name}' declares none (services: "
                              "{name: {url, health, logs}})")


@dataclass
class WarmKernel:
    """A kernel started before its run is known (never reused): its findings go to a private file that the
    runner copies into the record."""

    km: Any
    findings_path: Path
    created: tuple[Path, ...] = ()  # directories made for it that did not exist, deepest last


def kernel_env(findings_path: Path, root: Path) -> dict[str, str]:
    """The run's private variables for its kernel."""
    return {
        FINDINGS_PATH_ENV: str(findings_path),
        "RUNBOOK_PARAMS_DIR": str(project_dir("params")),
        "RUNBOOK_NOTEBOOKS_DIR": str(project_dir("notebooks")),
        "RUNBOOK_ARCHIVE": str(root),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }


def warm_kernel(archive_dir: str | os.PathLike[str] | None = None) -> WarmKernel:
    """Start a kernel now for a run that comes later (see :mod:`runbook_lib.warm`). Its findings file is in the
    archive's private ``.runbook/warm/`` (beside the staging directories, so a run killed mid-way is recovered with
    what it found, after a reboot too); in a temporary directory if the archive cannot be written, which the run's
    own checks then report."""
    import tempfile

    ensure_kernelspec()
    root = _local_root(archive_dir)[0]
    warm = root / archive.WARM_DIR
    created = tuple(d for d in (root, warm.parent, warm) if not d.exists())
    try:
        warm.mkdir(parents=True, exist_ok=True)
        private = tempfile.mkdtemp(prefix="kernel-", dir=warm)
    except OSError:
        created, private = (), tempfile.mkdtemp(prefix="runbook-warm-")
    findings = Path(private) / "findings.json"
    return WarmKernel(start_kernel(kernel_env(findings, root)), findings, created)


def discard_warm(kernel: WarmKernel) -> None:
    """Stop a warm kernel that will not run (or did not finish) a job and remove its private directory, and the
    directories made for it if they are empty: a run refused before it starts leaves no trace in the archive."""
    stop_kernel(kernel.km)
    shutil.rmtree(kernel.findings_path.parent, ignore_errors=True)
    for directory in reversed(kernel.created):
        try:
            directory.rmdir()
        except OSError:  # not empty (another run uses it) or already gone
            pass


@contextmanager
def kernel_ahead(archive_dir: str | os.PathLike[str] | None = None) -> Iterator[WarmKernel]:
    """A kernel booting while the caller validates the run (``prepare`` imports papermill): on two cores this
    overlaps the kernel's start-up and pre-imports with the runner's own. Discarded if the block raises (a run
    refused by ``prepare`` leaves no kernel behind); :func:`run_notebook` stops it otherwise."""
    kernel = warm_kernel(archive_dir)
    try:
        yield kernel
    except BaseException:
        discard_warm(kernel)
        raise


def _local_root(archive_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """(local archive root, remote URI or ''): an ``s3://`` archive is written locally first, then uploaded."""
    text = str(archive_dir or os.environ.get(archive.ARCHIVE_ENV) or "")
    if text.startswith("s3://"):
        import hashlib
        import importlib.util
        import tempfile

        if importlib.util.find_spec("boto3") is None:  # checked before the run, not when its upload fails
            raise RunbookError("an s3:// archive needs boto3: pip install 'runbook-notebooks[s3]'")
        mirror = Path(tempfile.gettempdir()) / "runbook-s3-mirror" / hashlib.sha256(text.encode()).hexdigest()[:12]
        return mirror, text.rstrip("/")
    return archive.archive_root(archive_dir), ""


def run_notebook(plan: RunPlan, *, kernel: WarmKernel | None = None) -> RunResult:
    """Execute a planned run and archive its record: plan -> kernel -> execute -> seal -> upload, like papermill's
    ``execute_notebook``. Once it starts it always leaves a record (``failed`` when the notebook did not finish).

    ``kernel``: a kernel started before the run was known (the alert executors') instead of a new one.
    """
    staging = archive.plan_staging(plan.archive_root, plan.incident_id, plan.name)
    km, findings_source = _kernel_for(plan, staging, kernel)
    try:
        result = _execute_and_seal(plan, km, staging, findings_source)
    finally:
        stop_kernel(km)
    if plan.remote:
        result.remote = upload_record(result.record, plan.remote)
    return result


def _kernel_for(plan: RunPlan, staging: Path, kernel: WarmKernel | None) -> tuple[Any, Path]:
    """(kernel manager, where its report writes findings): the warm kernel given, else one started now."""
    if kernel is not None:
        return kernel.km, kernel.findings_path
    ensure_kernelspec()
    findings = staging / "findings.json"
    return start_kernel(kernel_env(findings, plan.archive_root)), findings


def upload_record(record: Path, remote: str) -> str:
    """Copy a finalised record to ``<remote>/<incident>/<record>/`` with papermill's I/O; run.json goes last,
    so a reader that finds run.json finds the whole record."""
    from papermill.iorw import papermill_io

    target = f"{remote}/{record.parent.name}/{record.name}"
    names = sorted(p.name for p in record.iterdir() if p.is_file())
    for name in [n for n in names if n != "run.json"] + ["run.json"]:
        papermill_io.write((record / name).read_text(), f"{target}/{name}")
    return target


def _execute_and_seal(plan: RunPlan, km: Any, staging_path: Path, findings_source: Path) -> RunResult:
    secret_values = plan.environment.secret_values()
    archive.recover_interrupted(plan.archive_root)
    stage = archive.begin(plan.archive_root, plan.incident_id, plan.name, {
        "parameters": json.loads(redact(json.dumps(plan.parameters))),
        "environment": plan.parameters.get("environment"),
        "kernel": KERNEL_NAME,
        "versions": _versions(),
        "host": socket.gethostname(),
        "command": "runbook run",
        "mode": "papermill",
        "findings_source": str(findings_source),
        **plan.run_fields,
    }, path=staging_path)
    out_nb = stage.file("notebook.ipynb")
    if not findings_source.exists():
        findings_source.parent.mkdir(parents=True, exist_ok=True)
        findings_source.write_text("[]")
    warmup = _RendererWarmup()
    status, reason, interrupted = _execute(plan, km, out_nb)
    stop_kernel(km)
    reason = redact(reason, secret_values)[:500]
    findings = load_findings(findings_source)
    if status == "failed":
        findings.append(Finding("runner", "execution", Severity.ERROR, f"The {plan.name} notebook did not finish",
                                detail=reason, action="Open notebook.ipynb in this record to see the failing cell; "
                                "fix the cause and re-run"))
    if findings_source != stage.file("findings.json"):
        shutil.rmtree(findings_source.parent, ignore_errors=True)
    if not out_nb.exists():
        shutil.copyfile(plan.notebook, out_nb)
    warmup.wait()
    result = seal(stage, findings, status, reason, secret_values)
    if interrupted is not None:
        raise interrupted
    return result


def _execute(plan: RunPlan, km: Any, out_nb: Path) -> tuple[str, str, BaseException | None]:
    """papermill on the plan's notebook with the given kernel: (status, reason, a Ctrl-C to re-raise after
    sealing). Nothing that goes wrong here escapes: a failed run is still a record."""
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        from .engine import register_runner_engine

        try:
            papermill.execute_notebook(
                str(plan.notebook), str(out_nb), parameters=plan.parameters, kernel_name=KERNEL_NAME,
                engine_name=register_runner_engine(),
                progress_bar=False, log_output=False, request_save_on_cell_execute=True,
                execution_timeout=plan.cell_timeout, cwd=str(plan.notebook.parent), km=km,
                **({"on_cell_start": section_progress(plan.notebook)} if plan.progress else {}),
            )
        except PapermillExecutionError as e:
            return "failed", f"cell {e.exec_count} raised {e.ename}: {' '.join(str(e.evalue).split())}", None
    except KeyboardInterrupt as e:
        return "failed", "interrupted by the user (Ctrl-C)", e
    except Exception as e:  # kernel died, cell timeout, papermill I/O: still archive what we have
        return "failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}", None
    return "ok", "", None


def seal(stage: archive.Staging, findings: list[Finding], status: str, reason: str,
         secret_values: list[str]) -> RunResult:
    """The last steps every record takes, however its notebook was executed: findings.json, report.html (a record
    without HTML is still a record), then scrubbing, hashes and run.json (:meth:`archive.Staging.finalize`)."""
    stage.file("findings.json").write_text(json.dumps([f.to_dict() for f in findings], indent=2))
    try:
        render_html(stage.file("notebook.ipynb"), stage.file("report.html"), f"{stage.incident_id}: {stage.notebook}")
    except Exception as e:
        stage.file("report.html").write_text(f"<html><body><p>report could not be rendered: "
                                             f"{type(e).__name__}</p></body></html>")
        if status == "ok":
            reason = f"report rendering failed: {type(e).__name__}"
    record = stage.finalize(status=status, reason=reason, extra_secrets=secret_values,
                            extra={"worst_severity": worst(findings).value, "finding_counts": counts(findings)})
    return RunResult(status, record, reason, findings)


@dataclass(frozen=True)
class Provenance:
    """How an executed notebook came to be a record: run.json's ``mode`` and ``command``, and how it ended."""

    mode: str = "interactive"
    command: str = "inc.archive()"
    status: str = "ok"
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # more of run.json, e.g. the alert behind the run


def archive_executed(executed: Path, incident_id: str, notebook: str, findings: list[Finding],
                     parameters: dict[str, Any], archive_dir: str | os.PathLike[str] | None = None,
                     provenance: Provenance = Provenance()) -> RunResult:
    """Archive a notebook executed outside ``runbook run`` (saved in JupyterLab, or run by papermill or Airflow) as
    a record of ``incident_id``: the same sealing as ``runbook run``, the same upload to an ``s3://`` archive."""
    archive.validate_incident_id(incident_id)
    root, remote = _local_root(archive_dir)
    archive.ensure_writable(root, incident_id)
    env_name = parameters.get("environment")
    secret_values = load_environment(env_name).secret_values() if env_name else []
    stage = archive.begin(root, incident_id, notebook, {
        "parameters": json.loads(redact(json.dumps(parameters, default=str))), "environment": env_name,
        "kernel": KERNEL_NAME, "versions": _versions(), "host": socket.gethostname(),
        "command": provenance.command, "mode": provenance.mode,
        **json.loads(redact(json.dumps(provenance.fields, default=str)))})
    shutil.copyfile(executed, stage.file("notebook.ipynb"))
    result = seal(stage, findings, provenance.status, provenance.reason, secret_values)
    if remote:
        result.remote = upload_record(result.record, remote)
    return result


def section_progress(path: Path) -> Any:
    """An nbclient ``on_cell_start`` hook printing one line to stderr as each section (``## heading``) starts."""
    import nbformat

    sections: dict[str, str] = {}
    heading = ""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            heading = next((ln.lstrip("#").strip() for ln in cell.source.splitlines() if ln.startswith("## ")), heading)
        elif heading:
            sections[cell.get("id", "")] = heading
            heading = ""

    def hook(cell: Any, cell_index: int) -> None:
        name = sections.get(cell.get("id", ""))
        if name:
            print(f"  ... {name}", file=sys.stderr, flush=True)
    return hook


def run_recommended(recommendations: Any, incident_id: str, environment: str, *,
                    urgencies: tuple[str, ...] = ("crit", "warn"), archive_dir: str | None = None) -> Any:
    """Run each recommended notebook (most urgent first) for the incident, each as its own ``runbook run``
    process (this is usually called from inside a notebook's kernel); a table linking their records."""
    import subprocess

    import pandas as pd

    rows = []
    for r in recommendations.itertuples():
        if r.urgency not in urgencies:
            continue
        cmd = [sys.executable, "-m", "runbook_lib.cli", "run", r.notebook, "--incident", incident_id,
               "--env", environment]
        if archive_dir or os.environ.get(archive.ARCHIVE_ENV):
            cmd += ["--archive", str(archive_dir or os.environ[archive.ARCHIVE_ENV])]
        env = {k: v for k, v in os.environ.items() if k != FINDINGS_PATH_ENV}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        path = next((ln.split(": ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("record: ")), "")
        record = f"{Path(path).parent.name}/{Path(path).name}" if path else ""  # INCIDENT/RECORD, as commands take
        status = {0: "ok", 1: "failed"}.get(proc.returncode, "not run")
        rows.append({"notebook": r.notebook, "status": status, "record": record,
                     "reason": proc.stderr.strip().splitlines()[-1] if proc.returncode and proc.stderr.strip() else ""})
    return pd.DataFrame(rows, columns=["notebook", "status", "record", "reason"])


def describe_notebooks() -> list[dict[str, Any]]:
    """Each notebook's name, title (first heading) and parameters, for ``runbook list``."""
    import nbformat

    out = []
    for name in list_notebooks():
        path = notebook_path(name)
        nb = nbformat.read(path, as_version=4)
        title = next((ln.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                      for ln in c.source.splitlines() if ln.startswith("#")), name)
        out.append({"name": name, "title": title, "parameters": list(notebook_parameters(path).values())})
    return out
