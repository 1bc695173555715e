"""The client side of a transcription batch: inputs -> uploaded, deterministic jobs -> a batch.

Used by ``ovbatch transcribe`` both for Redis (jobs go to the device's queue) and the embedded mode
(the same jobs run in this process).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovbatch import inputs as inputs_mod
from ovbatch.batches import BatchStore
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage import ObjectStore
from ovbatch.tasks.transcribe import job as transcribe_job
from ovbatch.tasks.transcribe.spec import UPLOADED, TranscribeJob, job_id_for
from ovbatch.tasks.transcribe.types import FORMATS, TranscribeOptions


@dataclass
class Submission:
    batch_id: str
    queued: list[TranscribeJob] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0


def out_url_of(out: str) -> str:
    """``--out`` as a storage URL: s3:// and file:// stay, a local path becomes an absolute file:// URL."""
    if out.startswith(("s3://", "file://")):
        return out.rstrip("/") + "/"
    return Path(out).expanduser().resolve().as_uri() + "/"


def _reference(registry_store: ObjectStore, item: Any) -> tuple[str, str]:
    """(input_url, sha256): S3 objects are referenced where they are; local files are uploaded."""
    if item.display.startswith("s3://") and "::" not in item.display and "!" not in item.display:
        with item.open() as stream:
            digest, _size = inputs_mod.content_digest(stream)
        return item.display, digest
    key = inputs_mod.upload_content_addressed(registry_store, item)
    return UPLOADED + key, key.rsplit("/", 1)[-1]


def _failed_record(job_id: str, display: str, relpath: str, error: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "display": display,
        "relpath": relpath,
        "status": "failed",
        "outputs": [],
        "audio_s": 0.0,
        "processing_s": 0.0,
        "language": None,
        "error": error,
        "attempts": 0,
        "retryable": False,
    }


def submit(
    sources: list[str],
    *,
    registry: Registry,
    batches: BatchStore,
    out: str,
    model: str,
    device: str,
    options: TranscribeOptions,
    formats: tuple[str, ...] = FORMATS,
    max_audio_duration_s: float | None = None,
    s3_endpoint_url: str | None = None,
    out_store: Callable[[str], ObjectStore],
    progress: Callable[[str], None] = lambda _msg: None,
) -> Submission:
    """Enumerate, upload and record a batch; return the jobs still to run (the caller enqueues them)."""
    ref = registry.resolve(ModelRef.parse(model))
    out_url = out_url_of(out)
    store = out_store(out_url)
    batch_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    items, problems = inputs_mod.enumerate_inputs(sources, s3_endpoint_url=s3_endpoint_url)
    sub = Submission(batch_id)
    records: dict[str, dict[str, Any]] = {}
    specs: dict[str, dict[str, Any]] = {}
    for problem in problems:
        job_id = hashlib.sha256(problem.display.encode()).hexdigest()[:32]
        records[job_id] = _failed_record(job_id, problem.display, problem.display, problem.reason)
        sub.failed += 1
    for item in items:
        progress(item.display)
        try:
            input_url, digest = _reference(registry.store, item)
        except Exception as exc:  # an unreadable file fails alone; the batch goes on
            job_id = hashlib.sha256(item.display.encode()).hexdigest()[:32]
            records[job_id] = _failed_record(job_id, item.display, item.relpath, f"{item.display}: {exc}")
            sub.failed += 1
            continue
        job = TranscribeJob(
            batch_id=batch_id,
            job_id=job_id_for(digest, str(ref), options, formats, out_url, item.relpath),
            input_url=input_url,
            input_sha256=digest,
            display=item.display,
            relpath=item.relpath,
            model=str(ref),
            device=device,
            out_url=out_url,
            formats=formats,
            options=options,
            max_audio_duration_s=max_audio_duration_s,
        )
        earlier = transcribe_job.finished(job, store)
        if earlier is not None:
            record = earlier.record(job, attempts=0)
            record["status"] = "skipped"
            record["error"] = None
            sub.skipped += 1
        else:
            record = queued_record(job)
            sub.queued.append(job)
        records[job.job_id] = record
        specs[job.job_id] = job.to_json()
    meta = {
        "model": str(ref),
        "device": device,
        "out": out_url,
        "formats": list(formats),
        "options": options.to_json(),
        "sources": sources,
    }
    batches.create(batch_id, meta, records, specs)
    return sub


def queued_record(job: TranscribeJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "display": job.display,
        "relpath": job.relpath,
        "status": "queued",
        "outputs": [],
        "audio_s": 0.0,
        "processing_s": 0.0,
        "language": None,
        "error": None,
        "attempts": 0,
        "retryable": False,
    }
