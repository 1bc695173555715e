"""What a worker process holds between jobs, and the job body shared by Celery and embedded mode.

Generic: a job's kind (ovbatch/kinds.py) gives its spec, run function and engine loader."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ovbatch import inputs, kinds
from ovbatch.batches import FINAL, BatchStore
from ovbatch.errors import (
    BadMessageError,
    ModelRetired,
    OutputTakenError,
    OutsideRootsError,
    StaleMessageError,
    WorkerStopping,
)
from ovbatch.jobs import JobEnv, JobSpec, Outcome, claim_outputs, record, release_outputs
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.storage import ObjectStore, open_store
from ovbatch.workers.cache import CacheKey, ModelCache
from ovbatch.workers.gate import RunGate

log = logging.getLogger(__name__)
LOCK_TTL_S = 15  # refreshed every few seconds while the job runs; a SIGKILLed worker's lock lapses
REDIS_OUTAGE_S = 120.0  # a job's record updates wait this long for Redis to come back (a restart)
T = TypeVar("T")


# delete the lock only if this worker still holds it
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class JobLocked(Exception):
    """Raised when another live worker is running the same job (a redelivered duplicate)."""


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
    refused: int = 0  # messages dropped: forged, altered, expired, or of no recorded batch
    compile_config: dict[str, Any] = field(default_factory=dict)
    after_job: Callable[[], None] = lambda: None
    batch_files: int = 8  # jobs run at once in threads (transcription batches them: tasks/transcribe/batcher.py)
    running: set[str] = field(default_factory=set)
    # set on SIGTERM (workers/main.py): a job that starts after it goes straight back to its queue
    # (Celery can still hand the worker a message it fetched as the signal came)
    draining: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)  # set when the stop grace ends
    gate: RunGate = field(default_factory=RunGate)  # exclusive kinds (benchmarks) run alone
    device_info: dict[str, Any] = field(default_factory=dict)  # name and capabilities, advertised
    _load_lock: threading.Lock = field(default_factory=threading.Lock)
    _stores: dict[str, ObjectStore] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self, url: str) -> ObjectStore:
        """The store of an output folder, under the worker's storage roots (ovbatch/roots.py)."""
        self.settings.allowed_roots.check(url, "output folder")
        with self._lock:
            if url not in self._stores:
                self._stores[url] = open_store(url, s3_endpoint_url=self.settings.s3_endpoint_url)
            return self._stores[url]

    @property
    def current_job(self) -> str | None:
        return ", ".join(sorted(self.running)) or None

    def engine(self, kind: JobKind | str, model: str, device: str, options: dict[str, Any] | None = None) -> Any:
        """The kind's engine for ``model`` on ``device``, from the per-process cache (a miss loads it:
        fetch, decrypt into memory, compile). The manifest's kind chooses the loader."""
        kind = kinds.get(kind) if isinstance(kind, str) else kind
        ref = ModelRef.parse(model)
        manifest = self.registry.manifest(ref)
        loader = kind.loader_for(manifest)
        options = options or {}
        # the kind is part of the key: two kinds load different engines from one model (a transcription
        # batcher, a benchmarker), and one must never be handed the other's
        key = CacheKey.of(manifest, device, {**self.compile_config, "engine": options, "kind": kind.name})

        def load() -> tuple[Loaded, int]:
            request = EngineLoad(
                self.registry,
                ref,
                manifest,
                self.core,
                device,
                dict(self.compile_config),
                options,
                grow=lambda extra: self.cache.grow(key, extra),
                concurrency=self.batch_files,
                settings=self.settings,
            )
            loaded = loader(request)
            return loaded, loaded.size_bytes

        with self._load_lock:  # two job threads missing at once load the model once
            loaded, _hit = self.cache.get_or_load(key, f"{ref}@{device}", load)
        return loaded.engine

    def open_input(self, registry_store: ObjectStore, url: str) -> Any:
        """An input stream, only from under the worker's storage roots (the registry's uploads always)."""
        self.settings.allowed_roots.check(url, "input")
        return inputs.open_input(registry_store, url, self.settings.s3_endpoint_url)

    def job_env(self, kind: JobKind, batch_id: str) -> JobEnv:
        registry_store = self.registry.store
        return JobEnv(
            open_input=lambda url: self.open_input(registry_store, url),
            out_store=self.store,
            engine_for=lambda job: self.engine(kind, job.model, job.device, kind.engine_options(job)),
            is_cancelled=lambda bid: _best_effort(lambda: self.batches.is_cancelled(bid), False),
            time_limit_s=self.settings.job_time_limit_s,
            stopping=self.stopping.is_set,
            progress=lambda work: _best_effort(lambda: self.batches.add_work(batch_id, work), None),
            stage=lambda text: _best_effort(lambda: self.batches.set_stage(batch_id, text), None),
            settings=self.settings,
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
        """Keep the running jobs' locks alive; one lost in a Redis restart is taken again (a lock another
        worker holds now is left alone and logged: both runs write the same outputs)."""
        with self._lock:
            running = list(self.running)
        if self.redis is None:
            return
        for job_id in running:
            key = self._lock_key(job_id)
            if self.redis.set(key, self.hostname, nx=True, ex=LOCK_TTL_S):
                continue
            owner = self.redis.get(key)
            if owner is None or owner.decode() == self.hostname:
                self.redis.expire(key, LOCK_TTL_S)
            else:
                log.warning("job %s: its lock is now held by %s", job_id, owner.decode())

    def release(self, job_id: str) -> None:
        with self._lock:
            self.running.discard(job_id)
        if self.redis is not None:
            self.redis.eval(_RELEASE, 1, self._lock_key(job_id), self.hostname)


def process_job(ctx: WorkerContext, kind: JobKind | str, payload: Any, attempt: int = 1) -> dict[str, Any]:
    """Run one job of ``kind`` and record it in its batch; returns the job's record."""
    kind = kinds.get(kind) if isinstance(kind, str) else kind
    try:
        job = kind.spec.from_json(payload)
    except BadMessageError as exc:
        refuse_message(ctx, kind, payload, exc)
        raise
    if ctx.redis is not None:
        earlier = redis_retry(lambda: ctx.batches.job(job.batch_id, job.job_id))
        if earlier is None:
            raise StaleMessageError(f"{job.display}: batch {job.batch_id} has no record of job {job.job_id}; not run")
        if earlier.get("status") in FINAL:  # a replayed message, or a redelivery after the ack was lost
            log.info("job %s (%s) already %s: message dropped", job.job_id, job.display, earlier["status"])
            return earlier
    if ctx.draining.is_set():
        raise WorkerStopping(f"{job.display}: the worker is stopping and starts no new job; it goes back to its queue")
    redis_retry(lambda: ctx.acquire(job.job_id))
    try:
        with ctx.gate.hold(kind.exclusive, ctx.stopping.is_set, job.display):
            running = record(job, "running", attempts=attempt, worker=ctx.hostname)
            redis_retry(lambda: ctx.batches.set_job(job.batch_id, job.job_id, running))
            outcome = _run(ctx, kind, job, attempt)
        rec = record(job, outcome.status, outcome=outcome, attempts=attempt, worker=ctx.hostname, unit=kind.unit.name)
        reused = " (its outputs were already there)" if outcome.reused else ""
        log.info("job %s (%s) %s%s", job.job_id, job.display, outcome.status, reused)
        if redis_retry(lambda: ctx.batches.set_job(job.batch_id, job.job_id, rec)) == "finished":
            try:
                finish_batch(ctx.batches, job.batch_id, ctx.store(job.out_url))
            except Exception:  # the records are complete; `ovbatch status` shows them all
                log.exception("batch %s ended, but its report could not be written", job.batch_id)
        with ctx._lock:
            ctx.jobs_done += 1
        ctx.after_job()
        return rec
    finally:
        try:
            ctx.release(job.job_id)
        except RedisError:  # the lock expires by itself
            log.warning("job %s: lock not released (Redis unreachable); it lapses in %d s", job.job_id, LOCK_TTL_S)


def _best_effort(call: Callable[[], T], fallback: T) -> T:
    """A running job's asides to Redis (is the batch cancelled? progress, stage): while Redis is away
    (a restart) the job goes on, as if not cancelled, and its progress shows again once it is back."""
    try:
        return call()
    except RedisError as exc:
        log.warning("Redis unreachable during a job (%s); the job goes on", exc)
        return fallback


def redis_retry(call: Callable[[], T], outage_s: float = REDIS_OUTAGE_S) -> T:
    """``call()``, retried with backoff while Redis is unreachable or loading (a restart), for up to
    ``outage_s``; then the error goes up and the task hands its message back (workers/tasks.py)."""
    deadline = time.monotonic() + outage_s
    delay = 0.2
    while True:
        try:
            return call()
        except (RedisConnectionError, RedisTimeoutError, BusyLoadingError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable (%s); trying again in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def refuse_message(ctx: WorkerContext, kind: JobKind, payload: Any, exc: BadMessageError) -> None:
    """A message this worker's spec refuses. If it is word for word the message its batch recorded
    (a client and worker of different versions), that job fails with the reason, so the batch ends
    rather than waiting for it; any other message (forged, corrupted) changes no record."""
    log.error("%s message refused: %s", kind.name, exc)
    if not isinstance(payload, dict):
        return
    batch_id, job_id = payload.get("batch_id"), payload.get("job_id")
    if not isinstance(batch_id, str) or not isinstance(job_id, str):
        return
    if ctx.batches.specs(batch_id).get(job_id) != payload:
        return
    display = str(payload.get("display") or job_id)
    failed = record(None, "failed", job_id=job_id, display=display, error=f"{display}: {exc}")
    if ctx.batches.set_job(batch_id, job_id, failed) == "finished":
        out_url = payload.get("out_url")
        if isinstance(out_url, str):
            finish_batch(ctx.batches, batch_id, ctx.store(out_url))


def _run(ctx: WorkerContext, kind: JobKind, job: JobSpec, attempt: int) -> Outcome:
    try:
        ctx.settings.allowed_roots.check(job.out_url, f"{job.display}: output folder")
    except OutsideRootsError as exc:
        log.error("job %s refused: %s", job.job_id, exc)
        return Outcome("failed", error=str(exc))
    env = ctx.job_env(kind, job.batch_id)
    out = ctx.store(job.out_url)
    try:
        claim_outputs(out, job)
    except OutputTakenError as exc:
        return Outcome("failed", error=str(exc))
    except Exception as exc:  # storage: the job has not started; `ovbatch retry` may rerun it
        log.exception("job %s (%s): its output names could not be claimed", job.job_id, job.display)
        return Outcome("failed", error=f"{type(exc).__name__}: {exc}", retryable=True)
    outcome = _run_kind(ctx, kind, job, env, attempt)
    if outcome.status != "done":
        try:
            release_outputs(out, job)
        except Exception:  # a claim left behind names this job; --overwrite replaces it
            log.warning("job %s: its output names could not be released", job.job_id, exc_info=True)
    return outcome


def _run_kind(ctx: WorkerContext, kind: JobKind, job: JobSpec, env: JobEnv, attempt: int) -> Outcome:
    try:
        try:
            return kind.run(job, env)
        except ModelRetired:  # evicted between lookup and use: the next lookup loads it again
            return kind.run(job, env)
    except WorkerStopping:  # not over: queued again, and the task hands the message back
        queued = record(job, "queued", attempts=attempt, worker=ctx.hostname)
        redis_retry(lambda: ctx.batches.set_job(job.batch_id, job.job_id, queued))
        raise
    except RedisError:  # Redis away for longer than the job's own retries: the message goes back
        raise
    except Exception as exc:  # not the input's fault (storage, model, bug): failed, `ovbatch retry` may rerun
        log.exception("job %s (%s) failed", job.job_id, job.display)
        return Outcome("failed", error=f"{type(exc).__name__}: {exc}", retryable=True)


def finish_batch(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[str]:
    """After a batch's last job: the kind's extra outputs (a gallery), then the batch report."""
    summary = batches.summary(batch_id) or {}
    kind_name = summary.get("meta", {}).get("kind")
    written: list[str] = []
    if kind_name:
        kind = kinds.get(kind_name)
        if kind.finish_batch is not None:
            try:
                written = kind.finish_batch(batches, batch_id, out)
            except Exception:  # the report below still lists every job
                log.exception("batch %s: the %s batch outputs could not be written", batch_id, kind_name)
    return [*written, write_report(batches, batch_id, out)]


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
