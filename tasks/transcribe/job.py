"""The transcription job as a plain function: a job spec in, outputs in storage, an outcome out.

The worker (workers/runtime.py) calls ``run`` through the kind (kind.py), for Celery and the embedded
mode alike; nothing here knows about Celery.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np

from ovbatch.errors import ObjectNotFound
from ovbatch.jobs import STOPS, JobEnv, Outcome, Watch, begin, stopped
from ovbatch.storage import ObjectStore
from ovbatch.tasks.transcribe import audio, formats
from ovbatch.tasks.transcribe.spec import TranscribeJob
from ovbatch.tasks.transcribe.types import Transcript


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
    extra = {"language": data.get("language")}
    return Outcome("done", data["outputs"], data["audio_s"], data["processing_s"], reused=True, extra=extra)


def watched(blocks: Iterable[np.ndarray], watch: Watch) -> Iterator[np.ndarray]:
    """The audio blocks of a running job, stopped by its time limit, its batch's cancellation or
    its worker's shutdown (``WorkerStopping``: the caller puts the job back in its queue).

    The engine pulls blocks only as it needs audio for its next windows, so a job stops within a
    few windows of the moment: its file fails with a clear reason, and the other files of a batched
    engine call go on (the batcher keeps a stream's error for that stream alone).
    """
    for block in blocks:
        watch.check("this file was being transcribed")
        yield block


def duration_limit(job: TranscribeJob, env: JobEnv) -> float | None:
    """The longest audio this job may decode: the worker's OVBATCH_MAX_AUDIO_DURATION_S; a message may
    ask for less (``--max-duration``), never for more or for none."""
    limits = [x for x in (job.max_audio_duration_s, getattr(env.settings, "max_audio_duration_s", None)) if x]
    return min(limits) if limits else None


def run(job: TranscribeJob, env: JobEnv) -> Outcome:
    """Transcribe one file. Bad input becomes a failed outcome; infrastructure errors raise, and so
    does ``WorkerStopping`` (the job is not over: it goes back to its queue)."""
    out = begin(job, env, finished, "this file")
    if isinstance(out, Outcome):
        return out
    t0 = time.perf_counter()
    engine = env.engine_for(job)
    watch = env.watch(job)  # transcription time: a cold model load is not counted
    try:
        with env.open_input(job.input_url) as raw, seekable(raw) as stream:
            blocks = audio.iter_blocks(stream, job.display, max_duration_s=duration_limit(job, env))
            check = lambda: watch.check("this file was being transcribed")  # noqa: E731
            transcript = engine.transcribe(watched(blocks, watch), job.options, check=check)
    except STOPS as exc:
        return stopped(exc, t0)
    processing_s = time.perf_counter() - t0
    outputs = write_outputs(job, out, transcript, processing_s)
    return Outcome("done", outputs, transcript.duration_s, processing_s, extra={"language": transcript.language})


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
