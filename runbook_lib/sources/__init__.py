"""Data sources. Each check returns a pandas DataFrame, or a :class:`SourceError` saying what failed."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from ..redact import redact

if TYPE_CHECKING:
    import pandas as pd

ErrorKind = Literal["unreachable", "timeout", "lock_timeout", "permission", "missing_extension", "config", "error"]


@dataclass(frozen=True)
class SourceError:
    """A check that could not produce its evidence: which source, what happened, how to fix it."""

    source: str
    check: str
    kind: ErrorKind
    message: str
    hint: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message.strip().splitlines()[0] if self.message.strip() else self.kind))
        object.__setattr__(self, "hint", redact(self.hint))

    def __str__(self) -> str:
        text = f"{self.source}.{self.check}: {self.kind}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def _repr_html_(self) -> str:
        hint = f"<br><i>{html.escape(self.hint)}</i>" if self.hint else ""
        return (
            '<div style="border-left:4px solid #b00;padding:4px 8px;background:#fff4f4">'
            f"<b>{html.escape(self.source)}.{html.escape(self.check)}</b> could not be read "
            f"({html.escape(self.kind)}): {html.escape(self.message)}{hint}</div>"
        )


Evidence = Union["pd.DataFrame", SourceError]
