"""Write a thin notebook from a list of (kind, source) cells: python scripts/new_notebook.py SPEC.py OUT.ipynb.

SPEC.py defines CELLS = [("md"|"params"|"code", "source"), ...] and optionally METADATA (merged into the notebook's
metadata, e.g. {"runbook": {"requires": ["postgres"]}}: the sources it cannot run without). The notebook names the ``runbook``
kernel and carries no outputs. Used to keep notebooks uniform; edit them in JupyterLab afterwards as you like.
"""

from __future__ import annotations

import runpy
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def build(cells: list[tuple[str, str]], metadata: dict | None = None) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "runbook", "display_name": "Python (runbook)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.update(metadata or {})
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(new_markdown_cell(src))
        else:
            cell = new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    return nb


if __name__ == "__main__":
    spec, out = sys.argv[1], sys.argv[2]
    ns = runpy.run_path(spec)
    nbformat.write(build(ns["CELLS"], ns.get("METADATA")), out)
