"""A dead worker's jobs run again within about a minute, not after the visibility timeout (hours).

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked`` hash
(``[message, exchange, routing_key]`` by delivery tag) with its delivery time in ``unacked_index``,
and puts it back on its queue only once ``visibility_timeout`` has passed, whether or not the worker
holding it is alive. It cannot tell a dead worker from a slow job; ovbatch can:

* a running job holds ``ovbatch:lock:<job id>`` (15 s expiry, refreshed every 5 s by its worker's
  beat, workers/presence.py), and its record names the worker, whose presence key also expires
  15 s after its last beat;
* so a message delivered more than ``redeliver_after_s`` ago whose job has no lock, and whose record
  is not ``running`` on a live worker that lists it among its current jobs, is held by nobody (a
  record can say running on a live worker that no longer runs it: a write lost in a Redis crash).
  Seen so on two scans ``CONFIRM_S`` apart (a live worker that lost Redis for a while re-takes its
  lock and presence at its next beat, 5 s), it goes back to its queue, at the front (the next worker
  to poll takes it).

A record already final (done, failed, skipped, cancelled) means the job finished and only its
acknowledgement was lost with the worker: the message is dropped, never run again.

Every live worker scans (every ``SCAN_S``); two scanning at once are safe: the restore is kombu's
own ``restore_by_tag`` transaction (WATCH on the unacked hash), written out here because kombu's
needs a channel of a consumer connection, and this runs beside Celery's consumer in a thread. The
queue name is the routing key: ovbatch's queues are direct, one per name, with no priorities.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from ovbatch.batches import FINAL, RedisBatchStore
from ovbatch.workers.presence import worker_key

log = logging.getLogger(__name__)

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
SCAN_S = 5.0
CONFIRM_S = 10.0
LOST_RECHECK_S = 3.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def job_of(raw: Any) -> tuple[str, str, str] | None:
    """(batch id, job id, routing key) of an unacked entry of an ovbatch job, else None."""
    try:
        message, _exchange, routing_key = json.loads(_text(raw))
        headers = message.get("headers") or {}
        task, task_id = headers.get("task"), headers.get("id")
    except (ValueError, TypeError, AttributeError):
        return None
    if not (isinstance(task, str) and task.startswith("ovbatch.") and isinstance(task_id, str) and "." in task_id):
        return None
    batch_id, _, job_id = task_id.partition(".")
    return batch_id, job_id, str(routing_key)


class Redeliverer:
    """Finds messages that a dead worker held and gives them back to their queue (see module doc)."""

    def __init__(self, redis: Any, batches: RedisBatchStore, after_s: float, confirm_s: float = CONFIRM_S):
        self.redis, self.batches = redis, batches
        self.after_s, self.confirm_s = after_s, confirm_s
        self._suspects: dict[str, float] = {}  # delivery tag -> first seen orphaned (monotonic)
        self.restored = 0
        self.dropped = 0

    def _held(self, batch_id: str, job_id: str) -> tuple[bool, bool]:
        """(someone may be running it, its record is final)."""
        if self.redis.exists(f"ovbatch:lock:{job_id}"):
            return True, False
        rec = self.batches.job(batch_id, job_id)
        if rec is None:  # batch expired or lost with Redis: nothing to run it for; the visibility timeout decides
            return True, False
        if rec.get("status") in FINAL:
            return False, True
        worker = rec.get("worker")
        if rec.get("status") == "running" and worker:
            raw = self.redis.get(worker_key(worker))
            if raw is not None and job_id in str(json.loads(_text(raw)).get("current_job") or ""):
                return True, False  # alive and says it runs it (its lock lapsed in a Redis blip)
        return False, False

    def scan(self) -> list[str]:
        """One pass; returns the job ids given back to their queues."""
        now, mono = time.time(), time.monotonic()
        old = self.redis.zrangebyscore(UNACKED_INDEX, 0, now - self.after_s)
        seen: set[str] = set()
        restored: list[str] = []
        for raw_tag in old:
            tag = _text(raw_tag)
            raw = self.redis.hget(UNACKED, tag)
            found = job_of(raw) if raw is not None else None
            if found is None:
                continue
            batch_id, job_id, queue = found
            held, final = self._held(batch_id, job_id)
            if held:
                continue
            seen.add(tag)
            first = self._suspects.setdefault(tag, mono)
            if mono - first < self.confirm_s:
                continue
            if self._restore(tag, queue, push=not final):
                if final:
                    self.dropped += 1
                    log.info("job %s of batch %s had ended; its dead worker's message is dropped", job_id, batch_id)
                else:
                    self.restored += 1
                    restored.append(job_id)
                    log.warning(
                        "job %s of batch %s was held by a worker that is gone: back in queue %s",
                        job_id,
                        batch_id,
                        queue,
                    )
        self._suspects = {t: s for t, s in self._suspects.items() if t in seen}
        return restored

    def _restore(self, tag: str, queue: str, push: bool) -> bool:
        """kombu's ``QoS.restore_by_tag``: atomically off the unacked hash and index, onto the front of
        its queue (consumed with BRPOP: RPUSH puts it next). False if another scanner or an ack won."""
        done = False

        def transaction(pipe: Any) -> None:
            nonlocal done
            raw = pipe.hget(UNACKED, tag)
            pipe.multi()
            pipe.zrem(UNACKED_INDEX, tag)
            pipe.hdel(UNACKED, tag)
            done = raw is not None
            if raw is not None and push:
                message, _ex, _rk = json.loads(_text(raw))
                message.setdefault("headers", {})["redelivered"] = True
                delivery = message.get("properties", {}).get("delivery_info")
                if isinstance(delivery, dict):
                    delivery["redelivered"] = True
                pipe.rpush(queue, json.dumps(message))

        self.redis.transaction(transaction, UNACKED)
        return done


class RedeliveryLoop:
    """Runs ``Redeliverer.scan`` every SCAN_S seconds in a daemon thread of the worker."""

    def __init__(self, redeliverer: Redeliverer, every_s: float = SCAN_S):
        self.redeliverer, self.every_s = redeliverer, every_s
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="ovbatch-redeliver", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.redeliverer.scan()
            except Exception:  # a Redis blip: the next scan tries again
                log.debug("redelivery scan failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()


def messages_in_redis(redis: Any, queues: set[str]) -> set[str]:
    """Task ids of every message waiting in ``queues`` or held unacknowledged by a worker."""
    found: set[str] = set()
    raws = [m for q in sorted(queues) for m in redis.lrange(q, 0, -1)]
    for raw in raws:
        try:
            task_id = json.loads(_text(raw)).get("headers", {}).get("id")
        except (ValueError, AttributeError):
            continue
        if isinstance(task_id, str):
            found.add(task_id)
    for raw in redis.hvals(UNACKED):
        job = job_of(raw)
        if job is not None:
            found.add(f"{job[0]}.{job[1]}")
    return found


def lost_jobs(redis: Any, batches: RedisBatchStore, batch_id: str, queue_of: Any) -> list[str]:
    """Jobs of ``batch_id`` recorded queued or running that no message in Redis and no lock stands for:
    lost with a Redis restart (or a message flushed by hand). Looked at twice, a few seconds apart, so
    a message between a worker's BRPOP and its unacked entry, or a retry being published, is not one.
    ``queue_of(spec)`` names a job's queue. ``ovbatch retry`` queues them again."""
    specs = batches.specs(batch_id)

    def look() -> set[str]:
        open_jobs = {j for j, r in batches.jobs(batch_id).items() if r.get("status") in ("queued", "running")}
        if not open_jobs:
            return set()
        queues = {queue_of(specs[j]) for j in open_jobs if j in specs}
        present = messages_in_redis(redis, queues)
        return {j for j in open_jobs if f"{batch_id}.{j}" not in present and not redis.exists(f"ovbatch:lock:{j}")}

    first = look()
    if not first:
        return []
    time.sleep(LOST_RECHECK_S)
    return sorted(first & look())
