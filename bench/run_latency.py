"""``runbook run database_pressure`` (execute + render + archive) against ``papermill`` running an empty
notebook, both as commands on the same machine, interleaved, against the same sandbox. A second reference is
papermill with the imports ``runbook`` skips (``runner.UNUSED_IMPORTS``) skipped too, so the gain from skipping them
is not mistaken for less work per run.

Target: median ratio at most 1.4x (issue 14). Usage: .venv/bin/python bench/run_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.kernel import KERNEL_NAME, ensure_kernelspec  # noqa: E402
from runbook_lib.sandbox import Sandbox, seed_app_schema  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ensure_kernelspec()
    with Sandbox.start() as sb, tempfile.TemporaryDirectory() as tmp:
        seed_app_schema(sb.postgres.admin_dsn)
        env = {**os.environ, **sb.env()}
        empty = Path(tmp) / "empty.ipynb"
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (runbook)", "language": "python"}
        nbformat.write(nb, empty)
        papermill_cmd = [str(BIN / "papermill"), str(empty), str(Path(tmp) / "out.ipynb"), "-k", KERNEL_NAME,
                         "--no-progress-bar"]
        trimmed_cmd = [sys.executable, "-c", "import sys; from runbook_lib.runner import skip_unused_imports; "
                       "skip_unused_imports(); from papermill.cli import papermill; sys.argv[0] = 'papermill'; "
                       "papermill()", *papermill_cmd[1:]]
        runbook_cmd = [str(BIN / "runbook"), "run", "database_pressure", "--incident", "bench", "--env", "local",
                       "-p", "sample_seconds=0", "--archive", str(Path(tmp) / "archive")]
        timed(papermill_cmd, env)  # warm caches (imports, kernel spec lookup)
        timed(trimmed_cmd, env)
        timed(runbook_cmd, env)
        base, trimmed, ours = [], [], []
        for _ in range(args.rounds):
            base.append(timed(papermill_cmd, env))
            trimmed.append(timed(trimmed_cmd, env))
            ours.append(timed(runbook_cmd, env))
        b, t, o = statistics.median(base), statistics.median(trimmed), statistics.median(ours)
        print(f"papermill, empty notebook        median {b:6.2f} s  ({', '.join(f'{x:.2f}' for x in base)})")
        print(f"  the same, unused imports cut   median {t:6.2f} s  ({', '.join(f'{x:.2f}' for x in trimmed)})")
        print(f"runbook run database_pressure    median {o:6.2f} s  ({', '.join(f'{x:.2f}' for x in ours)})")
        print(f"ratio to the trimmed papermill: {o / t:.2f}x")
        print(f"ratio: {o / b:.2f}x (target <= 1.4x: {'met' if o / b <= 1.4 else 'MISSED'})")


if __name__ == "__main__":
    main()
