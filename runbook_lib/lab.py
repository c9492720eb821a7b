"""JupyterLab for one incident: working copies of the notebooks (never the tracked ``notebooks/``), the server's
environment, and archiving what a responder sees as a record of the incident.

A working copy is the tracked notebook with papermill's ``injected-parameters`` cell (``incident_id`` and
``environment``; the window stays relative, so a re-run looks at now). An existing copy is the responder's work and
is never overwritten.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import archive
from .config import load_environment, project_dir
from .errors import RunbookError
from .findings import Report

LAB_DIR_ENV = "RUNBOOK_LAB_DIR"


@dataclass(frozen=True)
class Workspace:
    """An incident's working directory: which copies this call created and which it kept."""

    incident_id: str
    environment: str
    directory: Path
    created: tuple[str, ...]
    kept: tuple[str, ...]


def workspace_dir(incident_id: str, archive_dir: str | os.PathLike[str] | None = None) -> Path:
    """``$RUNBOOK_LAB_DIR/<incident>``, else ``<archive>/.runbook/lab/<incident>`` (beside the records, where
    ``archive list``/``verify``/``prune`` never look)."""
    archive.validate_incident_id(incident_id)
    base = os.environ.get(LAB_DIR_ENV)
    return (Path(base).expanduser().resolve() if base else archive.archive_root(archive_dir) / ".runbook" / "lab"
            ) / incident_id


def open_workspace(incident_id: str, environment: str, archive_dir: str | os.PathLike[str] | None = None
                   ) -> Workspace:
    """Create the incident's working copies (missing ones only). A bad incident id or environment is a one-line
    error before anything is written."""
    from .runner import list_notebooks, notebook_path

    env = load_environment(environment)
    env_param = str(env.path) if os.sep in environment or environment.endswith((".yaml", ".yml")) else environment
    directory = workspace_dir(incident_id, archive_dir)
    directory.mkdir(parents=True, exist_ok=True)
    created, kept = [], []
    for name in list_notebooks():
        target = directory / f"{name}.ipynb"
        if target.exists():
            kept.append(name)
            continue
        _write_copy(notebook_path(name), target, {"incident_id": incident_id, "environment": env_param})
        created.append(name)
    return Workspace(incident_id, env_param, directory, tuple(created), tuple(kept))


def _write_copy(source: Path, target: Path, parameters: dict[str, Any]) -> None:
    import nbformat
    from papermill.parameterize import parameterize_notebook

    from papermill.iorw import load_notebook_node

    nb = parameterize_notebook(load_notebook_node(str(source)), parameters)  # as runbook run injects them
    for cell in nb.cells:  # papermill's per-cell execution bookkeeping means nothing in a working copy
        cell.metadata.pop("papermill", None)
        if not cell.metadata.get("tags", True):
            del cell.metadata["tags"]
    nb.metadata.setdefault("runbook", {})["working_copy"] = {"of": source.name, **parameters}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".copy-", suffix=".ipynb")
    with os.fdopen(fd, "w") as f:
        nbformat.write(nb, f)
    os.replace(tmp, target)


def server_environment(ws: Workspace, archive_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The JupyterLab server's variables, which its kernels and terminals inherit: ``runbook`` on ``PATH``, the
    archive that ``inc.archive()`` writes to, the project's ``params/``."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir]])
    env[archive.ARCHIVE_ENV] = str(archive.archive_root(archive_dir))
    env["RUNBOOK_PARAMS_DIR"] = str(project_dir("params"))
    env["RUNBOOK_NOTEBOOKS_DIR"] = str(project_dir("notebooks"))
    return env


def server_command(ws: Workspace, extra: list[str]) -> list[str]:
    """``jupyter lab`` on the working directory with the runbook kernel; terminals start a non-login shell, which
    keeps the server's ``PATH`` (a login shell re-reads /etc/profile, which resets it)."""
    shell = os.environ.get("SHELL") or "/bin/bash"
    as_root = ["--allow-root"] if os.geteuid() == 0 and "--allow-root" not in extra else []  # containers, CI
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ws.directory}", *as_root,
            "--MappingKernelManager.default_kernel_name=runbook",
            f"--ServerApp.terminado_settings={{'shell_command': [{shell!r}]}}", *extra]


