"""The client side of any batch: a kind's plan (jobs with deterministic ids, inputs that failed
before becoming jobs) -> a batch record, with jobs already finished skipped.

Used by every kind's command for Redis (the caller enqueues ``queued``) and the embedded mode
(the same jobs run in this process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovbatch.batches import BatchStore
from ovbatch.errors import BadMessageError
from ovbatch.jobs import JobSpec, output_taken, record
from ovbatch.kinds import JobKind
from ovbatch.storage import ObjectStore


@dataclass(frozen=True)
class Failure:
    """An input that could not become a job (unreadable file, bad prompt row): it fails alone."""

    display: str
    error: str


@dataclass
class Plan:
    jobs: list[JobSpec] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # the kind's batch settings, shown by status
    work: dict[str, float] = field(default_factory=dict)  # job id -> finer work it will do (steps)


@dataclass
class Submission:
    batch_id: str
    kind: str
    queued: list[JobSpec] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0


def new_batch_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def out_url_of(out: str) -> str:
    """``--out`` as a storage URL: s3:// and file:// stay, a local path becomes an absolute file:// URL."""
    if out.startswith(("s3://", "file://")):
        return out.rstrip("/") + "/"
    return Path(out).expanduser().resolve().as_uri() + "/"


def failure_id(display: str) -> str:
    return hashlib.sha256(display.encode()).hexdigest()[:32]


def record_batch(
    kind: JobKind,
    batch_id: str,
    plan: Plan,
    batches: BatchStore,
    out_url: str,
    out_store: Callable[[str], ObjectStore],
) -> Submission:
    """Record the batch; jobs whose outputs are already there are skipped, the rest are returned queued."""
    store = out_store(out_url)
    sub = Submission(batch_id, kind.name)
    records: dict[str, dict[str, Any]] = {}
    for failure in plan.failures:
        jid = failure_id(failure.display)
        records[jid] = record(None, "failed", job_id=jid, display=failure.display, error=failure.error)
        sub.failed += 1
    work_total = 0.0
    jobs = []
    for job in plan.jobs:
        try:  # the message the worker will validate, validated here first: a bad one fails alone, now
            jobs.append(type(job).from_json(job.to_json()))
        except BadMessageError as exc:
            records[job.job_id] = record(None, "failed", job_id=job.job_id, display=job.display, error=str(exc))
            sub.failed += 1
    for job in jobs:
        earlier = kind.finished(job, store)
        taken = output_taken(store, job) if earlier is None else None
        if earlier is not None:
            records[job.job_id] = record(job, "skipped", outcome=dataclasses.replace(earlier, error=None))
            sub.skipped += 1
        elif taken is not None:  # another batch's outputs under these names: never replaced silently
            records[job.job_id] = record(job, "failed", error=taken)
            sub.failed += 1
        else:
            records[job.job_id] = record(job, "queued")
            sub.queued.append(job)
            work_total += plan.work.get(job.job_id, 0.0)
    meta = {**plan.meta, "kind": kind.name, "unit": dataclasses.asdict(kind.unit), "out": out_url}
    meta["work_total"] = work_total
    batches.create(batch_id, meta, records, {job.job_id: job.to_json() for job in jobs})
    return sub
