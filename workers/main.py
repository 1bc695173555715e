"""Start a worker: check the device, pin CPUs, make the per-process resources, run Celery (threads pool).

The threads pool runs jobs in this process and never forks, so the ``ov.Core`` made here is safe:
OpenVINO is not fork-safe. Jobs running at once share the compiled model through a batcher.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis as redis_lib
from celery.signals import worker_shutting_down

from ovbatch.batches import RedisBatchStore
from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import ConfigError
from ovbatch.ov import check_device, device_info, make_core
from ovbatch.process import no_core_dumps
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.storage import open_store
from ovbatch.workers.app import make_app
from ovbatch.workers.cache import ModelCache
from ovbatch.workers.presence import Beat
from ovbatch.workers.redeliver import Redeliverer, RedeliveryLoop
from ovbatch.workers.runtime import WorkerContext
from ovbatch.workers.tasks import bind_context, register

log = logging.getLogger(__name__)


def parse_cpus(text: str) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6]; checked against the CPUs this process may use."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--cpus {text!r}: use a list like 0-3,6") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ConfigError(f"--cpus {text!r}: this machine offers CPUs {sorted(allowed)}")
    return sorted(cpus)


def build_context(settings: Settings, device: str, cpus: list[int] | None, name: str | None) -> WorkerContext:
    no_core_dumps()  # before any key or weight is in memory (ovbatch/process.py)
    if cpus:
        os.sched_setaffinity(0, cpus)  # before OpenVINO starts its threads, which inherit the mask
    core = make_core()
    check_device(core, device)
    config: dict[str, object] = {}
    if device.startswith("CPU"):
        # as many inference threads as pinned cores; several workers then share a box without fighting
        threads = len(cpus) if cpus else len(os.sched_getaffinity(0))
        config = {"INFERENCE_NUM_THREADS": threads}
    # a Redis that stops answering must fail the call (and the beat retries), never hang a job thread
    client = redis_lib.Redis.from_url(
        settings.broker_url,
        socket_connect_timeout=5,
        socket_timeout=30,
        retry_on_timeout=True,
        health_check_interval=30,
    )
    registry = Registry(
        open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url), Keyring.load(settings.keyring_path)
    )
    hostname = f"{name or device.lower()}-{os.getpid()}@{socket.gethostname()}"
    return WorkerContext(
        settings=settings,
        registry=registry,
        batches=RedisBatchStore(client),
        core=core,
        device=device,
        hostname=hostname,
        cache=ModelCache(settings.cache_max_models, settings.cache_max_bytes),
        redis=client,
        cpus=cpus,
        compile_config=config,
        batch_files=settings.worker_batch_files,
        device_info=device_info(core, device),
    )


def build_embedded_context(settings: Settings, device: str) -> WorkerContext:
    """The same resources in the submitting process, for ``--local`` or when Redis is unreachable."""
    from ovbatch.batches import MemoryBatchStore

    no_core_dumps()  # this process decrypts models too

    core = make_core()
    check_device(core, device)
    registry = Registry(
        open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url), Keyring.load(settings.keyring_path)
    )
    return WorkerContext(
        settings=settings,
        registry=registry,
        batches=MemoryBatchStore(),
        core=core,
        device=device,
        hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
        cache=ModelCache(settings.cache_max_models, settings.cache_max_bytes),
        batch_files=settings.worker_batch_files,
    )


def worker_queues(device: str, kind_names: list[str] | None) -> tuple[list[str], bool]:
    """The queues a worker serves for ``kind_names`` (default: every kind without a queue of its own),
    and whether they are a dedicated kind's (then the worker runs one job at a time)."""
    from ovbatch import kinds

    chosen = [kinds.get(n) for n in kind_names] if kind_names else [k for k in kinds.all_kinds() if not k.dedicated]
    dedicated = [k.name for k in chosen if k.dedicated]
    if dedicated and len(chosen) > 1:
        raise ConfigError(
            f"--kinds {','.join(k.name for k in chosen)}: {', '.join(dedicated)} jobs are long and memory-heavy and "
            f"run on workers of their own, one job at a time; start a separate worker with --kinds {dedicated[0]}"
        )
    return sorted({k.queue(device) for k in chosen}), bool(dedicated)


def run_worker(
    settings: Settings,
    device: str,
    cpus: list[int] | None = None,
    name: str | None = None,
    loglevel: str = "INFO",
    kind_names: list[str] | None = None,
) -> None:
    queues, dedicated = worker_queues(device, kind_names)
    ctx = build_context(settings, device, cpus, name)
    if dedicated:
        ctx.batch_files = 1
    app = make_app(settings)
    register(app)
    bind_context(ctx)
    queue = ",".join(queues)
    assert ctx.redis is not None
    beat = Beat(ctx.redis, ctx, queue)
    ctx.after_job = beat.now  # `ovbatch workers` sees each finished job at once
    assert isinstance(ctx.batches, RedisBatchStore)
    redelivery = RedeliveryLoop(Redeliverer(ctx.redis, ctx.batches, settings.redeliver_after_s))
    if not settings.allowed_roots.restricted:
        log.warning(
            "OVBATCH_ALLOWED_ROOTS is not set: this worker reads inputs from and writes outputs to any path "
            "its credentials reach (signed jobs only); set it to the storage prefixes your batches use"
        )

    def stop_jobs(**_: object) -> None:
        # Celery's warm shutdown (SIGTERM: scale-in, a deploy) takes no new job and waits for the
        # running ones. They get OVBATCH_STOP_GRACE_S to finish (a job restarted elsewhere starts from
        # zero, so a long file could loop for ever while workers scale in and out); past it they stop
        # at their next block and their messages go back to the queue, before the supervisor's SIGKILL.
        # Celery checks its stop flag only between polls, so a message fetched as the signal came may
        # still be handed to a thread: ``draining`` sends it back instead of starting it.
        ctx.draining.set()
        if ctx.running:
            log.warning(
                "stopping: %d running job(s) get up to %d s to finish (OVBATCH_STOP_GRACE_S)",
                len(ctx.running),
                settings.stop_grace_s,
            )
        timer = threading.Timer(settings.stop_grace_s, ctx.stopping.set)
        timer.daemon = True
        timer.start()

    worker_shutting_down.connect(stop_jobs, weak=False)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={ctx.batch_files}",
                f"--queues={queue}",
                f"--hostname={ctx.hostname}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        redelivery.stop()
        beat.stop()
