"""A dead worker's messages go back to their queue within about a minute; a live worker's never do.

Real Redis and real kombu: messages are published by the Celery app and taken with kombu's
``basic_get`` (which files them in kombu's ``unacked`` hash as a worker's consumer does), then left
unacknowledged, as by a worker that was SIGKILLed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from ovbatch.batches import RedisBatchStore
from ovbatch.jobs import record
from ovbatch.settings import Settings
from ovbatch.workers.app import make_app
from ovbatch.workers.presence import worker_key
from ovbatch.workers.redeliver import UNACKED, Redeliverer

QUEUE = "ovbatch.CPU"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def deliver(redis_url: str, batch_id: str, job_id: str, status: str, client: redis.Redis, **rec: Any) -> Any:
    """Record a job, publish its message and take it without acknowledging it: a worker holding it."""
    store = RedisBatchStore(client)
    store.create(
        batch_id, {"kind": "transcribe"}, {job_id: {**record(None, status, job_id=job_id, display=job_id), **rec}}
    )
    app = make_app(Settings.from_env({"OVBATCH_BROKER_URL": redis_url}))
    app.send_task("ovbatch.transcribe", args=[{"job_id": job_id}, None], queue=QUEUE, task_id=f"{batch_id}.{job_id}")
    conn = app.connection_for_read()
    message = conn.default_channel.basic_get(QUEUE, no_ack=False)
    assert message is not None and client.hlen(UNACKED) >= 1
    return conn  # kept open and never closed: closing would give the message back itself


def scan_until_settled(r: Redeliverer) -> list[str]:
    first = r.scan()
    assert first == [], "a suspect must be seen twice, confirm_s apart, before it is given back"
    time.sleep(r.confirm_s + 0.1)
    return r.scan()


def test_a_message_no_live_worker_holds_goes_back_to_the_front_of_its_queue(
    redis_url: str, client: redis.Redis
) -> None:
    _conn = deliver(redis_url, "b1", "j1", "running", client, worker="dead@host")
    r = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.3)
    assert scan_until_settled(r) == ["j1"]
    assert client.hlen(UNACKED) == 0 and client.zcard("unacked_index") == 0
    body = json.loads(client.lindex(QUEUE, -1))  # consumed with BRPOP: the right end is next
    assert body["headers"]["id"] == "b1.j1" and body["headers"]["redelivered"] is True
    assert r.restored == 1


def test_a_message_whose_job_holds_its_lock_is_left_alone(redis_url: str, client: redis.Redis) -> None:
    _conn = deliver(redis_url, "b2", "j2", "running", client, worker="alive@host")
    client.set("ovbatch:lock:j2", "alive@host", ex=15)
    r = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.1)
    assert scan_until_settled(r) == [] and client.hlen(UNACKED) == 1 and client.llen(QUEUE) == 0


def test_a_live_worker_that_lost_its_lock_keeps_its_job(redis_url: str, client: redis.Redis) -> None:
    """Its lock lapsed (a Redis restart), but its presence is back: its job is not given to another."""
    _conn = deliver(redis_url, "b3", "j3", "running", client, worker="alive@host")
    client.set(worker_key("alive@host"), json.dumps({"current_job": "j0, j3"}), ex=15)
    r = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.1)
    assert scan_until_settled(r) == [] and client.llen(QUEUE) == 0


def test_a_live_worker_that_no_longer_runs_the_job_does_not_hold_it(redis_url: str, client: redis.Redis) -> None:
    """Redis crashed and lost the job's last record update: it says running on a live worker that
    finished it long ago (no lock, not among its current jobs). The message goes back; the rerun finds
    the job's marker and writes nothing new."""
    _conn = deliver(redis_url, "b7", "j7", "running", client, worker="alive@host")
    client.set(worker_key("alive@host"), json.dumps({"current_job": "j8"}), ex=15)
    r = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.1)
    assert scan_until_settled(r) == ["j7"]


def test_a_recent_delivery_is_not_a_suspect(redis_url: str, client: redis.Redis) -> None:
    """Between its delivery and taking its lock a job holds nothing: redeliver_after_s covers that."""
    _conn = deliver(redis_url, "b4", "j4", "queued", client)
    r = Redeliverer(client, RedisBatchStore(client), after_s=60, confirm_s=0)
    assert r.scan() == [] and r.scan() == [] and client.llen(QUEUE) == 0


def test_a_finished_job_whose_ack_was_lost_is_dropped_not_run_again(redis_url: str, client: redis.Redis) -> None:
    _conn = deliver(redis_url, "b5", "j5", "done", client, worker="dead@host")
    r = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.1)
    assert scan_until_settled(r) == []
    assert client.hlen(UNACKED) == 0 and client.llen(QUEUE) == 0 and r.dropped == 1


def test_two_workers_scanning_at_once_give_a_message_back_once(redis_url: str, client: redis.Redis) -> None:
    _conn = deliver(redis_url, "b6", "j6", "queued", client)
    a = Redeliverer(client, RedisBatchStore(client), after_s=0, confirm_s=0.2)
    b = Redeliverer(redis.Redis.from_url(redis_url), RedisBatchStore(client), after_s=0, confirm_s=0.2)
    a.scan(), b.scan()
    time.sleep(0.3)
    assert sorted(a.scan() + b.scan()) == ["j6"]
    assert client.llen(QUEUE) == 1
