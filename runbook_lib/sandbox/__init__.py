"""The local sandbox the demo and the tests run on: real servers, real incidents, nothing mocked.

- ``servers``: PostgreSQL (any major 12 to 18, see ``pg_binaries``) and Redis in temporary directories, on free
  loopback ports, with passwords (so the DSNs handed out hold real secrets the archive must never contain);
- ``database``: a database-pressure incident staged with real sessions;
- ``queues``: a BullMQ backlog whose worker is killed mid-job while a producer keeps adding (BullMQ's own package);
- ``services``: HTTP services, logs and an identity deploy breaking JWT verification;
- ``metrics``: a real Prometheus and exporters scraping the sandbox.

The names most callers need are here; the modules hold the rest.
"""

from __future__ import annotations

from .database import StagedIncident, end_sessions, seed_app_schema, stage_database_pressure
from .servers import (PG_ADMIN, PG_DATABASE, PG_MONITOR, PostgresServer, RedisServer, Sandbox, find_pg_bindir,
                      free_port, start_postgres, start_redis, start_standby)

__all__ = ["PG_ADMIN", "PG_DATABASE", "PG_MONITOR", "PostgresServer", "RedisServer", "Sandbox", "StagedIncident",
           "end_sessions", "find_pg_bindir", "free_port", "seed_app_schema", "stage_database_pressure",
           "start_postgres", "start_redis", "start_standby"]
