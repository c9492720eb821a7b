"""A warm executor process: imports papermill and the renderer once, and before each job starts a fresh
kernel that is used for that job only (kernels are never reused).

Protocol (one JSON object per line): it prints ``{"ready": true}`` when a kernel is waiting, reads one job
``{"notebook", "incident_id", "environment", "parameters", "archive", "extra_run"}``, prints the result
``{"status", "record", "reason"}``, and starts over. End of input means: shut down quietly.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    import importlib

    archive_dir = argv[0] if argv else None
    max_jobs = int(argv[1]) if len(argv) > 1 else 100  # then exit, so memory never creeps
    from . import runner

    runner.quiet_libraries()
    runner.skip_unused_imports()

    importlib.import_module("papermill")  # imported once, before the first job

    runner.report_exporter()  # the report template, loaded once
    import signal

    current: list[Any] = []

    def terminate(signum: int, frame: Any) -> None:  # stopped by the server: leave nothing behind
        for k in current:
            runner.discard_warm(k)
        sys.exit(0)
    signal.signal(signal.SIGTERM, terminate)
    for _ in range(max_jobs):
        kernel = runner.warm_kernel(archive_dir)  # a fresh kernel for every job, started before it arrives
        current[:] = [kernel]
        print(json.dumps({"ready": True}), flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            runner.discard_warm(kernel)
            return 0
        print(json.dumps(_run(json.loads(line), kernel, archive_dir)), flush=True)
    return 0


def _run(job: dict[str, Any], kernel: Any, archive_dir: str | None) -> dict[str, Any]:
    from . import runner
    from .errors import RunbookError
    from .redact import redact

    try:
        plan = runner.prepare(job["notebook"], job["incident_id"], environment=job.get("environment") or "local",
                              parameters=job.get("parameters") or {}, archive_dir=job.get("archive") or archive_dir,
                              run_fields=job.get("extra_run") or {})
        res = runner.run_notebook(plan, kernel=kernel)
        return {"status": res.status, "record": str(res.record), "reason": res.reason, "remote": res.remote}
    except RunbookError as e:
        runner.discard_warm(kernel)
        return {"status": "rejected", "record": "", "reason": str(e)}
    except Exception as e:  # report, do not crash: the server records the job as failed with this reason
        import traceback

        runner.discard_warm(kernel)
        print(redact(traceback.format_exc()), file=sys.stderr, flush=True)
        return {"status": "failed", "record": "", "reason": redact(f"{type(e).__name__}: {e}")[:300]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
