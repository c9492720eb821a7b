"""Memory by key pattern over 1,000,000 keys, on the same server in the same run, against two baselines:
``redis-cli --memkeys`` (target: at most 0.5x) and the floor, one SCAN of the whole keyspace with nothing else,
parsed by hiredis as ours is (target: at most 1.5x: grouping and sampling must cost less than the scan itself).
Also reports the server calls over 10 ms during our scans (SLOWLOG; target: none).

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
from runbook_lib.sources.redis import RedisSafety, RedisTarget, keyspace_memory, raw_scan  # noqa: E402

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
        ours, theirs, floors, slow_calls = [], [], [], 0
        slow_seen: list[tuple[bytes, int]] = []
        target = RedisTarget(server.url)
        scan_count = RedisSafety().scan_count
        print(f"hiredis parser: {redis.utils.HIREDIS_AVAILABLE}; SCAN COUNT {scan_count}")
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run(base_cmd, capture_output=True, check=True)
            theirs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cursor, scanned = 0, 0
            while True:  # the same SCAN steps ours takes, parsed by hiredis, nothing else
                cursor, keys = raw_scan(c, cursor, scan_count)
                scanned += len(keys)
                if cursor == 0:
                    break
            floors.append(time.perf_counter() - t0)
            c.config_set("slowlog-log-slower-than", 10_000)
            c.slowlog_reset()
            t0 = time.perf_counter()
            df = keyspace_memory(target, budget_s=120)
            ours.append(time.perf_counter() - t0)
            slow_calls += c.slowlog_len()
            slow_seen += [(e["command"][:40], e["duration"] // 1000) for e in c.slowlog_get(5)]
        o, t, f = statistics.median(ours), statistics.median(theirs), statistics.median(floors)
        print(f"redis-cli --memkeys        median {t:6.2f} s  ({', '.join(f'{x:.2f}' for x in theirs)})")
        print(f"SCAN alone (floor)         median {f:6.2f} s  ({', '.join(f'{x:.2f}' for x in floors)}; {scanned:,} keys)")
        print(f"keyspace_memory            median {o:6.2f} s  ({', '.join(f'{x:.2f}' for x in ours)})")
        print(f"ratio to redis-cli: {o / t:.2f}x (target <= 0.5x: {'met' if o / t <= 0.5 else 'MISSED'}); "
              f"ratio to the SCAN floor: {o / f:.2f}x (target <= 1.5x: {'met' if o / f <= 1.5 else 'MISSED'}); "
              f"server calls over 10 ms during our scans: {slow_calls} {slow_seen[:5] if slow_seen else ''}")
        print(df.head(6).to_string(index=False))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
