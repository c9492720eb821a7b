"""Queue evidence against a real Redis, with the data made by BullMQ, RQ, Celery and Sidekiq themselves."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest
import redis

from runbook_lib.findings import Severity, Thresholds
from runbook_lib.rules import queues as rules
from runbook_lib.sandbox import free_port, start_redis
from runbook_lib.sandbox.queues import add_jobs, job_counts, start_role
from runbook_lib.sources import SourceError
from runbook_lib.sources import queues as Q
from runbook_lib.sources import redis as R
from tests.helpers import wait_for

TH = Thresholds()




def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def only(df: pd.DataFrame, **where) -> pd.Series:
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, df
    return df.iloc[0]


# --------------------------------------------------------------------------- BullMQ

def test_bullmq_counts_match_get_job_counts_and_stalled_jobs_are_named(rd, procs):
    url = rd.url
    asyncio.run(add_jobs(url, "emails", 40, "send"))
    asyncio.run(add_jobs(url, "emails", 3, "later", {"delay": 600_000}))
    asyncio.run(add_jobs(url, "emails", 4, "vip", {"priority": 3}))
    worker = start_role("worker", url, "emails", "hang", "1000", "3")
    procs.append(worker)
    active = wait_for(lambda: (lambda a: a if len(a) == 3 else None)(raw(url).lrange("bull:emails:active", 0, -1)))
    target = R.RedisTarget(url)
    queues = Q.discover_queues(target)
    assert list(queues["system"]) == ["bullmq"] and list(queues["queue"]) == ["bull:emails"]
    assert only(Q.consumers(Q.observe(target, queues, seconds=0)), queue="bull:emails")["verdict"] == "alive"
    worker.kill()
    worker.wait()
    time.sleep(1.3)  # its 1 s locks expire

    depths = Q.queue_depths(target, queues)
    mine = only(depths, queue="bull:emails")
    lib = asyncio.run(job_counts(url, "emails"))
    assert {"waiting": int(mine["waiting"]), "active": int(mine["active"]), "delayed": int(mine["delayed"]),
            "prioritized": int(mine["prioritized"]), "completed": int(mine["completed"]),
            "failed": int(mine["failed"]), "waiting-children": int(mine["waiting_children"])} == lib
    assert mine["oldest_waiting_age_s"] >= 1.0

    stuck = Q.stuck_jobs(target, queues)
    stalled = stuck[stuck["kind"] == "stalled"]
    assert sorted(stalled["job_id"]) == sorted(active)
    consumers = Q.consumers(Q.observe(target, queues, seconds=0))
    assert only(consumers, queue="bull:emails")["verdict"] == "none"

    findings = rules.backlog(depths, consumers, None, TH) + rules.stuck(stuck, TH)
    keyed = {f.key: f for f in findings}
    assert keyed["queue.backlog:bullmq:bull:emails"].severity is Severity.CRIT
    assert "no live consumer" in keyed["queue.backlog:bullmq:bull:emails"].title
    stalled_finding = keyed["queue.stuck_jobs:bullmq:bull:emails:stalled"]
    assert stalled_finding.severity is Severity.CRIT
    assert sorted(stalled_finding.evidence["job_ids"]) == sorted(active)
    target.close()


def test_bullmq_live_failing_worker_is_alive_and_failures_grouped(rd, procs):
    url = rd.url
    procs.append(start_role("worker", url, "webhooks", "fail", "30000", "4"))
    asyncio.run(add_jobs(url, "webhooks", 12, "deliver"))
    wait_for(lambda: asyncio.run(job_counts(url, "webhooks"))["failed"] == 12, timeout=30)
    target = R.RedisTarget(url)
    queues = Q.discover_queues(target)
    wait_for(lambda: only(Q.consumers(Q.observe(target, queues, seconds=0)), queue="bull:webhooks")["verdict"] == "alive")
    failed = Q.failed_reasons(target, queues)
    row = only(failed, queue="bull:webhooks")
    assert row["count"] == 12 and "ECONNREFUSED" in row["reason"]
    [f] = rules.failures(failed, TH)
    assert f.severity is Severity.WARN and "ECONNREFUSED" in f.title
    target.close()


def test_bullmq_delayed_job_past_due_with_no_worker_is_overdue(rd):
    ids = asyncio.run(add_jobs(rd.url, "digest", 2, "later", {"delay": 200}))
    time.sleep(1.0)
    target = R.RedisTarget(rd.url)
    stuck = Q.stuck_jobs(target, Q.discover_queues(target), overdue_after_s=0.5)
    assert sorted(stuck[stuck["kind"] == "overdue_delayed"]["job_id"]) == sorted(ids)
    assert (stuck["age_s"] >= 0.5).all()
    target.close()


def test_draining_and_growing_queues_are_told_apart(rd, procs):
    url = rd.url
    asyncio.run(add_jobs(url, "drains", 400, "quick"))
    procs.append(start_role("worker", url, "drains", "ok", "30000", "10"))
    procs.append(start_role("producer", url, "grows", "20"))
    target = R.RedisTarget(url)
    wait_for(lambda: len(Q.discover_queues(target)) == 2 and raw(url).llen("bull:drains:wait") < 390)
    queues = Q.discover_queues(target)
    rates = Q.drain_rates(Q.observe(target, queues, seconds=2.0, samples=4)).set_index("queue")
    assert rates.loc["bull:drains", "net_per_s"] < 0 and rates.loc["bull:drains", "time_to_drain_s"] < 3600
    assert bool(rates.loc["bull:drains", "consumed"]) and rates.loc["bull:drains", "finished"] > 0
    assert bool(rates.loc["bull:grows", "growing"]) and rates.loc["bull:grows", "arrivals_per_s"] > 0
    assert not bool(rates.loc["bull:grows", "consumed"])  # nothing works "grows": arrivals, no completions
    target.close()


# --------------------------------------------------------------------------- RQ

def test_rq_counts_match_and_a_killed_worker_leaves_an_abandoned_job(rd, procs):
    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry

    conn = redis.Redis.from_url(rd.url)
    q = Queue("reports", connection=conn)
    slow = q.enqueue("time.sleep", 120, job_timeout=600)
    for _ in range(6):
        q.enqueue("time.sleep", 0)
    worker = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "rq"), "worker", "reports", "--url",
                               rd.url, "--name", "reports-worker-1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    worker._group = True
    procs.append(worker)
    wait_for(lambda: StartedJobRegistry("reports", connection=conn).count == 1, timeout=30)
    target = R.RedisTarget(rd.url)
    queues = Q.discover_queues(target)
    assert list(queues["queue"]) == ["reports"]
    assert only(Q.consumers(Q.observe(target, queues, seconds=0)), queue="reports")["live_workers"] == 1
    # the worker first (so it cannot record the horse's death), then its work-horse (RQ forks it into its own
    # session, holding the worker's connections): the job's wip entry is left with nobody behind it
    horses = [int(p) for p in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True,
                                             text=True).stdout.split()]
    assert horses
    os.kill(worker.pid, signal.SIGKILL)
    for h in horses:
        os.kill(h, signal.SIGKILL)
    worker.wait()
    time.sleep(1.5)

    mine = only(Q.queue_depths(target, queues), queue="reports")
    assert mine["waiting"] == q.count == 6
    assert mine["active"] == StartedJobRegistry("reports", connection=conn).count == 1
    assert mine["oldest_waiting_age_s"] >= 1.0
    consumers = Q.consumers(Q.observe(target, queues, seconds=0))
    row = only(consumers, queue="reports")
    assert row["live_workers"] == 0 and row["stale_workers"] == 1 and row["verdict"] == "none"
    assert [w.name for w in Worker.all(queue=q)] == ["reports-worker-1"]  # RQ still lists it
    stuck = Q.stuck_jobs(target, queues, stale_after_s=1)
    abandoned = only(stuck, kind="abandoned")
    assert abandoned["job_id"] == slow.id and "reports-worker-1 is gone" in abandoned["detail"]
    assert rules.stuck(stuck, TH)[0].severity is Severity.CRIT
    target.close()


# --------------------------------------------------------------------------- Celery

CELERY_UNACK = textwrap.dedent("""
    import sys, time
    from kombu import Connection
    with Connection(sys.argv[1], transport_options={"queue_order_strategy": "priority"}) as conn:
        msg = conn.default_channel.basic_get("billing", no_ack=False)
        print(msg.headers["id"], flush=True)
        time.sleep(600)
