"""One real sandbox (PostgreSQL + Redis) per test session, shared by tests/ and the nbval run of notebooks/.

Started lazily: on first use by a test fixture, or before collection ends when notebooks are collected
(their kernels inherit RUNBOOK_PG_DSN / RUNBOOK_REDIS_URL from this process).
"""

from __future__ import annotations

import os

import pytest

from runbook_lib.sandbox import Sandbox

_state: dict[str, Sandbox] = {}


def shared_sandbox() -> Sandbox:
    """The session's sandbox, started on first call; its variables are exported to this process."""
    if "sb" not in _state:
        sb = Sandbox.start(max_connections=400)
        _state["sb"] = sb
        os.environ.update(sb.env())
    return _state["sb"]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(str(item.fspath).endswith(".ipynb") for item in items):
        shared_sandbox()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    sb = _state.pop("sb", None)
    if sb is not None:
        sb.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With RUNBOOK_FAIL_ON_SKIP=1 (CI), a skipped test is a failure: CI installs everything the tests need."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("RUNBOOK_FAIL_ON_SKIP") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every tool the tests need must be installed: {report.longrepr}"


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory):
    """BullMQ, Bull, ioredis, pino and pino-http from the npm registry, installed once per test session."""
    import shutil

    from tests.queue_workloads import install_node_packages

    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("Node.js and npm are needed to make BullMQ and Bull data with the libraries themselves")
    return install_node_packages(tmp_path_factory.mktemp("node"))


@pytest.fixture
def rd():
    """A Redis of the test's own (the queue tests fill and flush theirs)."""
    from runbook_lib.sandbox import start_redis

    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def procs():
    """Processes a test starts; whatever still runs at its end is SIGKILLed with everything it started."""
    from tests.queue_workloads import kill

    started: list = []
    yield started
    for p in started:
        if p.poll() is None:
            kill(p)


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The session's real PostgreSQL and Redis."""
    return shared_sandbox()


@pytest.fixture
def sessions(sandbox: Sandbox):
    """Open application sessions (admin role) that are terminated when the test ends."""
    from tests.helpers import SessionPool

    pool = SessionPool(sandbox.postgres.admin_dsn)
    yield pool
    pool.close()


@pytest.fixture
def db(sandbox: Sandbox):
    """A diagnostic Database on the sandbox, as the pg_monitor role."""
    from runbook_lib.sources.postgres import Database

    d = Database(sandbox.postgres.monitor_dsn)
    yield d
    d.close()
