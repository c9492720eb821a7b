"""The history read a notebook makes: every default query (database, queues, services) over a 6-hour window at 15 s
resolution plus its 6-hour baseline, against one raw ``query_range`` call of the same span and step, interleaved,
on a real Prometheus holding 12 hours of backfilled exporter series (``promtool tsdb create-blocks-from
openmetrics``).

Target: the whole read under 1 s; printed with its ratio to the one raw call.
Usage: .venv/bin/python bench/prom_history.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.sandbox.metrics import start_prometheus  # noqa: E402
from runbook_lib.sources import prometheus as prom  # noqa: E402

STEP_S = 15
WINDOW = timedelta(hours=6)
STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)", "disabled")
MODES = ("accesssharelock", "rowsharelock", "rowexclusivelock", "shareupdateexclusivelock", "sharelock",
         "sharerowexclusivelock", "exclusivelock", "accessexclusivelock")


def openmetrics(start: float, end: float) -> str:
    """12 h of the series the default queries read, every 15 s, with an incident in the last 2 hours."""
    gauges: dict[str, list[tuple[str, float]]] = {
        "pg_stat_activity_count": [(f'state="{s}",datname="app"', 20.0) for s in STATES],
        "pg_stat_activity_max_tx_duration": [(f'state="{s}",datname="app"', 2.0) for s in STATES],
        "pg_locks_count": [(f'mode="{m}",datname="app"', 3.0) for m in MODES],
        "redis_memory_used_bytes": [("", 200e6)], "redis_connected_clients": [("", 40.0)], "redis_up": [("", 1.0)],
        "redis_key_size": [(f'key="bull:q{i}:wait",db="db0"', 50.0) for i in range(10)],
    }
    counters: dict[str, list[tuple[str, float]]] = {
        "pg_stat_database_xact_commit": [('datname="app"', 300.0)], "pg_stat_database_xact_rollback":
            [('datname="app"', 2.0)], "pg_stat_database_deadlocks": [('datname="app"', 0.001)],
        "redis_evicted_keys_total": [("", 0.01)], "redis_rejected_connections_total": [("", 0.0)],
        "redis_errors_total": [('err="OOM"', 0.0)],
        "http_requests_total": [(f'job="{j}",code="{c}"', r) for j in ("identity", "portal", "tasks")
                                for c, r in (("200", 50.0), ("500", 0.5), ("401", 2.0))],
    }
    onset = end - 2 * 3600
    lines = []
    for name, series in gauges.items():
        lines.append(f"# TYPE {name} gauge")
        for labels, level in series:
            for k in range(int((end - start) // STEP_S) + 1):
                t = start + k * STEP_S
                v = level * (1 + 0.05 * math.sin(t / 600)) * (3 if t >= onset else 1)
                lines.append(f"{name}{{{labels}}} {v:.3f} {t:.0f}")
    for name, series in counters.items():
        lines.append(f"# TYPE {name.removesuffix('_total')} counter")
        for labels, rate in series:
            total = 0.0
            for k in range(int((end - start) // STEP_S) + 1):
                t = start + k * STEP_S
                total += rate * STEP_S * (4 if t >= onset else 1)
                lines.append(f"{name}{{{labels}}} {total:.3f} {t:.0f}")
    return "\n".join(lines) + "\n# EOF\n"


def backfill(directory: Path, start: float, end: float) -> Path:
    source, tsdb = directory / "series.om", directory / "tsdb"
    source.write_text(openmetrics(start, end))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)], check=True,
                   capture_output=True, timeout=600)
    return tsdb


def raw_call(url: str, start: datetime, end: datetime) -> float:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/api/v1/query_range", data={"query": prom.QUERIES["pg_connections"].promql,
                                                      "start": start.timestamp(), "end": end.timestamp(),
                                                      "step": STEP_S}, timeout=30)
    r.raise_for_status()
    return time.perf_counter() - t0


def history_read(p: prom.Prometheus, names: list[str], start: datetime, end: datetime) -> float:
    t0 = time.perf_counter()
    hist = prom.history(p, names, start, end, baseline=WINDOW, step_s=STEP_S)
    elapsed = time.perf_counter() - t0
    if not hasattr(hist, "attrs") or hist.attrs["failed"] or hist.attrs["missing"]:
        raise SystemExit(f"history read incomplete: {getattr(hist, 'attrs', hist)}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    start = end - WINDOW
    names = list(dict.fromkeys(prom.DATABASE + prom.QUEUES + prom.SERVICES))
    names.remove("pg_replication_lag")  # a primary's exporter has no such series; nothing to read
    with tempfile.TemporaryDirectory(prefix="bench-prom-") as d:
        tsdb = backfill(Path(d), (start - WINDOW).timestamp() - 300, end.timestamp())
        stack = start_prometheus(tsdb)
        try:
            p = prom.Prometheus(stack.url)
            history_read(p, names, start, end)  # warm the page cache and the head
            raw, ours = [], []
            for _ in range(args.rounds):
                raw.append(raw_call(stack.url, start - WINDOW, end))
                ours.append(history_read(p, names, start, end))
        finally:
            stack.stop()
    points = int(2 * WINDOW.total_seconds() / STEP_S)
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"{len(names)} queries, 12 h at {STEP_S} s ({points} points a series), {args.rounds} rounds")
    print(f"one raw query_range: median {r * 1000:.0f} ms")
    print(f"history read:        median {o * 1000:.0f} ms  (ratio {o / r:.1f}x)  target < 1000 ms: "
          f"{'met' if o < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
