"""Batch records: counts per state, per-job status and errors, units done (the kind's: audio seconds,
images), finer work done while jobs run (denoising steps), start and end.

Two backends with one interface: Redis (shared by the CLI and every worker) and in-memory (the
embedded mode, where jobs run in the submitting process). A job's status moves atomically with
its batch's counts (a Lua script in Redis), so redelivered jobs never double-count.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

STATES = ("queued", "running", "done", "failed", "skipped", "cancelled")
FINAL = ("done", "failed", "skipped", "cancelled")
BATCH_TTL_S = 30 * 24 * 3600

# KEYS: batch hash, jobs hash.  ARGV: job id, record JSON, now.
# "done" and "skipped" are final: a late duplicate delivery can't turn them into anything else.
# A batch whose hash is gone (expired, or lost with a Redis restart without persistence) is not
# recreated from one job's update, without its total: the update is refused with "lost".
_SET_JOB = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'lost' end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local new = cjson.decode(ARGV[2])
local before = false
if old then before = cjson.decode(old)['status'] end
if (before == 'done' or before == 'skipped') and new['status'] ~= before then return before end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if before ~= new['status'] then
  if before then redis.call('HINCRBY', KEYS[1], before, -1) end
  redis.call('HINCRBY', KEYS[1], new['status'], 1)
  if new['status'] == 'done' then
    redis.call('HINCRBYFLOAT', KEYS[1], 'units', new['units'] or 0)
  end
  if new['status'] == 'running' and not redis.call('HGET', KEYS[1], 'started_s') then
    redis.call('HSET', KEYS[1], 'started_s', ARGV[3])
  end
end
local open = tonumber(redis.call('HGET', KEYS[1], 'queued') or '0')
  + tonumber(redis.call('HGET', KEYS[1], 'running') or '0')
if open == 0 and tonumber(redis.call('HGET', KEYS[1], 'total') or '0') > 0 then
  if redis.call('HSETNX', KEYS[1], 'ended_s', ARGV[3]) == 1 then return 'finished' end
end
return before or ''
"""


