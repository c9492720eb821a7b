"""What the pre-commit hooks keep true, checked in CI too: tracked notebooks carry no outputs, the code passes
pyflakes. Each check is shown to fail on a file that breaks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _nbstripout_verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nbstripout"), "--keep-id", "--verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=120)


def test_tracked_notebooks_carry_no_outputs(tmp_path):
    assert len(NOTEBOOKS) >= 6
    clean = _nbstripout_verify(*NOTEBOOKS)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert cells and all(c["outputs"] == [] and c["execution_count"] is None for c in cells), path.name
    dirty = json.loads(NOTEBOOKS[0].read_text())
    code = next(c for c in dirty["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["postgres://app:hunter2@db/app\n"]}]
    (tmp_path / NOTEBOOKS[0].name).write_text(json.dumps(dirty))
    assert _nbstripout_verify(tmp_path / NOTEBOOKS[0].name).returncode != 0


def test_the_code_passes_pyflakes(tmp_path):
    places = [str(ROOT / p) for p in ("runbook_lib", "tests", "bench", "integrations", "conftest.py")]
    proc = subprocess.run([sys.executable, "-m", "pyflakes", *places], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / "broken.py").write_text("import os\n")
    assert subprocess.run([sys.executable, "-m", "pyflakes", str(tmp_path / "broken.py")],
                          capture_output=True).returncode != 0