# --------------------------------------------------------------------------- archive what you see

@dataclass(frozen=True)
class Archived:
    """Where ``inc.archive()`` put the record."""

    record: Path
    worst: str
    findings: int

    def _repr_html_(self) -> str:
        return (f"<p>Archived as a record of incident <b>{html.escape(self.record.parent.name)}</b>: "
                f"<code>{html.escape(str(self.record))}</code> (worst: {html.escape(self.worst)}, "
                f"{self.findings} findings). Check it with <code>runbook archive verify "
                f"--archive {html.escape(str(self.record.parent.parent))}</code>.</p>")

    def __repr__(self) -> str:
        return f"archived: {self.record} (worst {self.worst}, {self.findings} findings)"


def saved_notebook(session: str, this_cell: int) -> Path:
    """The notebook file this kernel's cells came from, checked to hold what is on screen: its last saved outputs
    are those of the cell run just before this one (``this_cell`` is the running cell's ``[n]``). Otherwise a
    one-line error saying what to do."""
    import nbformat

    path = Path(session or "")
    if not path.is_file():
        raise RunbookError(f"the notebook {path.name} is not saved where JupyterLab opened it: save it (Ctrl+S), "
                           "then run this cell again")
    counts = [c.get("execution_count") or 0 for c in nbformat.read(path, as_version=4).cells
              if c.cell_type == "code"]
    last = max(counts, default=0)
    if last != this_cell - 1:
        raise RunbookError(
            f"the saved {path.name} does not hold what is on screen (its last saved cell is [{last}], the last cell "
            f"run is [{this_cell - 1}]): save it (Ctrl+S), then run this cell again")
    return path


@dataclass(frozen=True)
class NotArchived:
    """``inc.archive()`` that archived nothing, and why: a papermill run (it archives itself), or a notebook not
    saved since its last cell ran."""

    reason: str

    def _repr_html_(self) -> str:
        return f"<p><b>Not archived yet</b>: {html.escape(self.reason)}</p>"

    def __repr__(self) -> str:
        return f"not archived: {self.reason}"


def in_jupyterlab(shell: Any = None) -> bool:
    """Whether this kernel runs a notebook a person has open (JupyterLab names it in ``__session__``), not one
    ``runbook run`` executes (its kernel has a findings path and no session)."""
    from .findings import FINDINGS_PATH_ENV

    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython ships with ipykernel
            return False
        shell = get_ipython()
    return shell is not None and bool(shell.user_ns.get("__session__")) and not os.environ.get(FINDINGS_PATH_ENV)


def archive_what_you_see(report: Report, parameters: dict[str, Any], shell: Any = None) -> Archived | NotArchived:
    """Archive the notebook this kernel runs, as last saved, with the findings its report holds now, as a record of
    the incident (``mode: interactive``). A notebook whose saved outputs are not the ones on screen is not archived,
    with one line saying what to do; nothing is archived from a kernel ``runbook run`` started (the runner archives
    that run)."""
    from IPython import get_ipython

    from .runner import archive_executed

    shell = shell or get_ipython()
    if not in_jupyterlab(shell):
        return NotArchived("this notebook is not open in JupyterLab; runbook run archives its own runs")
    try:
        path = saved_notebook(shell.user_ns["__session__"], len(shell.history_manager.input_hist_parsed) - 1)  # In[n] is this cell
    except RunbookError as e:  # Run All reaches this cell before the responder saved: an instruction, not a failure
        return NotArchived(str(e))
    name = report.notebook or path.stem
    result = archive_executed(path, report.incident_id, name, report.findings, parameters)
    return Archived(result.record, report.worst().value, len(report.findings))
