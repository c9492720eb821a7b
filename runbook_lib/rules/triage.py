"""Triage: which symptom notebook to run next, and why, from a quick look at every source."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..findings import Finding, Severity, Thresholds
from ..sources import SourceError

NOTEBOOK_PLAYBOOK = {"database_pressure": "Database pressure", "queue_backlog": "Queue backlog",
                     "auth_failures": "Authentication failures", "portal_outage": "Portal outages"}
_SCORE = {"crit": 3, "warn": 2, "info": 1}
ROLE_NOTEBOOK = {"auth": "auth_failures", "web": "portal_outage", "worker": "queue_backlog"}


def _df(x: Any) -> pd.DataFrame | None:
    return x if isinstance(x, pd.DataFrame) else None


def recommend(*, health: Any = None, connections: Any = None, blocking: Any = None, long_queries: Any = None,
              redis_info: Any = None, depths: Any = None, consumers: Any = None, supabase_status: Any = None,
              supabase_keys: Any = None, onsets: Any = None, lined: Any = None,
              th: Thresholds | None = None, roles: dict[str, str] | None = None) -> pd.DataFrame:
    """Symptom notebooks ranked by how strongly the evidence points at them: notebook, urgency
    (crit/warn/info), score, reasons. Notebooks with no reason are listed with urgency ``none``."""
    from ..config import infer_role

    th = th or Thresholds()
    reasons: dict[str, list[tuple[str, str]]] = {nb: [] for nb in NOTEBOOK_PLAYBOOK}

    def role(service: str) -> str:
        return (roles or {}).get(service) or infer_role(service)

    def add(nb: str, urgency: str, why: str) -> None:
        reasons[nb].append((urgency, why))

    h = _df(health)
    down = set(h.loc[~h["ok"], "service"]) if h is not None and len(h) else set()
    for svc in down:
        if role(svc) == "auth":
            add("auth_failures", "crit", f"{svc} health check fails")
            add("portal_outage", "warn", f"{svc} (which the portal needs) is unhealthy")
        elif role(svc) == "web":
            add("portal_outage", "crit", f"{svc} health check fails")
        elif role(svc) == "worker":
            add("queue_backlog", "warn", f"{svc} health check fails")
    if isinstance(connections, SourceError):
        add("database_pressure", "crit", f"Postgres cannot be read ({connections.kind})")
    elif _df(connections) is not None:
        c = connections
        pct = 100.0 * c.attrs.get("in_use", 0) / max(c.attrs.get("usable", 1), 1)
        if pct >= th.connections_warn_pct:
            add("database_pressure", "crit" if pct >= th.connections_crit_pct else "warn",
                f"{pct:.0f}% of Postgres connections in use")
    b = _df(blocking)
    if b is not None and len(b):
        waiting = int((b["depth"] > 0).sum())
        add("database_pressure", "crit" if waiting >= th.blocked_sessions_crit else "warn",
            f"{waiting} Postgres sessions waiting on locks")
    lq = _df(long_queries)
    if lq is not None and len(lq[lq["wait_event_type"] != "Lock"]):
        add("database_pressure", "warn", f"{len(lq)} Postgres statements running long")
    if isinstance(redis_info, SourceError):
        add("queue_backlog", "crit", f"Redis cannot be read ({redis_info.kind})")
        add("auth_failures", "warn", "Redis (sessions, rate limits) is unreachable")
    d, cons = _df(depths), _df(consumers)
    if d is not None and len(d):
        verdicts = {(r.system, r.queue): r.verdict for r in cons.itertuples()} if cons is not None else {}
        for q in d.itertuples():
            if q.backlog > 0 and verdicts.get((q.system, q.queue)) == "none":
                add("queue_backlog", "crit", f"{q.queue}: {q.backlog} jobs waiting, no live consumer")
            elif q.oldest_waiting_age_s == q.oldest_waiting_age_s and q.oldest_waiting_age_s >= th.queue_oldest_warn_s:
                add("queue_backlog", "warn", f"{q.queue}: oldest job waiting {q.oldest_waiting_age_s:.0f}s")
    s = _df(supabase_status)
    if s is not None and s.attrs.get("indicator") not in (None, "none"):
        add("auth_failures", "warn", f"Supabase status page: {s.attrs.get('indicator')}")
    k = _df(supabase_keys)
    if k is not None and "key_rejected" in set(k["verdict"]):
        add("portal_outage", "crit", "Supabase rejects the configured key")
    elif k is not None and "outage" in set(k["verdict"]):
        add("auth_failures", "crit", "Supabase is unreachable")
        add("portal_outage", "warn", "Supabase is unreachable")
    o = _df(onsets)
    if o is not None:
        from .services import spike_severity

        for r in o.itertuples():
            sev = spike_severity(r, th)
            if sev is None:
                continue
            urgency = sev.value
            nb = ROLE_NOTEBOOK.get(role(r.service))
            if nb:
                level = f"{100 * r.peak_rate:.0f}%" if r.denominator == "requests" else f"{r.peak_rate:.0f}/min"
                add(nb, urgency, f"{r.service} errors at {level} since {r.onset:%H:%M}")
    ln = _df(lined)
    if ln is not None and len(ln):
        for r in ln[ln["same_service"]].drop_duplicates("service").itertuples():
            nb = {"auth": "auth_failures", "web": "portal_outage"}.get(role(r.service))
            if nb:
                add(nb, "warn", f"{r.change_service} {r.kind} {r.version} landed before the onset")
    rows = []
    for nb, why in reasons.items():
        urgency = min((u for u, _ in why), key=lambda u: -_SCORE[u], default="none")
        rows.append({"notebook": nb, "urgency": urgency, "score": sum(_SCORE[u] for u, _ in why),
                     "reasons": "; ".join(w for _, w in sorted(why, key=lambda x: -_SCORE[x[0]])) or "nothing points here"})
    df = pd.DataFrame(rows)
    df["_u"] = df["urgency"].map({"crit": 0, "warn": 1, "info": 2, "none": 3})
    return df.sort_values(["_u", "score"], ascending=[True, False], ignore_index=True).drop(columns="_u")


def findings(recs: pd.DataFrame) -> list[Finding]:
    """One finding per notebook worth running next (crit/warn), or one ok finding when nothing is urgent."""
    out = []
    for r in recs.itertuples():
        if r.urgency not in ("crit", "warn"):
            continue
        out.append(Finding("triage.next", r.notebook, Severity(r.urgency), f"Run {r.notebook} next: {r.reasons}"[:220],
                           action=f"runbook run {r.notebook} --incident <this incident> (or open notebooks/{r.notebook}.ipynb)",
                           playbook=NOTEBOOK_PLAYBOOK[r.notebook], evidence={"score": int(r.score)}))
    return out or [Finding("triage.next", "none", Severity.OK, "Nothing urgent: every symptom check is clear")]
