"""The transcription job as a plain function: a job spec in, outputs in storage, an outcome out.

The Celery task (task.py) and the embedded mode both call ``run``; nothing here knows about Celery.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ovbatch.errors import InputError, JobCancelled, JobTimeLimitExceeded, ObjectNotFound, WorkerStopping
from ovbatch.storage import ObjectStore
from ovbatch.tasks.transcribe import audio, formats
from ovbatch.tasks.transcribe.spec import UPLOADED, TranscribeJob
from ovbatch.tasks.transcribe.types import Transcript


@dataclass
class Outcome:
    status: str  # done, failed, cancelled
    outputs: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    processing_s: float = 0.0
    language: str | None = None
    error: str | None = None
    reused: bool = False  # outputs were already there (a redelivery or resubmission)
    retryable: bool = False  # bad input is never retried; infrastructure failures may be

    def record(self, job: TranscribeJob, attempts: int = 1) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "display": job.display,
            "relpath": job.relpath,
            "status": self.status,
            "outputs": self.outputs,
            "audio_s": self.audio_s,
            "processing_s": round(self.processing_s, 3),
            "language": self.language,
            "error": self.error,
            "attempts": attempts,
            "retryable": self.retryable,
        }


@dataclass
class JobEnv:
    """What a job needs from its process: storage, the engine for a model, and the batch state."""

    open_input: Callable[[str], BinaryIO]
    out_store: Callable[[str], ObjectStore]
    engine_for: Callable[[str, str], Any]  # (model name@version, device) -> WhisperEngine
    is_cancelled: Callable[[str], bool]
    # Celery enforces task_time_limit only in its prefork pool (celery#9203), and our workers use
    # threads: the job enforces the limit itself, between blocks of audio (see ``watched``)
    time_limit_s: float | None = None
    cancel_check_s: float = 5.0  # how often a running job asks whether its batch was cancelled
    # set when the worker is told to stop (SIGTERM): running jobs end at their next block and go
    # back to the queue at once, instead of holding a scale-down for hours
    stopping: Callable[[], bool] = lambda: False


def open_input(registry_store: ObjectStore, url: str, s3_endpoint_url: str | None = None) -> BinaryIO:
    from ovbatch.storage import open_object

    if url.startswith(UPLOADED):
        return registry_store.open(url[len(UPLOADED) :])
    return open_object(url, s3_endpoint_url=s3_endpoint_url)


def seekable(stream: BinaryIO) -> contextlib.AbstractContextManager[BinaryIO]:
    """Decoders seek; an S3 body can't. Copy such a stream into a spooled file (memory up to 64 MiB,
    then a private temp file: this is the user's audio, never model bytes)."""
    if getattr(stream, "seekable", lambda: False)():
        return contextlib.nullcontext(stream)
    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115  closed by the caller's with
    shutil.copyfileobj(stream, spool, 1 << 20)
    spool.seek(0)
    return spool  # type: ignore[return-value]


def finished(job: TranscribeJob, store: ObjectStore) -> Outcome | None:
    """The earlier outcome if this job's marker exists (so nothing is transcribed twice)."""
    try:
        data = json.loads(store.get_bytes(job.marker_key))
    except ObjectNotFound:
        return None
    return Outcome("done", data["outputs"], data["audio_s"], data["processing_s"], data.get("language"), reused=True)


def watched(
    blocks: Iterable[np.ndarray],
    display: str,
    deadline: float | None,
    limit_s: float | None,
    cancelled: Callable[[], bool],
    every_s: float,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[np.ndarray]:
    """The audio blocks of a running job, stopped by its time limit, its batch's cancellation or
    its worker's shutdown (``WorkerStopping``: the caller puts the job back in its queue).

    The engine pulls blocks only as it needs audio for its next windows, so a job stops within a
    few windows of the moment: its file fails with a clear reason, and the other files of a batched
    engine call go on (the batcher keeps a stream's error for that stream alone).
    """
    next_check = time.monotonic() + every_s
    for block in blocks:
        if stopping():
            raise WorkerStopping(f"{display}: the worker is shutting down; the job goes back to its queue")
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise JobTimeLimitExceeded(
                f"{display}: stopped after the job time limit of {limit_s:g} s (OVBATCH_JOB_TIME_LIMIT_S)"
            )
        if now >= next_check:
            next_check = now + every_s
            if cancelled():
                raise JobCancelled(f"{display}: batch cancelled while this file was being transcribed")
        yield block


def run(job: TranscribeJob, env: JobEnv) -> Outcome:
    """Transcribe one file. Bad input becomes a failed outcome; infrastructure errors raise, and so
    does ``WorkerStopping`` (the job is not over: it goes back to its queue)."""
    if env.is_cancelled(job.batch_id):
        return Outcome("cancelled", error="batch cancelled before this file started")
    out = env.out_store(job.out_url)
    earlier = finished(job, out)
    if earlier is not None:
        return earlier
    t0 = time.perf_counter()
    engine = env.engine_for(job.model, job.device)
    limit = env.time_limit_s
    deadline = time.monotonic() + limit if limit else None  # transcription time: a cold model load is not counted
    try:
        with env.open_input(job.input_url) as raw, seekable(raw) as stream:
            blocks = audio.iter_blocks(stream, job.display, max_duration_s=job.max_audio_duration_s)
            cancelled = lambda: env.is_cancelled(job.batch_id)  # noqa: E731
            blocks = watched(blocks, job.display, deadline, limit, cancelled, env.cancel_check_s, env.stopping)
            transcript = engine.transcribe(blocks, job.options)
    except InputError as exc:
        return Outcome("failed", error=str(exc), processing_s=time.perf_counter() - t0)
    except JobCancelled as exc:
        return Outcome("cancelled", error=str(exc), processing_s=time.perf_counter() - t0)
    except JobTimeLimitExceeded as exc:  # not the file's fault: `ovbatch retry` may rerun it (a faster worker)
        return Outcome("failed", error=str(exc), processing_s=time.perf_counter() - t0, retryable=True)
    processing_s = time.perf_counter() - t0
    outputs = write_outputs(job, out, transcript, processing_s)
    return Outcome("done", outputs, transcript.duration_s, processing_s, transcript.language)


def write_outputs(job: TranscribeJob, out: ObjectStore, transcript: Transcript, processing_s: float) -> list[str]:
    """Each output is written atomically under its deterministic name, then the marker: a second
    delivery of the same job rewrites identical objects, so exactly one set of outputs exists."""
    meta = {
        "model": job.model,
        "input": job.display,
        "audio_duration_s": round(transcript.duration_s, 3),
        "processing_s": round(processing_s, 3),
        "task": job.options.task,
        "job_id": job.job_id,
    }
    keys = []
    for fmt in job.formats:
        key = job.output_key(fmt)
        out.put_bytes(key, formats.render(transcript, fmt, meta).encode("utf-8"))
        keys.append(key)
    marker = {
        "outputs": keys,
        "audio_s": transcript.duration_s,
        "processing_s": processing_s,
        "language": transcript.language,
        "model": job.model,
        "input_sha256": job.input_sha256,
    }
    out.put_bytes(job.marker_key, json.dumps(marker).encode())
    return keys