""")


def _celery_app(url: str):
    from celery import Celery

    app = Celery("shop", broker=url)
    app.conf.broker_transport_options = {"queue_order_strategy": "priority"}
    return app


def test_celery_priority_sublists_count_like_kombu_and_unacked_overdue(rd, procs):
    app = _celery_app(rd.url)
    for i in range(10):
        app.send_task("shop.charge", args=(i,), queue="billing", priority=[0, 3, 6, 9][i % 4])
    with app.connection_for_write() as conn:
        lib_count = conn.default_channel.queue_declare("billing", passive=True).message_count
    target = R.RedisTarget(rd.url)
    queues = Q.discover_queues(target)
    assert ("celery", "billing") in set(zip(queues["system"], queues["queue"]))
    mine = only(Q.queue_depths(target, queues), queue="billing")
    assert mine["waiting"] == lib_count == 10 and mine["prioritized"] > 0

    taker = subprocess.Popen([sys.executable, "-c", CELERY_UNACK, rd.url], stdout=subprocess.PIPE, text=True)
    procs.append(taker)
    task_id = taker.stdout.readline().strip()
    taker.kill()  # dies holding the message: it stays in 'unacked'
    taker.wait()
    time.sleep(1.2)
    with app.connection_for_write() as conn:
        assert conn.default_channel.queue_declare("billing", passive=True).message_count == 9
    assert only(Q.queue_depths(target, queues), queue="billing")["waiting"] == 9
    stuck = Q.stuck_jobs(target, queues, celery_visibility_timeout_s=1)
    row = only(stuck, kind="unacked_overdue")
    assert row["job_id"] == task_id and row["name"] == "shop.charge" and row["queue"] == "billing"
    target.close()


# --------------------------------------------------------------------------- Sidekiq

SIDEKIQ_JOBS = textwrap.dedent("""
    require "sidekiq"
    class FailingJob
      include Sidekiq::Worker
      sidekiq_options retry: 5
      def perform(n) = raise(ArgumentError, "bad payload #{n}")
    end
    class MailJob
      include Sidekiq::Worker
      sidekiq_options queue: "mailers"
      def perform(n) = sleep(1)
    end