class BatchStore(ABC):
    @abstractmethod
    def create(
        self,
        batch_id: str,
        meta: dict[str, Any],
        jobs: dict[str, dict[str, Any]],
        specs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Record a new batch with every job in its first state (queued, skipped or failed), and the
        job messages (for ``retry``)."""

    @abstractmethod
    def specs(self, batch_id: str) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def set_job(self, batch_id: str, job_id: str, record: dict[str, Any]) -> str:
        """Store a job's record; return its previous status, "finished" if this ended the batch, or
        "lost" if the batch has no record any more (nothing is stored then)."""

    @abstractmethod
    def summary(self, batch_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def jobs(self, batch_id: str) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def cancel(self, batch_id: str) -> None: ...

    @abstractmethod
    def reopen(self, batch_id: str) -> None:
        """Clear the end time and the cancel flag, before jobs are queued again (``retry``)."""

    @abstractmethod
    def is_cancelled(self, batch_id: str) -> bool: ...

    @abstractmethod
    def add_work(self, batch_id: str, amount: float) -> None:
        """Count finer work done by a running job (its kind's ``Unit.work``: denoising steps)."""

    def set_stage(self, batch_id: str, text: str) -> None:  # noqa: B027 (optional: a no-op by default)
        """What a long job is doing now (``model@1: calibrating 12/64``), shown by ``watch``."""

    def job(self, batch_id: str, job_id: str) -> dict[str, Any] | None:
        return self.jobs(batch_id).get(job_id)


def _summary(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": json.loads(fields.get("meta", "{}"))}
    for state in STATES:
        out[state] = int(fields.get(state, 0))
    out["total"] = int(fields.get("total", 0))
    out["units"] = float(fields.get("units", 0.0))
    out["work"] = float(fields.get("work", 0.0))
    for key in ("created_s", "started_s", "ended_s"):
        out[key] = float(fields[key]) if key in fields else None
    out["cancel_requested"] = fields.get("cancel") == "1"
    out["stage"] = fields.get("stage")
    return out


def _initial_fields(meta: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A new batch's hash fields: counts per state; ended at once if nothing is left to run."""
    counts = Counter(j["status"] for j in jobs.values())
    now = str(time.time())
    fields = {"meta": json.dumps(meta), "total": str(len(jobs)), "created_s": now}
    fields.update({s: str(counts.get(s, 0)) for s in STATES})
    if not counts.get("queued") and not counts.get("running"):
        fields["ended_s"] = now
    return fields


class RedisBatchStore(BatchStore):
    def __init__(self, client: Any, prefix: str = "ovbatch"):
        self.client = client
        self.prefix = prefix
        self._set_job = client.register_script(_SET_JOB)

    def _keys(self, batch_id: str) -> tuple[str, str]:
        return f"{self.prefix}:batch:{batch_id}", f"{self.prefix}:batch:{batch_id}:jobs"

    def create(
        self,
        batch_id: str,
        meta: dict[str, Any],
        jobs: dict[str, dict[str, Any]],
        specs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        bkey, jkey = self._keys(batch_id)
        skey = f"{bkey}:specs"
        fields = _initial_fields(meta, jobs)
        pipe = self.client.pipeline()
        pipe.hset(bkey, mapping=fields)
        if jobs:
            pipe.hset(jkey, mapping={k: json.dumps(v) for k, v in jobs.items()})
        if specs:
            pipe.hset(skey, mapping={k: json.dumps(v) for k, v in specs.items()})
        pipe.expire(bkey, BATCH_TTL_S).expire(jkey, BATCH_TTL_S).expire(skey, BATCH_TTL_S)
        pipe.zadd(f"{self.prefix}:batches", {batch_id: float(fields["created_s"])})
        pipe.execute()

    def set_job(self, batch_id: str, job_id: str, record: dict[str, Any]) -> str:
        bkey, jkey = self._keys(batch_id)
        result = self._set_job(keys=[bkey, jkey], args=[job_id, json.dumps(record), time.time()])
        return result.decode() if isinstance(result, bytes) else str(result)

    def summary(self, batch_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(self._keys(batch_id)[0])
        if not raw:
            return None
        return _summary({k.decode(): v.decode() for k, v in raw.items()})

    def jobs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self._keys(batch_id)[1])
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def job(self, batch_id: str, job_id: str) -> dict[str, Any] | None:
        raw = self.client.hget(self._keys(batch_id)[1], job_id)
        return json.loads(raw) if raw is not None else None

    def specs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(f"{self._keys(batch_id)[0]}:specs")
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def cancel(self, batch_id: str) -> None:
        self.client.hset(self._keys(batch_id)[0], "cancel", "1")

    def is_cancelled(self, batch_id: str) -> bool:
        return self.client.hget(self._keys(batch_id)[0], "cancel") == b"1"

    def reopen(self, batch_id: str) -> None:
        self.client.hdel(self._keys(batch_id)[0], "ended_s", "cancel")

    def add_work(self, batch_id: str, amount: float) -> None:
        self.client.hincrbyfloat(self._keys(batch_id)[0], "work", amount)

    def set_stage(self, batch_id: str, text: str) -> None:
        self.client.hset(self._keys(batch_id)[0], "stage", text)

    def recent(self, limit: int = 20) -> list[str]:
        return [b.decode() for b in self.client.zrevrange(f"{self.prefix}:batches", 0, limit - 1)]


class MemoryBatchStore(BatchStore):
    """The same semantics in process memory, for the embedded mode (and unit tests)."""

    def __init__(self) -> None:
        self._batches: dict[str, dict[str, str]] = {}
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self._specs: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        batch_id: str,
        meta: dict[str, Any],
        jobs: dict[str, dict[str, Any]],
        specs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        fields = _initial_fields(meta, jobs)
        with self._lock:
            self._batches[batch_id] = fields
            self._jobs[batch_id] = {k: dict(v) for k, v in jobs.items()}
            self._specs[batch_id] = dict(specs or {})

    def specs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._specs.get(batch_id, {}))

    def set_job(self, batch_id: str, job_id: str, record: dict[str, Any]) -> str:
        with self._lock:
            if batch_id not in self._batches:
                return "lost"
            fields, jobs = self._batches[batch_id], self._jobs[batch_id]
            before = jobs.get(job_id, {}).get("status")
            if before in ("done", "skipped") and record["status"] != before:
                return str(before)
            jobs[job_id] = dict(record)
            if before != record["status"]:
                if before:
                    fields[before] = str(int(fields[before]) - 1)
                fields[record["status"]] = str(int(fields[record["status"]]) + 1)
                if record["status"] == "done":
                    fields["units"] = str(float(fields.get("units", 0)) + float(record.get("units") or 0))
                if record["status"] == "running":
                    fields.setdefault("started_s", str(time.time()))
            if int(fields["queued"]) + int(fields["running"]) == 0 and "ended_s" not in fields:
                fields["ended_s"] = str(time.time())
                return "finished"
            return before or ""

    def summary(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            fields = self._batches.get(batch_id)
            return _summary(dict(fields)) if fields else None

    def jobs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._jobs.get(batch_id, {}).items()}

    def cancel(self, batch_id: str) -> None:
        with self._lock:
            self._batches[batch_id]["cancel"] = "1"

    def is_cancelled(self, batch_id: str) -> bool:
        with self._lock:
            return self._batches.get(batch_id, {}).get("cancel") == "1"

    def reopen(self, batch_id: str) -> None:
        with self._lock:
            self._batches[batch_id].pop("ended_s", None)
            self._batches[batch_id].pop("cancel", None)

    def add_work(self, batch_id: str, amount: float) -> None:
        with self._lock:
            fields = self._batches[batch_id]
            fields["work"] = str(float(fields.get("work", 0)) + amount)

    def set_stage(self, batch_id: str, text: str) -> None:
        with self._lock:
            self._batches[batch_id]["stage"] = text
