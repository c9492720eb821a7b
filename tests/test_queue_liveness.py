"""Liveness and draining with workers really killed (SIGKILL), alive but idle, alive but stuck, and paused, for each
queue library with its own primary implementation: BullMQ and Bull (Node.js), RQ, Celery (Python), Sidekiq (Ruby).

A queue is called ``alive`` only on evidence a dead worker cannot leave behind; these tests assert the verdict, the
evidence that decided it and the severity of the backlog finding, and compare counts with what the library reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import redis

from runbook_lib.findings import Finding, Severity, Thresholds
from runbook_lib.rules import queues as rules
from runbook_lib.sandbox import start_redis
from runbook_lib.sources import queues as Q
from runbook_lib.sources import redis as R
from tests.queue_workloads import (Node, celery_send, celery_worker, descendants, kill, rq_worker, sidekiq_enqueue,
                                   sidekiq_process, wait_until)

TH = Thresholds()




def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


@dataclass
class Diagnosis:
    depths: pd.DataFrame
    workers: pd.DataFrame
    drains: pd.DataFrame
    findings: dict[str, Finding]

    def verdict(self, queue: str) -> pd.Series:
        row = self.workers[self.workers["queue"] == queue]
        assert len(row) == 1, self.workers
        return row.iloc[0]

    def depth(self, queue: str) -> pd.Series:
        return self.depths[self.depths["queue"] == queue].iloc[0]

    def consumed(self, queue: str) -> bool | None:
        """Whether anything was consumed during the sample (None: the evidence cannot tell)."""
        v = self.drains.set_index("queue").loc[queue, "consumed"]
        return None if v is None or pd.isna(v) else bool(v)


def diagnose(url: str, *, seconds: float = 2.0, th: Thresholds = TH, stale_after_s: float = 60.0) -> Diagnosis:
    """What the queue_backlog notebook does for liveness and draining, on this Redis."""
    t = R.RedisTarget(url)
    try:
        qs = Q.discover_queues(t)
        depths = Q.queue_depths(t, qs)
        watched = Q.observe(t, qs, seconds=seconds, samples=3)
        workers = Q.consumers(watched, stale_after_s=stale_after_s)
        drains = Q.drain_rates(watched)
        findings = {f.subject: f for f in rules.backlog(depths, workers, drains, th)}
        return Diagnosis(depths, workers, drains, findings)
    finally:
        t.close()


def assert_no_live_consumer(d: Diagnosis, queue: str, subject: str, evidence: str) -> None:
    v = d.verdict(queue)
    assert v["verdict"] == "none" and not v["alive"], v["decided_by"]
    assert evidence in v["decided_by"], v["decided_by"]
    f = d.findings[subject]
    waiting = int(d.depth(queue)["backlog"])
    assert f.severity is Severity.CRIT and "no live consumer" in f.title and str(waiting) in f.title, f
    assert queue in f.title and f"Decided by: {v['decided_by']}" in f.detail


# --------------------------------------------------------------------------- BullMQ and Bull (Node.js)

LIBS = ["bullmq", "bull"]


@pytest.mark.parametrize("lib", LIBS)
def test_worker_killed_mid_job_while_jobs_arrive_has_no_live_consumer(lib, rd, procs, node_modules):
    node = Node(node_modules, lib, rd.url)
    node.run("add", "emails", 150)
    worker = node.start("work", "emails", "hang", 2, 30000, 30000)  # the libraries' default lock and stalled check
    procs.append(worker)
    active = wait_until(lambda: (a := raw(rd.url).lrange("bull:emails:active", 0, -1)) and len(a) == 2 and a,
                        what="two active jobs")
    procs.append(node.start("produce", "emails", 10))
    kill(worker)

    d = diagnose(rd.url)
    assert_no_live_consumer(d, "bull:emails", f"{lib}:bull:emails", "no worker connection is open")
    supporting = d.verdict("bull:emails")["supporting"]
    # what the old diagnosis took for life: the stalled-check key and the job locks a killed worker leaves behind
    assert "stalled-check key present" in supporting and "2 job lock(s) held" in supporting
    assert raw(rd.url).pttl("bull:emails:stalled-check") > 0
    assert d.drains.set_index("queue").loc["bull:emails", "growing"]  # the producer keeps adding

    kill(procs.pop())  # the producer: now compare with the library's own counts
    counts = node.counts("emails")
    mine = Q.queue_depths(R.RedisTarget(rd.url), Q.discover_queues(R.RedisTarget(rd.url))).iloc[0]
    assert (int(mine["waiting"]), int(mine["active"])) == (counts["waiting"], counts["active"]) and counts["active"] == 2
    assert sorted(active) == sorted(raw(rd.url).lrange("bull:emails:active", 0, -1))


@pytest.mark.parametrize("lib", LIBS)
def test_killed_worker_stays_dead_after_its_ttl_keys_expire_and_its_jobs_are_stalled(lib, rd, procs, node_modules):
    node = Node(node_modules, lib, rd.url)
    node.run("add", "emails", 120)
    worker = node.start("work", "emails", "hang", 3, 1000, 1000)
    procs.append(worker)
    active = wait_until(lambda: (a := raw(rd.url).lrange("bull:emails:active", 0, -1)) and len(a) == 3 and a,
                        what="three active jobs")
    kill(worker)
    c = raw(rd.url)
    wait_until(lambda: c.pttl("bull:emails:stalled-check") == -2 and not c.exists(*[f"bull:emails:{j}:lock" for j in active]),
               what="stalled-check and locks expired")

    d = diagnose(rd.url)
    assert_no_live_consumer(d, "bull:emails", f"{lib}:bull:emails", "no worker connection is open")
    assert d.verdict("bull:emails")["supporting"] == ""
    t = R.RedisTarget(rd.url)
    stuck = Q.stuck_jobs(t, Q.discover_queues(t))
    assert sorted(stuck[stuck["kind"] == "stalled"]["job_id"]) == sorted(active)
    [f] = rules.stuck(stuck, TH)
    assert f.severity is Severity.CRIT and sorted(f.evidence["job_ids"]) == sorted(active)
    t.close()


@pytest.mark.parametrize("lib", LIBS)
def test_idle_worker_is_alive_by_its_open_connection(lib, rd, procs, node_modules):
    node = Node(node_modules, lib, rd.url)
    node.run("add", "emails", 3)
    procs.append(node.start("work", "emails", "ok", 2, 30000, 30000))
    wait_until(lambda: node.counts("emails")["completed"] == 3, what="three jobs completed")
    d = diagnose(rd.url)
    v = d.verdict("bull:emails")
    assert v["verdict"] == "alive" and v["live_workers"] >= 1
    assert "worker connection(s) named for the queue open now" in v["decided_by"]
    [f] = d.findings.values()
    assert f.severity is Severity.OK and "none waits without a live consumer" in f.title


@pytest.mark.parametrize("lib", LIBS)
def test_stuck_worker_is_alive_but_not_consuming(lib, rd, procs, node_modules):
    node = Node(node_modules, lib, rd.url)
    node.run("add", "emails", 150)
    procs.append(node.start("work", "emails", "hang", 2, 30000, 30000))
    wait_until(lambda: raw(rd.url).llen("bull:emails:active") == 2, what="two active jobs")
    d = diagnose(rd.url)
    assert d.verdict("bull:emails")["verdict"] == "alive"
    assert d.consumed("bull:emails") is False
    f = d.findings[f"{lib}:bull:emails"]
    assert f.severity is Severity.WARN and "consumers connected but not consuming" in f.title and "148" in f.title
    assert "2 job(s) active, the longest running for" in f.detail


@pytest.mark.parametrize("lib", LIBS)
def test_paused_queue_with_a_live_worker(lib, rd, procs, node_modules):
    node = Node(node_modules, lib, rd.url)
    procs.append(node.start("work", "emails", "ok", 2, 30000, 30000))
    node.run("pause", "emails")
    node.run("add", "emails", 25)
    d = diagnose(rd.url)
    assert bool(d.depth("bull:emails")["is_paused"]) and int(d.depth("bull:emails")["backlog"]) == 25
    v = d.verdict("bull:emails")
    assert v["verdict"] == "alive" and "the queue is paused" in v["holdup"]
    f = d.findings[f"{lib}:bull:emails"]
    assert f.severity is Severity.WARN and "is paused with 25 jobs waiting" in f.title
    assert node.counts("emails")["paused" if lib == "bull" else "waiting"] + node.counts("emails").get("paused", 0) >= 25


# --------------------------------------------------------------------------- RQ

def _rq_queue(url: str):
    from rq import Queue

    return Queue("reports", connection=redis.Redis.from_url(url))


def _producer_thread(enqueue: Any, stop: threading.Event, every_s: float = 0.1) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            enqueue()
            time.sleep(every_s)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_rq_worker_killed_mid_job_while_jobs_arrive(rd, procs):
    from rq.registry import StartedJobRegistry

    q = _rq_queue(rd.url)
    slow = q.enqueue("time.sleep", 120, job_timeout=600)
    for _ in range(150):
        q.enqueue("time.sleep", 0)
    worker = rq_worker(rd.url, "reports", "reports-1")
    procs.append(worker)
    # RQ registers the job as started before it forks the work-horse: wait for the horse too
    wait_until(lambda: StartedJobRegistry("reports", connection=q.connection).count == 1 and descendants(worker.pid),
               what="the slow job running in its work-horse")
    stop = threading.Event()
    producer = _producer_thread(lambda: q.enqueue("time.sleep", 0), stop)
    kill(worker)  # the worker and its work-horse
    try:
        d = diagnose(rd.url)
    finally:
        stop.set()
        producer.join()
    assert_no_live_consumer(d, "reports", "rq:reports",
                            "none of the 1 registered worker(s) (reports-1) has its named connection open")
    assert "1 of 1 registered worker hashes still present" in d.verdict("reports")["supporting"]
    t = R.RedisTarget(rd.url)
    qs = Q.discover_queues(t)
    assert int(Q.queue_depths(t, qs).iloc[0]["waiting"]) == q.count
    stuck = Q.stuck_jobs(t, qs)
    cc = raw(rd.url)
    assert len(stuck), (cc.zrange("rq:wip:reports", 0, -1, withscores=True), time.time(), [(x["name"], x["cmd"]) for x in cc.client_list()], [cc.hget(f"rq:job:{e.split(':')[0]}", "worker_name") for e in cc.zrange("rq:wip:reports", 0, -1)])
    row = stuck[stuck["kind"] == "abandoned"].iloc[0]
    assert row["job_id"] == slow.id and "its worker reports-1 is gone" in row["detail"]
    t.close()


def test_rq_idle_worker_is_alive_and_busy_worker_is_connected_but_not_consuming(rd, procs):
    from rq.registry import StartedJobRegistry

    q = _rq_queue(rd.url)
    q.enqueue("time.sleep", 0)
    procs.append(rq_worker(rd.url, "reports", "reports-1"))
    wait_until(lambda: q.count == 0 and StartedJobRegistry("reports", connection=q.connection).count == 0,
               what="the queue drained")
    idle = diagnose(rd.url)
    assert idle.verdict("reports")["verdict"] == "alive" and "reports-1" in idle.verdict("reports")["decided_by"]
    assert idle.findings["all"].severity is Severity.OK

    q.enqueue("time.sleep", 120, job_timeout=600)
    for _ in range(150):
        q.enqueue("time.sleep", 0)
    wait_until(lambda: StartedJobRegistry("reports", connection=q.connection).count == 1, what="the slow job started")
    busy = diagnose(rd.url)
    v = busy.verdict("reports")
    assert v["verdict"] == "alive" and "1 worker(s) busy" in v["holdup"]
    f = busy.findings["rq:reports"]
    assert f.severity is Severity.WARN and "consumers connected but not consuming" in f.title and "150" in f.title


def test_rq_suspended_workers_are_a_paused_queue(rd, procs):
    q = _rq_queue(rd.url)
    q.enqueue("time.sleep", 0)
    procs.append(rq_worker(rd.url, "reports", "reports-1"))
    wait_until(lambda: q.count == 0, what="the queue drained")
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    subprocess.run([rq, "suspend", "--url", rd.url], check=True, capture_output=True, timeout=60)
    for _ in range(20):
        q.enqueue("time.sleep", 0)
    d = diagnose(rd.url)
    assert bool(d.depth("reports")["is_paused"]) and "suspended" in d.verdict("reports")["holdup"]
    f = d.findings["rq:reports"]
    # a worker already blocked in BLPOP when `rq suspend` ran takes one more job, then takes none
    assert q.count in (19, 20)
    assert f.severity is Severity.WARN and f"is paused with {q.count} jobs waiting" in f.title


# --------------------------------------------------------------------------- Celery

def test_celery_worker_killed_with_messages_waiting(rd, procs, tmp_path):
    worker = celery_worker(tmp_path, rd.url, "billing")
    procs.append(worker)
    celery_send(rd.url, "billing", 150, seconds=60)
    wait_until(lambda: raw(rd.url).zcard("unacked_index") >= 1, what="the worker took a message")
    stop = threading.Event()
    producer = _producer_thread(lambda: celery_send(rd.url, "billing", 1), stop, every_s=0.2)
    kill(worker)
    try:
        d = diagnose(rd.url)
    finally:
        stop.set()
        producer.join()
    assert_no_live_consumer(d, "billing", "celery:billing", "no connection on this Redis fetches with BRPOP")


def test_celery_consumer_of_another_queue_is_not_a_consumer_of_this_one(rd, procs, tmp_path):
    procs.append(celery_worker(tmp_path, rd.url, "other"))
    celery_send(rd.url, "billing", 30)
    # the live worker idles on the empty "other" queue, blocked in BRPOP
    wait_until(lambda: any("b" in c["flags"] and c["cmd"] == "brpop" for c in raw(rd.url).client_list()),
               timeout=60, what="the worker blocked in BRPOP")
    d = diagnose(rd.url)
    assert_no_live_consumer(d, "billing", "celery:billing", "blocked in BRPOP, which Redis allows only while every list")
    assert d.verdict("other")["verdict"] == "unknown"  # idle on an empty queue: Redis cannot say which lists it waits on
    from celery import Celery

    app = Celery("shop", broker=rd.url)
    with app.connection_for_write() as conn:
        assert conn.default_channel.queue_declare("billing", passive=True).message_count == \
            int(d.depth("billing")["waiting"]) == 30


def _unchanged_for(read, seconds: float) -> bool:
    before = read()
    time.sleep(seconds)
    return read() == before


def test_celery_busy_worker_with_a_backlog_is_not_called_alive(rd, procs, tmp_path):
    procs.append(celery_worker(tmp_path, rd.url, "billing"))
    celery_send(rd.url, "billing", 150, seconds=60)
    wait_until(lambda: raw(rd.url).zcard("unacked_index") >= 1, timeout=60, what="the worker took messages")
    # the worker prefetches more than it runs: wait until it has taken all it will, so the sample sees none taken
    wait_until(lambda: _unchanged_for(lambda: raw(rd.url).zcard("unacked_index"), 2.0), timeout=60,
               what="the worker's prefetch settled")
    d = diagnose(rd.url)
    v = d.verdict("billing")
    assert v["verdict"] == "unknown" and "busy" in v["decided_by"]
    f = d.findings["celery:billing"]
    assert f.severity is Severity.WARN and "none consumed during the" in f.title


# --------------------------------------------------------------------------- Sidekiq

SIDEKIQ_SAMPLE_S = 8.0  # Sidekiq 6 beats every 5 s: a sample over 7.5 s shows whether a beat advances


def _sidekiq_busy(url: str, n: int) -> bool:
    c = raw(url)
    return any(int(c.hget(p, "busy") or 0) == n for p in c.smembers("processes"))


def test_sidekiq_process_killed_mid_job_while_jobs_arrive(rd, procs, tmp_path):
    sidekiq_enqueue(tmp_path, rd.url, 150, 60)
    server = sidekiq_process(tmp_path, rd.url, concurrency=2)
    procs.append(server)
    wait_until(lambda: _sidekiq_busy(rd.url, 2), timeout=60, what="two Sidekiq jobs running")
    producer = subprocess.Popen(["ruby", "-e", 'require_relative "jobs"; loop { SlowJob.perform_async(1); sleep 0.2 }'],
                                cwd=tmp_path, env={**os.environ, "REDIS_URL": rd.url}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(producer)
    kill(server)
    d = diagnose(rd.url, seconds=SIDEKIQ_SAMPLE_S)
    assert_no_live_consumer(d, "reports", "sidekiq:reports", "no heartbeat advanced during the")
    t = R.RedisTarget(rd.url)
    lost = Q.stuck_jobs(t, Q.discover_queues(t), stale_after_s=5)
    assert len(lost[lost["kind"] == "lost"]) == 2
    assert rules.stuck(lost, TH)[0].severity is Severity.CRIT
    t.close()


def test_sidekiq_idle_is_alive_busy_and_quiet_are_connected_but_not_consuming(rd, procs, tmp_path):
    sidekiq_enqueue(tmp_path, rd.url, 1, 0)
    server = sidekiq_process(tmp_path, rd.url, concurrency=2)
    procs.append(server)
    wait_until(lambda: raw(rd.url).llen("queue:reports") == 0 and _sidekiq_busy(rd.url, 0), timeout=60,
               what="Sidekiq idle")
    idle = diagnose(rd.url, seconds=SIDEKIQ_SAMPLE_S)
    assert idle.verdict("reports")["verdict"] == "alive" and "heartbeat(s) advanced" in idle.verdict("reports")["decided_by"]

    sidekiq_enqueue(tmp_path, rd.url, 152, 120)
    wait_until(lambda: _sidekiq_busy(rd.url, 2), timeout=60, what="two Sidekiq jobs running")
    busy = diagnose(rd.url, seconds=SIDEKIQ_SAMPLE_S)
    assert busy.verdict("reports")["verdict"] == "alive" and "every thread busy" in busy.verdict("reports")["holdup"]
    f = busy.findings["sidekiq:reports"]
    assert f.severity is Severity.WARN and "consumers connected but not consuming" in f.title and "150" in f.title

    os.kill(server.pid, signal.SIGTSTP)  # quiet: Sidekiq stops taking new jobs
    c = raw(rd.url)
    wait_until(lambda: any(c.hget(p, "quiet") == "true" for p in c.smembers("processes")), what="Sidekiq quiet")
    quiet = diagnose(rd.url, seconds=SIDEKIQ_SAMPLE_S)
    assert "quiet (TSTP" in quiet.verdict("reports")["holdup"]
    assert quiet.findings["sidekiq:reports"].severity is Severity.WARN


# --------------------------------------------------------------------------- after every TTL key has expired

@pytest.mark.slow
def test_rq_and_sidekiq_killed_workers_stay_dead_after_their_keys_expire(rd, procs, tmp_path):
    """RQ's worker hash lives worker_ttl + 60 s, Sidekiq's process hash 60 s: both expire here (about 70 s)."""
    from rq.registry import StartedJobRegistry

    q = _rq_queue(rd.url)
    q.enqueue("time.sleep", 300, job_timeout=600)
    for _ in range(5):
        q.enqueue("time.sleep", 0)
    rq = rq_worker(rd.url, "reports", "reports-1", worker_ttl=1)
    sidekiq_enqueue(tmp_path, rd.url, 5, 300)
    sk = sidekiq_process(tmp_path, rd.url, concurrency=1)
    procs += [rq, sk]
    wait_until(lambda: StartedJobRegistry("reports", connection=q.connection).count == 1 and descendants(rq.pid)
               and _sidekiq_busy(rd.url, 1), timeout=60, what="both workers mid-job")
    c = raw(rd.url)
    identities = list(c.smembers("processes"))
    kill(rq)
    kill(sk)
    wait_until(lambda: not c.exists("rq:worker:reports-1", *identities), timeout=130,
               what="RQ's worker hash and Sidekiq's process hash expired")
    d = diagnose(rd.url, seconds=SIDEKIQ_SAMPLE_S)
    rows = d.workers.set_index(["system", "queue"])
    assert rows.loc[("rq", "reports"), "verdict"] == "none" and rows.loc[("sidekiq", "reports"), "verdict"] == "none"
    assert "older than 60s or expired" in rows.loc[("sidekiq", "reports"), "decided_by"]
    assert d.findings["rq:reports"].severity is Severity.CRIT and d.findings["sidekiq:reports"].severity is Severity.CRIT


# --------------------------------------------------------------------------- Redis at its memory limit

def test_noeviction_redis_full_refuses_a_real_producers_adds_and_says_so(procs, node_modules):
    server = start_redis(extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    try:
        node = Node(node_modules, "bullmq", server.url)
        filled = json.loads(node.run("fill", "emails", 4000))
        assert filled["added"] > 0 and "OOM" in filled["lastError"]
        t = R.RedisTarget(server.url)
        before = R.server_info(t)
        procs.append(node.start("produce", "emails", 20, 4000))
        qs = Q.discover_queues(t)
        depths = Q.queue_depths(t, qs)
        Q.observe(t, qs, seconds=1.5, samples=2)
        after = R.server_info(t)
        delta = R.info_delta(before, after)
        memory = R.memory(after)
        assert memory.iloc[0]["oom_rejected_total"] >= filled["errors"]
        found = {f.subject: f for f in rules.redis_memory(memory, TH, qs, delta, depths, R.keyspace_memory(t))}
        used = found["used"]
        assert used.severity is Severity.CRIT and used.title.startswith("Redis is refusing writes")
        assert used.evidence["oom_rejected_during_sample"] > 0 and "producers' adds fail" in used.detail
        assert "need consumers, not trimming" in used.action and "bull:emails" in used.action
        kill(procs.pop())
        assert int(Q.queue_depths(t, qs).iloc[0]["waiting"]) == node.counts("emails")["waiting"]
        t.close()
    finally:
        server.stop()


def test_allkeys_lru_evicts_queue_jobs_and_the_finding_says_which_keys_are_at_risk(node_modules):
    server = start_redis(extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])
    try:
        node = Node(node_modules, "bullmq", server.url)
        t = R.RedisTarget(server.url)
        before = R.server_info(t)
        node.run("add", "emails", 1500, "{}", 4000)
        after = R.server_info(t)
        c = raw(server.url)
        waiting = c.lrange("bull:emails:wait", 0, -1)
        pipe = c.pipeline(transaction=False)
        for j in waiting:
            pipe.exists(f"bull:emails:{j}")
        lost = sum(1 for present in pipe.execute() if not present)
        assert lost > 0  # job hashes evicted while their ids wait in the list: those jobs are gone
        qs = Q.discover_queues(t)
        counters = {f.subject: f for f in rules.redis_counters(R.info_delta(before, after), TH)}
        assert counters["evicted_keys"].severity is Severity.CRIT
        mem = {f.subject: f for f in rules.redis_memory(R.memory(after), TH, qs, R.info_delta(before, after))}
        assert mem["policy"].severity is Severity.CRIT and "queue data included" in mem["policy"].title
        assert "allkeys-lru" in mem["used"].title and "queue data included" in mem["used"].title
        t.close()
    finally:
        server.stop()


def test_retained_completed_jobs_call_for_retention_not_consumers(rd, procs, node_modules):
    node = Node(node_modules, "bullmq", rd.url)
    node.run("add", "emails", 400, "{}", 3000)
    procs.append(node.start("work", "emails", "ok", 20, 30000, 30000))
    wait_until(lambda: node.counts("emails")["completed"] == 400, timeout=60, what="400 jobs completed")
    t = R.RedisTarget(rd.url)
    qs = Q.discover_queues(t)
    action, evidence = rules.memory_fill(R.keyspace_memory(t), Q.queue_depths(t, qs))
    assert evidence["top_pattern"] == "bull:emails:*" and evidence["finished_jobs_retained"] == 400
    assert "removeOnComplete/removeOnFail" in action and "400 finished jobs" in action
    t.close()