""")
SIDEKIQ_ENQUEUE = SIDEKIQ_JOBS + textwrap.dedent("""
    3.times { |i| FailingJob.perform_async(i) }
    5.times { |i| MailJob.perform_async(i) }
    MailJob.perform_in(3600, 99)
""")
SIDEKIQ_REPORT = textwrap.dedent("""
    require "sidekiq/api"
    require "json"
    puts JSON.dump({mailers: Sidekiq::Queue.new("mailers").size, latency: Sidekiq::Queue.new("mailers").latency,
                    retry: Sidekiq::RetrySet.new.size, scheduled: Sidekiq::ScheduledSet.new.size,
                    dead: Sidekiq::DeadSet.new.size, processes: Sidekiq::ProcessSet.new.size})
""")


@pytest.mark.skipif(shutil.which("sidekiq") is None or shutil.which("ruby") is None,
                    reason="Debian's ruby-sidekiq is not installed (scripts/test installs it with apt-get)")
def test_sidekiq_counts_latency_retries_and_a_stale_process(rd, procs, tmp_path):
    env = {**os.environ, "REDIS_URL": rd.url}
    jobs = tmp_path / "jobs.rb"
    jobs.write_text(SIDEKIQ_JOBS)
    subprocess.run(["ruby", "-e", SIDEKIQ_ENQUEUE], env=env, check=True, cwd=tmp_path, timeout=60)
    server = subprocess.Popen(["sidekiq", "-r", str(jobs), "-q", "default", "-c", "2"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    wait_for(lambda: raw(rd.url).zcard("retry") == 3, timeout=60)
    target = R.RedisTarget(rd.url)
    queues = Q.discover_queues(target)
    assert {"default", "mailers"} <= set(queues.loc[queues["system"] == "sidekiq", "queue"])
    wait_for(lambda: only(Q.consumers(Q.observe(target, queues, seconds=6, samples=2)), queue="default")["alive"],
             timeout=30)
    server.kill()
    server.wait()
    time.sleep(1.2)
    lib = json.loads(subprocess.run(["ruby", "-e", SIDEKIQ_REPORT], env=env, capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    mine = only(Q.queue_depths(target, queues), queue="mailers")
    assert mine["waiting"] == lib["mailers"] == 5
    assert mine["retry"] == lib["retry"] == 3 and mine["scheduled"] == lib["scheduled"] == 1
    assert abs(mine["oldest_waiting_age_s"] - lib["latency"]) < 2.0
    row = only(Q.consumers(Q.observe(target, queues, seconds=0), stale_after_s=1), queue="default")
    assert row["verdict"] == "none" and row["stale_workers"] == 1
    failed = Q.failed_reasons(target, queues)
    assert int(failed[failed["reason"].str.startswith("ArgumentError")]["count"].sum()) == 3
    target.close()


# --------------------------------------------------------------------------- Redis itself

def test_redis_info_frames_keyspace_patterns_and_clients(rd):
    c = raw(rd.url)
    pipe = c.pipeline()
    for i in range(1500):
        pipe.set(f"session:{i:08d}", "x" * 100)
    for i in range(20):
        pipe.hset(f"user:{i}:profile", mapping={"name": "n", "plan": "pro"})
    pipe.execute()
    target = R.RedisTarget(rd.url)
    info = R.server_info(target)
    mem = R.memory(info).iloc[0]
    assert mem["limit_kind"].startswith("system memory") and mem["maxmemory_policy"] == "noeviction"
    keys = R.keyspace_memory(target, budget_s=10).set_index("pattern")
    assert keys.attrs["complete"] and keys.loc["session:*", "keys"] == 1500 and keys.loc["user:*:profile", "keys"] == 20
    assert keys.loc["session:*", "type"] == "string" and keys.loc["user:*:profile", "type"] == "hash"
    exact = sum(c.memory_usage(f"session:{i:08d}", samples=5) for i in range(1500))
    assert abs(keys.loc["session:*", "bytes"] - exact) / exact < 0.1
    partial = R.keyspace_memory(target, budget_s=0, sample_per_pattern=10)
    assert partial.attrs["dbsize"] == 1520 and partial["keys"].sum() > 0
    assert isinstance(R.clients(target), pd.DataFrame) and isinstance(R.slowlog(target), pd.DataFrame)
    target.close()


def test_redis_down_and_bad_password_are_findings_not_exceptions(rd):
    down = R.RedisTarget(f"redis://:pw-never-shown@127.0.0.1:{free_port()}/0")
    for result in (R.server_info(down), Q.discover_queues(down), R.keyspace_memory(down)):
        assert isinstance(result, SourceError) and result.kind == "unreachable"
    [f] = rules.redis_memory(R.memory(R.server_info(down)), TH)
    assert f.severity is Severity.ERROR and "pw-never-shown" not in json.dumps(f.to_dict())
    wrong = R.RedisTarget(f"redis://:wrong-password@127.0.0.1:{rd.port}/0")
    err = R.server_info(wrong)
    assert isinstance(err, SourceError) and err.kind == "permission"
    assert rules.backlog(Q.queue_depths(wrong, Q.discover_queues(wrong)), err, None, TH)[0].severity in (
        Severity.WARN, Severity.ERROR)


def test_keys_changing_type_mid_scan_do_not_crash(rd):
    c = raw(rd.url)
    c.mset({f"flip:{i}": "v" for i in range(3000)})
    c.set("bull:broken:active", "not a list")  # a queue key of the wrong type
    c.hset("bull:broken:meta", "opts.maxLenEvents", 10)
    stop = threading.Event()

    def flipper() -> None:
        f = raw(rd.url)
        i = 0
        while not stop.is_set():
            k = f"flip:{i % 3000}"
            f.delete(k)
            f.rpush(k, "a") if i % 2 else f.set(k, "b")
            i += 1
    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    try:
        target = R.RedisTarget(rd.url)
        for _ in range(3):
            keys = R.keyspace_memory(target, budget_s=5)
            assert isinstance(keys, pd.DataFrame) and keys["keys"].sum() > 0
        queues = Q.discover_queues(target)
        depths = Q.queue_depths(target, queues)
        assert isinstance(depths, pd.DataFrame)
        stuck = Q.stuck_jobs(target, queues)
        assert isinstance(stuck, SourceError) and "WRONGTYPE" in stuck.message
        assert rules.stuck(stuck, TH)[0].severity is Severity.ERROR
    finally:
        stop.set()
        t.join(timeout=5)


def test_queue_backlog_run_as_a_read_only_acl_user_names_the_stalled_jobs(rd, tmp_path):
    from runbook_lib import archive
    from runbook_lib.sandbox.queues import stage_queue_backlog
    from tests.test_runner import all_archive_bytes, run_cli

    admin = raw(rd.url)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pass-123", "~*", "&*", "-@all", "+@read",
                          "-keys", "+info", "+ping", "+hello", "+client|list", "+client|setname",
                          "+slowlog|get")
    reader_url = f"redis://reader:reader-pass-123@127.0.0.1:{rd.port}/0"
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(reader_url).set("x", 1)
    staged = stage_queue_backlog(rd.url, backlog=60, stalled=3)
    try:
        lib = asyncio.run(job_counts(rd.url, "emails"))
        proc = run_cli("run", "queue_backlog", "--incident", "Q-77", "--archive", str(tmp_path), "-p",
                       "sample_seconds=1", "-p", "samples=2", env={"RUNBOOK_REDIS_URL": reader_url})
    finally:
        staged.stop()
    assert proc.returncode == 0, proc.stderr
    [record] = archive.list_records(tmp_path, "Q-77")
    findings = {f["key"]: f for f in json.loads((record / "findings.json").read_text())}
    assert not [f for f in findings.values() if f["severity"] == "error"], findings  # no NOPERM anywhere
    stalled = findings["queue.stuck_jobs:bullmq:bull:emails:stalled"]
    assert sorted(stalled["evidence"]["job_ids"]) == sorted(staged.stalled_ids)
    backlog = findings["queue.backlog:bullmq:bull:emails"]
    assert backlog["severity"] == "crit" and "no live consumer" in backlog["title"]
    assert backlog["evidence"]["active"] == lib["active"] == len(staged.stalled_ids)
    assert b"reader-pass-123" not in all_archive_bytes(tmp_path)


# --------------------------------------------------------------------------- Bull 3/4 (Node.js)

def test_bull_counts_match_bull_and_prioritized_jobs_are_not_counted_twice(rd, procs, node_modules):
    from tests.queue_workloads import Node, kill

    bull = Node(node_modules, "bull", rd.url)
    bull.run("add", "invoices", 20)
    bull.run("add", "invoices", 5, '{"priority": 2}')
    bull.run("add", "invoices", 1, '{"delay": 200}')
    worker = bull.start("work", "invoices", "hang", 3, 1000, 3600000)
    active = wait_for(lambda: (lambda a: a if len(a) == 3 else None)(raw(rd.url).lrange("bull:invoices:active", 0, -1)))
    kill(worker)
    time.sleep(1.3)
    lib = bull.counts("invoices")
    target = R.RedisTarget(rd.url)
    queues = Q.discover_queues(target)
    assert list(zip(queues["system"], queues["queue"])) == [("bull", "bull:invoices")]
    mine = only(Q.queue_depths(target, queues), queue="bull:invoices")
    for field in ("waiting", "active", "completed", "failed", "delayed", "paused"):
        assert mine[field] == lib[field], field
    assert mine["backlog"] == lib["waiting"] + lib["paused"]  # prioritized jobs sit in wait too
    stuck = Q.stuck_jobs(target, queues, overdue_after_s=0)
    assert sorted(stuck[stuck["kind"] == "stalled"]["job_id"]) == sorted(active)
    target.close()


def test_redis_near_maxmemory_with_an_evicting_policy_rejected_clients_and_slow_commands():
    # volatile-lru: only keys with a TTL (the cache) are evicted, so the queue's own keys stay and the test is
    # deterministic; any policy but noeviction is the finding
    server = start_redis(extra_args=["--maxmemory", "3mb", "--maxmemory-policy", "volatile-lru",
                                     "--maxclients", "12", "--enable-debug-command", "local",
                                     "--slowlog-log-slower-than", "50000"])
    extra: list[socket.socket] = []
    try:
        c = raw(server.url)
        target = R.RedisTarget(server.url)
        before = R.server_info(target)
        asyncio.run(add_jobs(server.url, "emails", 5, "send"))  # a BullMQ queue on an evicting Redis
        for start in range(0, 3000, 100):  # past maxmemory: volatile-lru evicts cache keys
            pipe = c.pipeline(transaction=False)
            for i in range(start, start + 100):
                pipe.set(f"cache:{i}", "x" * 1000, ex=3600)
            pipe.execute(raise_on_error=False)
        c.execute_command("DEBUG", "SLEEP", "0.2")
        for _ in range(15):  # past maxclients: the server refuses the extra connections
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            extra.append(sock)
            sock.sendall(f"AUTH {server.password}\r\nPING\r\n".encode())
            sock.recv(200)
        after = R.server_info(target)
        queues = Q.discover_queues(target)
        mem = rules.redis_memory(R.memory(after), TH, queues)
        keyed = {f.key: f for f in mem}
        assert keyed["redis.memory:used"].severity in (Severity.WARN, Severity.CRIT)  # LRU keeps a margin
        assert keyed["redis.memory:used"].evidence["used_pct"] >= TH.redis_memory_warn_pct
        assert keyed["redis.memory:policy"].severity is Severity.CRIT and "volatile-lru" in keyed["redis.memory:policy"].title
        clients = {f.key: f for f in rules.redis_clients(R.clients_summary(after), TH)
                   + rules.redis_counters(R.info_delta(before, after), TH)}
        assert clients["redis.counters:rejected_connections"].severity is Severity.CRIT
        assert clients["redis.counters:evicted_keys"].severity is Severity.CRIT
        assert clients["redis.clients:maxclients"].severity in (Severity.WARN, Severity.CRIT)
        slow = rules.slowlog(R.slowlog(target), TH)
        assert slow[0].severity is Severity.WARN and "DEBUG" in slow[0].title.upper()
        target.close()
    finally:
        for conn in extra:
            conn.close()
        server.stop()
