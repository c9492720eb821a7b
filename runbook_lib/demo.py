"""``runbook demo``: the whole workflow on a local sandbox, starting where a responder starts.

Three incidents are staged at once on a real PostgreSQL and Redis and on local HTTP services (a migration queued behind
an idle-in-transaction session; a BullMQ backlog whose worker was killed mid-job while a producer keeps adding; an
identity deploy breaking JWT verification). Then ``triage`` runs first, the symptom notebooks it recommends run next,
and the archive site and a stakeholder status update are written from the records.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import archive, sandbox, site, timeline
from .runner import RunResult, prepare, run_notebook
from .sandbox.queues import stage_queue_backlog
from .sandbox.services import stage_auth_incident

SAMPLED = {"database_pressure": ("sample_seconds",), "queue_backlog": ("sample_seconds",)}


@dataclass
class DemoOutcome:
    """What the demo made: the incident id, every run (triage first), the site and the status update."""

    incident: str
    root: Path
    results: list[RunResult] = field(default_factory=list)
    site_index: Path | None = None
    status_update: str = ""
    status_path: Path | None = None

    @property
    def recommended(self) -> list[str]:
        """The notebooks triage recommended, most urgent first."""
        triage = self.results[0] if self.results else None
        return [f.subject for f in triage.findings if f.check == "triage.next" and f.severity.active] if triage else []


def run_demo(archive_dir: str | None, incident: str | None, sample_seconds: float,
             say: Callable[[str], None] = print) -> DemoOutcome:
    """Stage the incidents, run triage and what it recommends, then write the site and a status update."""
    incident = incident or f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    root = archive.archive_root(archive_dir)
    outcome = DemoOutcome(incident, root)
    say("starting a sandbox PostgreSQL and Redis ...")
    with sandbox.Sandbox.start() as sb, tempfile.TemporaryDirectory(prefix="runbook-demo-services-") as tmp:
        os.environ.update(sb.env())
        staged: list[object] = []
        services = None
        try:
            say("staging three incidents at once: a migration's ALTER TABLE orders queued behind an idle-in-transaction "
                "session with reads piling up; a BullMQ backlog whose worker was killed mid-job while a producer keeps "
                "adding; identity deploy v2.4.0 breaking JWT verification (401 spike, failing health, portal errors)")
            staged.append(sandbox.stage_database_pressure(sb.postgres))
            staged.append(stage_queue_backlog(sb.redis.url))
            services = stage_auth_incident(Path(tmp))
            staged.append(services)
            os.environ.update(services.secrets)
            env_file = str(services.env_file)
            say(f"running triage for incident {incident} (what is wrong, what to run next) ...")
            outcome.results.append(run_notebook(prepare("triage", incident, env_file=env_file,
                                                        archive_dir=archive_dir)))
            for nb in outcome.recommended:
                say(f"running {nb}, as triage recommends ...")
                params = {p: str(sample_seconds) for p in SAMPLED.get(nb, ())}
                outcome.results.append(run_notebook(prepare(nb, incident, env_file=env_file, parameters=params,
                                                            archive_dir=archive_dir)))
        finally:
            for s in reversed(staged):
                s.stop()  # type: ignore[attr-defined]
            for k in [*sb.env(), *(services.secrets if services else {})]:
                os.environ.pop(k, None)
    _publish(outcome)
    return outcome


def _publish(outcome: DemoOutcome) -> None:
    """The archive site beside the archive, and a status update saved with the incident."""
    recs = archive.records(outcome.root, outcome.incident)
    outcome.site_index = site.build(outcome.root, outcome.root.parent / f"{outcome.root.name}-site")
    outcome.status_update = timeline.status_update(outcome.incident, recs,
                                                   archive.read_notes(outcome.root, outcome.incident))
    outcome.status_path = archive.write_incident_file(
        outcome.root, outcome.incident, f"status-updates/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.md",
        outcome.status_update)
