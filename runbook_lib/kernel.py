"""The Jupyter kernel spec the notebooks name (``runbook``) and the runner uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KERNEL_NAME = "runbook"
DISPLAY_NAME = "Python (runbook)"
# every kernel of the spec (JupyterLab's too) answers a cell run out of order with a one-line hint
STARTUP = "--IPKernelApp.exec_lines=[\"__import__('runbook_lib.hints').hints.install()\"]"


def ensure_kernelspec() -> Path:
    """Install the ``runbook`` kernel spec for this interpreter unless it already points here."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() and STARTUP in spec.argv:
            return Path(spec.resource_dir)
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    path = install(kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME, prefix=sys.prefix)
    kernel_json = Path(path) / "kernel.json"
    data = json.loads(kernel_json.read_text())
    data["argv"][0] = sys.executable
    data["argv"].append(STARTUP)
    kernel_json.write_text(json.dumps(data, indent=1))
    found = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    if Path(found.resource_dir).resolve() != Path(path).resolve():
        from .errors import RunbookError

        raise RunbookError(f"a kernel spec named '{KERNEL_NAME}' at {found.resource_dir} shadows this project's "
                           f"and runs another Python; remove it (jupyter kernelspec remove {KERNEL_NAME})")
    return Path(path)
