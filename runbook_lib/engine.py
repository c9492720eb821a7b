"""The papermill engine ``runbook run`` and the alert executors execute with: papermill's nbclient engine, with the
output notebook saved at most once a second while cells run (:class:`RunnerEngine`)."""

from __future__ import annotations

from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

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


def execute_throttled(engine: type[NBClientEngine], nb: Any, kernel_name: str, output_path: Any = None,
                      progress_bar: bool = True, log_output: bool = False, autosave_cell_every: int = 30,
                      **kwargs: Any) -> Any:
    """papermill's ``Engine.execute_notebook`` step for step, with :class:`ThrottledSaves` as the manager."""
    nb_man = ThrottledSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                            autosave_cell_every=autosave_cell_every)
    nb_man.notebook_start()
    try:
        engine.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
    finally:
        nb_man.cleanup_pbar()
        nb_man.notebook_complete()
    return nb_man.nb


class RunnerEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`ThrottledSaves`."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, **kwargs: Any) -> Any:
        return execute_throttled(cls, nb, kernel_name, **kwargs)


def register_runner_engine() -> str:
    """Register :class:`RunnerEngine` with papermill (idempotent); returns its name for ``engine_name``."""
    papermill_engines.register(RUNNER_ENGINE, RunnerEngine)
    return RUNNER_ENGINE
