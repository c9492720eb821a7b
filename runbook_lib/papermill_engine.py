"""Our papermill engines: nbclient execution with the notebook saved at most once a second while it runs
(:class:`RunnerEngine`, what ``runbook run`` and the executors use), and ``papermill --engine runbook``, the same
followed by the executed notebook sealed as a record (:class:`RecordingEngine`).

``RecordingEngine`` is registered under papermill's ``papermill.engine`` entry points, so a DAG's PapermillOperator (``engine_name=
"runbook"``) or papermill's CLI makes the record in one step. The record goes to ``$RUNBOOK_ARCHIVE`` (else
./archive) for the incident the notebook's parameters name. A notebook whose cells stopped on an error is recorded
as ``failed`` and papermill then reports the error as it always does.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

from .errors import RunbookError

RUNNER_ENGINE = "runbook-runner"
SAVE_EVERY_S = 1.0


class ThrottledSaves(NotebookExecutionManager):
    """papermill's execution manager, saving the output notebook before and after every cell only when the last
    save is ``SAVE_EVERY_S`` old (papermill writes and validates the whole notebook twice per cell: about 40% of a
    short run's execution time here). The first save and the last (``notebook_complete``, also after a failure)
    always happen, so a run killed mid-way loses at most a second of outputs."""

    _saved = False

    def save(self, **kwargs: Any) -> None:
        fresh = (self.now() - self.last_save_time).total_seconds() < SAVE_EVERY_S
        if self._saved and fresh and self.end_time is None:
            return
        super().save(**kwargs)
        self._saved = True


class RunnerEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`ThrottledSaves`; otherwise papermill's ``Engine.execute_notebook``
    step for step."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: Any = None, progress_bar: bool = True,
                         log_output: bool = False, autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        nb_man = ThrottledSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


def register_runner_engine() -> str:
    """Register :class:`RunnerEngine` with papermill (idempotent); returns its name for ``engine_name``."""
    papermill_engines.register(RUNNER_ENGINE, RunnerEngine)
    return RUNNER_ENGINE


class RecordingEngine(RunnerEngine):
    """nbclient execution, then :func:`runbook_lib.record.record_executed` on the result."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: Any = None, **kwargs: Any) -> Any:
        import nbformat

        from .record import record_executed

        executed = super().execute_notebook(nb, kernel_name, output_path=output_path, **kwargs)
        with tempfile.TemporaryDirectory(prefix="runbook-record-") as d:
            path = Path(d) / Path(str(output_path or "executed.ipynb")).name
            nbformat.write(executed, path)
            try:
                result = record_executed(path, command="papermill --engine runbook")
            except RunbookError as e:
                print(f"runbook: not recorded: {e}", file=sys.stderr)
                return executed
        print(f"runbook: recorded {result.record} ({result.status})", file=sys.stderr)
        return executed
