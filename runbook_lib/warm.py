"""A warm executor process: imports papermill and the renderer and starts a kernel *before* its job arrives,
then runs exactly one job read from stdin and exits (kernels are never reused).

Protocol (one JSON object per line): it prints ``{"ready": true}`` once warm, reads one job
``{"notebook", "incident_id", "environment", "parameters", "archive", "extra_run"}`` and prints the result
``{"status", "record", "reason"}``. End of input before a job means: shut down quietly.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    import logging

    archive_dir = argv[0] if argv else None
    for name in ("papermill", "nbclient", "traitlets", "jupyter_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from . import runner
    from .errors import RunbookError

    kernel = runner.warm_kernel(archive_dir)
    try:
        import papermill  # noqa: F401  (warm the imports the run needs)
        from nbconvert import HTMLExporter

        HTMLExporter(template_name="lab")
        print(json.dumps({"ready": True}), flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            runner.stop_kernel(kernel.km)
            return 0
        job: dict[str, Any] = json.loads(line)
        try:
            env = job.get("environment") or "local"
            is_path = "/" in env or env.endswith((".yaml", ".yml"))
            res = runner.run_notebook(job["notebook"], job["incident_id"],
                                      environment=None if is_path else env, env_file=env if is_path else None,
                                      parameters={k: v if isinstance(v, str) else json.dumps(v)
                                                  for k, v in (job.get("parameters") or {}).items()},
                                      archive_dir=job.get("archive") or archive_dir, kernel=kernel,
                                      extra_run=job.get("extra_run") or {})
            out = {"status": res.status, "record": str(res.record), "reason": res.reason, "remote": res.remote}
        except RunbookError as e:
            runner.stop_kernel(kernel.km)
            out = {"status": "rejected", "record": "", "reason": str(e)}
        except Exception as e:  # report, do not crash: the server records the job as failed with this reason
            import traceback

            from .redact import redact

            print(redact(traceback.format_exc()), file=sys.stderr, flush=True)
            out = {"status": "failed", "record": "", "reason": redact(f"{type(e).__name__}: {e}")[:300]}
        print(json.dumps(out), flush=True)
        return 0
    finally:
        runner.stop_kernel(kernel.km)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
