"""What a worker process holds between jobs, and the job body shared by Celery and embedded mode."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ovbatch.batches import BatchStore
from ovbatch.errors import WorkerStopping
from ovbatch.registry.loader import load_and_compile
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.storage import ObjectStore, open_store
from ovbatch.tasks.transcribe import job as transcribe_job
from ovbatch.tasks.transcribe.spec import TranscribeJob
from ovbatch.workers.batcher import Batcher, ModelRetired
from ovbatch.workers.cache import CacheKey, ModelCache

log = logging.getLogger(__name__)
DECODER_BIN = "openvino_decoder_model.bin"  # the aligner holds about one more copy of these weights
LOCK_TTL_S = 15  # refreshed every few seconds while the job runs; a SIGKILLed worker's lock lapses


class JobLocked(Exception):
    """Raised when another live worker is running the same job (a redelivered duplicate)."""


@dataclass
class LoadedEngine:
    engine: Any
    version: Any
    batcher: Batcher

    def release(self) -> None:
        self.batcher.retire(then=self.version.wipe)


@dataclass
class WorkerContext:
    settings: Settings
    registry: Registry
    batches: BatchStore
    core: Any
    device: str
    hostname: str
    cache: ModelCache
    redis: Any = None  # None in embedded mode: no locks needed, one process
    cpus: list[int] | None = None
    jobs_done: int = 0
    compile_config: dict[str, Any] = field(default_factory=dict)
    after_job: Callable[[], None] = lambda: None
    batch_files: int = 8  # jobs run at once in threads; their windows are batched (workers/batcher.py)
    running: set[str] = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)  # set on SIGTERM (workers/main.py)
    _load_lock: threading.Lock = field(default_factory=threading.Lock)
    _stores: dict[str, ObjectStore] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self, url: str) -> ObjectStore:
        with self._lock:
            if url not in self._stores:
                self._stores[url] = open_store(url, s3_endpoint_url=self.settings.s3_endpoint_url)
            return self._stores[url]

    @property
    def current_job(self) -> str | None:
        return ", ".join(sorted(self.running)) or None

    def engine_for(self, model: str, device: str) -> Any:
        from ovbatch.tasks.transcribe.engine import WhisperEngine

        ref = ModelRef.parse(model)
        manifest = self.registry.manifest(ref)
        key = CacheKey.of(manifest, device, self.compile_config)

        def load() -> tuple[LoadedEngine, int]:
            version, compiled = load_and_compile(self.registry, ref, self.core, device, config=self.compile_config)
            size = sum(int(b.nbytes) for b in version.buffers.values())
            engine = WhisperEngine.from_loaded(version, compiled)
            if engine.aligner is not None:  # word timestamps compile a second decoder on first use
                extra = int(version.buffers[DECODER_BIN].nbytes)
                engine.aligner.on_compiled = lambda: self.cache.grow(key, extra)
            return LoadedEngine(engine, version, Batcher(engine, max_files=self.batch_files)), size

        with self._load_lock:  # two job threads missing at once load the model once
            loaded, _hit = self.cache.get_or_load(key, f"{ref}@{device}", load)
        return loaded.batcher

    def job_env(self) -> transcribe_job.JobEnv:
        registry_store = self.registry.store
        return transcribe_job.JobEnv(
            open_input=lambda url: transcribe_job.open_input(registry_store, url, self.settings.s3_endpoint_url),
            out_store=self.store,
            engine_for=self.engine_for,
            is_cancelled=self.batches.is_cancelled,
            time_limit_s=self.settings.job_time_limit_s,
            stopping=self.stopping.is_set,
        )

    # -- locks: one live run per job id ----------------------------------------------------
    def _lock_key(self, job_id: str) -> str:
        return f"ovbatch:lock:{job_id}"

    def acquire(self, job_id: str) -> None:
        if self.redis is None:
            return
        if not self.redis.set(self._lock_key(job_id), self.hostname, nx=True, ex=LOCK_TTL_S):
            raise JobLocked(job_id)
        with self._lock:
            self.running.add(job_id)

    def refresh_lock(self) -> None:
        with self._lock:
            running = list(self.running)
        for job_id in running:
            if self.redis is not None:
                self.redis.expire(self._lock_key(job_id), LOCK_TTL_S)

    def release(self, job_id: str) -> None:
        with self._lock:
            self.running.discard(job_id)
        if self.redis is not None:
            self.redis.delete(self._lock_key(job_id))


def process_job(ctx: WorkerContext, payload: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    """Run one transcription job and record it in its batch; returns the job's record."""
    job = TranscribeJob.from_json(payload)
    ctx.acquire(job.job_id)
    try:
        ctx.batches.set_job(job.batch_id, job.job_id, _running(job, attempt, ctx.hostname))
        try:
            try:
                outcome = transcribe_job.run(job, ctx.job_env())
            except ModelRetired:  # evicted between lookup and use: the next lookup loads it again
                outcome = transcribe_job.run(job, ctx.job_env())
        except WorkerStopping:  # not over: queued again, and the task hands the message back
            ctx.batches.set_job(job.batch_id, job.job_id, {**_running(job, attempt, ctx.hostname), "status": "queued"})
            raise
        except Exception as exc:  # not the file's fault (storage, model, bug): failed, `ovbatch retry` may rerun
            log.exception("job %s (%s) failed", job.job_id, job.display)
            outcome = transcribe_job.Outcome("failed", error=f"{type(exc).__name__}: {exc}", retryable=True)
        record = outcome.record(job, attempt)
        record["worker"] = ctx.hostname
        if ctx.batches.set_job(job.batch_id, job.job_id, record) == "finished":
            write_report(ctx.batches, job.batch_id, ctx.store(job.out_url))
        with ctx._lock:
            ctx.jobs_done += 1
        ctx.after_job()
        return record
    finally:
        ctx.release(job.job_id)


def _running(job: TranscribeJob, attempt: int, worker: str) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "display": job.display,
        "relpath": job.relpath,
        "status": "running",
        "outputs": [],
        "audio_s": 0.0,
        "processing_s": 0.0,
        "language": None,
        "error": None,
        "attempts": attempt,
        "worker": worker,
    }


def write_report(batches: BatchStore, batch_id: str, out: ObjectStore) -> str:
    """The batch report under --out: every input with its status, outputs and error."""
    summary = batches.summary(batch_id) or {}
    report = {
        "batch_id": batch_id,
        "summary": {k: v for k, v in summary.items() if k != "meta"},
        "meta": summary.get("meta", {}),
        "inputs": sorted(batches.jobs(batch_id).values(), key=lambda r: r.get("relpath") or r.get("display", "")),
        "written_s": time.time(),
    }
    key = f"batch-{batch_id}.json"
    out.put_bytes(key, json.dumps(report, indent=2).encode())
    return key
