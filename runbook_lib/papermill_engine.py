"""``papermill --engine runbook``: execution as ``runbook run`` does it (:mod:`runbook_lib.engine`), then the executed
notebook sealed as a record.

Registered under papermill's ``papermill.engine`` entry points, so a DAG's PapermillOperator (``engine_name=
"runbook"``) or papermill's CLI makes the record in one step. The record goes to ``$RUNBOOK_ARCHIVE`` (else
./archive) for the incident the notebook's parameters name. A notebook whose cells stopped on an error is recorded
as ``failed`` and papermill then reports the error as it always does.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from papermill.engines import NBClientEngine

from .errors import RunbookError


class RecordingEngine(NBClientEngine):
    """nbclient execution, then :func:`runbook_lib.record.record_executed` on the result."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: Any = None, **kwargs: Any) -> Any:
        import nbformat

        from .engine import execute_throttled  # not at import: papermill imports this module as it loads
        from .record import record_executed

        executed = execute_throttled(cls, nb, kernel_name, output_path=output_path, **kwargs)
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
