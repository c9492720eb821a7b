"""Memory by key pattern over 1,000,000 keys: ``keyspace_memory`` against ``redis-cli --memkeys`` on the
same server, in the same run. Also reports the slowest single server call during our scan (SLOWLOG with a
10 ms threshold). Target: ratio at most 0.5x, and no call over 10 ms.

Usage: .venv/bin/python bench/keyspace_memory.py [--keys 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook_lib.sandbox import start_redis  # noqa: E402
from runbook_lib.sources.redis import RedisTarget, keyspace_memory  # noqa: E402

PATTERNS = [("bull:emails", 0.4, 200), ("session", 0.3, 120), ("cache:product", 0.2, 600), ("rq:job", 0.1, 300)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cli = shutil.which("redis-cli")
    if not cli:
        raise SystemExit("redis-cli not found: apt-get install -y redis-tools")
    server = start_redis(extra_args=["--enable-debug-command", "local"])
    try:
        c = redis.Redis.from_url(server.url, decode_responses=True)
        for prefix, share, size in PATTERNS:
            c.execute_command("DEBUG", "POPULATE", int(args.keys * share), prefix, size)
        print(f"server holds {c.dbsize():,} keys in {len(PATTERNS)} patterns")
        base_cmd = [cli, "-p", str(server.port), "-a", server.password, "--no-auth-warning", "--memkeys"]
        ours, theirs, slow_calls = [], [], 0
        target = RedisTarget(server.url)
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run(base_cmd, capture_output=True, check=True)
            theirs.append(time.perf_counter() - t0)
            c.config_set("slowlog-log-slower-than", 10_000)
            c.slowlog_reset()
            t0 = time.perf_counter()
            df = keyspace_memory(target, budget_s=120)
            ours.append(time.perf_counter() - t0)
            slow_calls += c.slowlog_len()
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"redis-cli --memkeys        median {t:6.2f} s  ({', '.join(f'{x:.2f}' for x in theirs)})")
        print(f"keyspace_memory            median {o:6.2f} s  ({', '.join(f'{x:.2f}' for x in ours)})")
        print(f"ratio: {o / t:.2f}x (target <= 0.5x: {'met' if o / t <= 0.5 else 'MISSED'}); "
              f"server calls over 10 ms during our scans: {slow_calls}")
        print(df.head(6).to_string(index=False))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
