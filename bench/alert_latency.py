"""Alert received -> record archived through ``runbook serve`` with its warm executors, against a cold
``papermill`` run of an empty notebook on the same machine, in the same run.

Two measurements over ``--alerts`` alerts (default 50) at the default concurrency (2 executors):
sequential (one alert at a time: the latency an on-call engineer sees) and burst (all at once: queueing
included). Latency is the server's own: from request received to the record's spool entry marked done.
Target: sequential p50 at most 0.5x the cold papermill median.

Then a flood: 10,000 alerts posted by 32 concurrent senders (one payload each, plus one payload of 10,000 alerts),
while /healthz is polled: its p99 must stay under 100 ms, and the flood must be refused or capped (413 for the big
payload, 503 with Retry-After once --max-queued runs wait), never all queued.

Usage: .venv/bin/python bench/alert_latency.py [--alerts 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.kernel import KERNEL_NAME, ensure_kernelspec  # noqa: E402
from runbook_lib.sandbox import free_port  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-token-0123456789abcdef0123456789abcdef"


def empty_notebook(path: Path, with_params: bool) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (runbook)", "language": "python"}
    if with_params:
        cell = new_code_cell('incident_id = "x"\nenvironment = "local"\nwindow_start = "-60m"\nwindow_end = "now"')
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell]
    nbformat.write(nb, path)


def alert(i: int) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Bench", "n": str(i)}, "fingerprint": f"bench-{i}-{time.time()}"}]}
    ).encode()


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(int(p * len(v)), len(v) - 1)]


def flood_and_probe(url: str, headers: dict[str, str], n: int) -> dict[str, object]:
    """Post ``n`` single-alert payloads from 32 threads while probing /healthz; and one payload of ``n`` alerts."""
    import threading
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    probes: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get(url + "/healthz")
                probes.append(time.perf_counter() - t0)
                time.sleep(0.01)
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    codes: Counter[int] = Counter()
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as c, ThreadPoolExecutor(32) as pool:
        for status in pool.map(lambda i: c.post(url + "/alerts", content=alert(50_000 + i), headers=headers)
                               .status_code, range(n)):
            codes[status] += 1
        big = json.dumps({"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "Bench", "n": str(i)}, "fingerprint": f"big-{i}"}
            for i in range(n)]}).encode()
        big_status = c.post(url + "/alerts", content=big, headers=headers).status_code
    stop.set()
    prober.join(timeout=10)
    return {"healthz": probes, "codes": dict(codes), "big": big_status}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ensure_kernelspec()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        nbs = tmp / "notebooks"
        nbs.mkdir()
        empty_notebook(nbs / "empty.ipynb", with_params=True)
        empty_notebook(tmp / "cold.ipynb", with_params=False)
        (tmp / "routes.yaml").write_text("routes:\n  - {name: bench, match: {alertname: Bench}, notebook: empty}\n")
        cold = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "papermill"), str(tmp / "cold.ipynb"), str(tmp / "out.ipynb"), "-k",
                            KERNEL_NAME, "--no-progress-bar"], check=True, capture_output=True)
            cold.append(time.perf_counter() - t0)
        port = free_port()
        env = {**os.environ, "RUNBOOK_WEBHOOK_TOKEN": TOKEN, "RUNBOOK_NOTEBOOKS_DIR": str(nbs)}
        spool = tmp / "spool"
        server = subprocess.Popen([str(BIN / "runbook"), "serve", "--port", str(port), "--archive", str(tmp / "arch"),
                                   "--spool", str(spool), "--routes", str(tmp / "routes.yaml")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            time.sleep(3)  # let the executors warm up, as a long-running server's would be

            def done(ids: list[str]) -> dict[str, dict]:
                out = {}
                for i in ids:
                    p = spool / "done" / f"{i}.json"
                    if p.exists():
                        out[i] = json.loads(p.read_text())
                return out

            def latency(job: dict) -> float:
                return float(job["finished_at"]) - float(job["received_at"])

            sequential = []
            for i in range(args.alerts):
                jid = httpx.post(url + "/alerts", content=alert(i), headers=headers).json()["accepted"][0]["id"]
                while not done([jid]):
                    time.sleep(0.02)
                sequential.append(latency(done([jid])[jid]))
                time.sleep(0.3)  # the executor slot re-warms between pages, as it would between real alerts
            ids = [httpx.post(url + "/alerts", content=alert(1000 + i), headers=headers).json()["accepted"][0]["id"]
                   for i in range(args.alerts)]
            while len(done(ids)) < len(ids):
                time.sleep(0.1)
            burst = [latency(j) for j in done(ids).values()]
            flood = flood_and_probe(url, headers, 10_000)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        c = statistics.median(cold)
        print(f"cold papermill, empty notebook      median {c:6.2f} s")
        print(f"alert -> record, one at a time       p50 {pct(sequential, 0.5):6.2f} s  p95 {pct(sequential, 0.95):6.2f} s")
        print(f"alert -> record, {args.alerts} at once (2 executors) p50 {pct(burst, 0.5):6.2f} s  "
              f"p95 {pct(burst, 0.95):6.2f} s")
        ratio = pct(sequential, 0.5) / c
        print(f"ratio (one at a time p50 / cold papermill): {ratio:.2f}x (target <= 0.5x: {'met' if ratio <= 0.5 else 'MISSED'})")
        p99 = pct(flood["healthz"], 0.99) * 1000
        print(f"flood of 10,000 alerts: /healthz p99 {p99:.0f} ms over {len(flood['healthz'])} probes "
              f"(target < 100 ms: {'met' if p99 < 100 else 'MISSED'}); answers {flood['codes']}; "
              f"one 10,000-alert payload -> {flood['big']}")


if __name__ == "__main__":
    main()
