"""One-line hints for the mistakes a responder makes in a notebook at 3 a.m., installed in every ``runbook`` kernel.

A cell run out of order (its step before the first cells, or after a kernel restart) raises NameError under outputs
that still look fresh; instead of a traceback it says, in one line, what to run first. A :class:`RunbookError` (a
problem the responder can fix: "save the notebook first") is its one line too, as on the command line.
"""

from __future__ import annotations

from typing import Any

HINT = ("NameError: {name} is not defined yet: run the cells above this one first (Run > Run All Above Selected "
        "Cell; the first cells set the parameters and start the incident), or check the name's spelling")


def install(shell: Any = None) -> None:
    """Show a NameError raised by a cell's own code as :data:`HINT`, and a RunbookError as its message, in this IPython
    kernel (nothing outside IPython): an ``error`` output whose whole traceback is that line. The cell still fails, so Run All stops there and papermill records the failure."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return
    shell = shell or get_ipython()
    if shell is None:
        return

    from .errors import RunbookError

    def handler(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        if isinstance(value, RunbookError):
            stb = [f"{etype.__name__}: {value}"]
        elif _raised_in_cell(self, tb):
            stb = [HINT.format(name=getattr(value, "name", None) or str(value))]
        else:  # a NameError inside a library is a bug: its full traceback
            stb = self.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
        self._showtraceback(etype, value, stb)  # IPython drops a custom handler's return value: show it ourselves
        return stb
    shell.set_custom_exc((NameError, RunbookError), handler)


def _raised_in_cell(shell: Any, tb: Any) -> bool:
    """Whether the innermost frame runs the notebook's own code (its globals are the user namespace)."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals is shell.user_ns
