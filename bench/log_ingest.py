"""Ingest 1,000,000 pino lines (about 265 MB) into the normalized frame, against ``pyarrow.json.read_json``
and ``pandas.read_json(lines=True)`` on the same file, each in its own process (wall time and peak RSS), in
the same run. A second file has one corrupt line in the middle: it must not force the slow path for the
whole file. Targets: time <= 1.3x pyarrow, peak memory <= 1.5x pyarrow, >= 3x faster than pandas. Each side
imports its library before its clock starts (a kernel has pandas loaded already); peak RSS includes imports.

Then production-size files: a 2 GB file (what copytruncate leaves: a hole of NUL bytes) with an hour and a half of
pino lines at its end, read for a 60-minute window: target peak RSS under 500 MB and time under 2 s, printed with
its ratio to a full read of the same file (which has to pass over all 2 GB).

Usage: .venv/bin/python bench/log_ingest.py [--lines 1000000] [--rounds 3] [--skip-pandas]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (imports, timed call): each in a fresh process; the libraries are imported before the clock starts, as they
# are in a notebook's kernel, so the ratio compares the ingest itself
CHILD = {
    "pyarrow": ("import pyarrow.json as pj", "t = pj.read_json(PATH); n = t.num_rows"),
    "pandas": ("import pandas as pd", "n = len(pd.read_json(PATH, lines=True))"),
    "runbook": ("from runbook_lib.sources import logs", "df = logs.read_files('api', PATH); n = len(df)"),
    "runbook-window": ("from runbook_lib.sources import logs\nimport datetime as dt\n"
                       "end = dt.datetime.now(dt.timezone.utc); start = end - dt.timedelta(minutes=60)",
                       "df = logs.read_files('portal', PATH, start=start, end=end); n = len(df)"),
}
WRAPPER = """
import resource, sys, time
sys.path.insert(0, {root!r})
PATH = {path!r}
{setup}
t0 = time.perf_counter()
{body}
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, n)
"""


def write_pino(path: Path, lines: int, corrupt_at: int | None = None) -> None:
    rnd = random.Random(1)
    t = int(time.time() * 1000) - lines
    routes = ["/api/tasks", "/api/tasks/42", "/api/me", "/api/projects", "/health"]
    with open(path, "w") as f:
        for i in range(lines):
            if corrupt_at is not None and i == corrupt_at:
                f.write('{"level":30,"time":1700000000000,"msg":"truncated\n')
                continue
            status = 500 if rnd.random() < 0.02 else 200
            f.write(json.dumps({
                "level": 50 if status == 500 else 30, "time": t + i, "pid": 4242, "hostname": "tasks-7d9f8-x2",
                "reqId": f"req-{i:08x}", "req": {"id": i, "method": "GET", "url": rnd.choice(routes),
                                                 "remoteAddress": "10.0.3.17", "remotePort": 52114},
                "res": {"statusCode": status}, "responseTime": round(rnd.uniform(1, 80), 3),
                "msg": "request completed" if status == 200 else "request errored"}, separators=(",", ":")) + "\n")


def measure(kind: str, path: Path) -> tuple[float, float, int]:
    setup, body = CHILD[kind]
    code = WRAPPER.format(root=str(ROOT), path=str(path), setup=setup, body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024.0, int(out[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean, corrupt = Path(tmp) / "clean.log", Path(tmp) / "corrupt.log"
        write_pino(clean, args.lines)
        write_pino(corrupt, args.lines, corrupt_at=args.lines // 2)
        print(f"{args.lines:,} pino lines, {clean.stat().st_size / 1e6:.0f} MB")
        results: dict[str, list[tuple[float, float, int]]] = {"pyarrow": [], "runbook": [], "runbook+corrupt": [],
                                                              "pandas": []}
        for r in range(args.rounds):
            results["pyarrow"].append(measure("pyarrow", clean))
            results["runbook"].append(measure("runbook", clean))
            results["runbook+corrupt"].append(measure("runbook", corrupt))
            if not args.skip_pandas and r == 0:
                results["pandas"].append(measure("pandas", clean))
        med = {k: (statistics.median(x[0] for x in v), max(x[1] for x in v), v[0][2]) for k, v in results.items() if v}
        for k, (t, mem, n) in med.items():
            print(f"{k:16} median {t:6.2f} s   peak RSS {mem:7.0f} MiB   rows {n:,}")
        pa_t, pa_m, _ = med["pyarrow"]
        for k in ("runbook", "runbook+corrupt"):
            t, m, _ = med[k]
            print(f"{k}: time {t / pa_t:.2f}x pyarrow (target <= 1.3x), memory {m / pa_m:.2f}x (target <= 1.5x)")
        if "pandas" in med:
            print(f"pandas.read_json / runbook: {med['pandas'][0] / med['runbook'][0]:.1f}x (target >= 3x)")
        window_case(Path(tmp), args.rounds)


def window_case(tmp: Path, rounds: int) -> None:
    """A 2 GB copytruncate hole with 90 minutes of pino lines at its end, read for the last 60 minutes."""
    path = tmp / "holed.log"
    with open(path, "wb") as f:
        f.truncate(2 << 30)
    now = int(time.time() * 1000)
    with open(path, "a") as f:
        for i in range(90 * 60 * 20):  # 20 lines a second for 90 minutes, ending now
            f.write(json.dumps({"level": 30, "time": now - (90 * 60 * 1000) + i * 50, "msg": "request completed",
                                "res": {"statusCode": 200}}, separators=(",", ":")) + "\n")
    window = [measure("runbook-window", path) for _ in range(rounds)]
    full = measure("runbook", path)
    t, mem, n = statistics.median(w[0] for w in window), max(w[1] for w in window), window[0][2]
    print(f"2 GB file, 60-minute window at its end: {t:.2f} s, peak RSS {mem:.0f} MiB, {n:,} rows "
          f"(targets < 2 s: {'met' if t < 2 else 'MISSED'}, < 500 MiB: {'met' if mem < 500 else 'MISSED'}); "
          f"a full read of the same file: {full[0]:.2f} s, {full[1]:.0f} MiB ({full[0] / t:.1f}x the window read)")


if __name__ == "__main__":
    main()
