"""The generic worker's handling of a message its kind refuses (no model, no Redis needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovbatch.batches import MemoryBatchStore
from ovbatch.errors import BadMessageError
from ovbatch.jobs import record
from ovbatch.settings import Settings
from ovbatch.workers.cache import ModelCache
from ovbatch.workers.runtime import WorkerContext, process_job
from tests.test_kinds import image_message


def context(tmp_path: Path) -> WorkerContext:
    settings = Settings.from_env({"OVBATCH_STORAGE_URL": (tmp_path / "store").as_uri()})
    return WorkerContext(settings, None, MemoryBatchStore(), None, "CPU", "w@test", ModelCache(1, 1 << 20))  # type: ignore[arg-type]


def test_a_recorded_message_the_worker_refuses_fails_its_job_and_ends_the_batch(tmp_path: Path) -> None:
    """A client and a worker of different versions: the batch must end, saying why, not wait for ever."""
    ctx, out = context(tmp_path), (tmp_path / "out").as_uri() + "/"
    bad = image_message(batch_id="b1", job_id="j1", steps=0, out_url=out)
    queued = {"j1": {**record(None, "queued", job_id="j1", display="inline 1 seed 3")}}
    ctx.batches.create("b1", {"kind": "txt2img"}, queued, {"j1": bad})
    with pytest.raises(BadMessageError):
        process_job(ctx, "txt2img", bad)
    rec = ctx.batches.job("b1", "j1") or {}
    assert rec["status"] == "failed" and "Expected `int` >= 1 - at `$.steps`" in rec["error"], rec
    assert rec["error"].startswith("inline 1 seed 3: "), "the error names the job"
    summary = ctx.batches.summary("b1") or {}
    assert summary["failed"] == 1 and summary["ended_s"] is not None, summary
    report = json.loads((tmp_path / "out" / "batch-b1.json").read_text())
    assert report["inputs"][0]["status"] == "failed", report


def test_a_forged_message_changes_no_record(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    good = image_message(batch_id="b2", job_id="j2")
    ctx.batches.create(
        "b2", {"kind": "txt2img"}, {"j2": record(None, "queued", job_id="j2", display="x")}, {"j2": good}
    )
    for forged in (
        {**good, "steps": 0},
        {**good, "out_url": "file:///etc/", "admin": True},
        "not a dict",
        {"batch_id": 1},
    ):
        with pytest.raises(BadMessageError):
            process_job(ctx, "txt2img", forged)
    assert (ctx.batches.job("b2", "j2") or {})["status"] == "queued", "a forged message must not fail a real job"


def redis_context(tmp_path: Path, redis_url: str, **env: str) -> WorkerContext:
    import redis

    from ovbatch.batches import RedisBatchStore

    settings = Settings.from_env({"OVBATCH_STORAGE_URL": (tmp_path / "store").as_uri(), **env})
    client = redis.Redis.from_url(redis_url)
    return WorkerContext(
        settings,
        None,
        RedisBatchStore(client),
        None,
        "CPU",
        "w@test",
        ModelCache(1, 1 << 20),
        redis=client,  # type: ignore[arg-type]
    )


def test_a_replayed_message_of_a_finished_job_runs_nothing(tmp_path: Path, redis_url: str) -> None:
    """The engine is never asked for (the context has no registry: a run would fail loudly)."""
    ctx = redis_context(tmp_path, redis_url)
    message = image_message(batch_id="b3", job_id="j3", out_url=(tmp_path / "out").as_uri() + "/")
    done = record(None, "done", job_id="j3", display="inline 1 seed 3")
    ctx.batches.create("b3", {"kind": "txt2img"}, {"j3": done}, {"j3": message})
    assert process_job(ctx, "txt2img", message)["status"] == "done"
    assert ctx.batches.job("b3", "j3") == done, "the record must not change"
    assert not (tmp_path / "out").exists(), "nothing may be written"


def test_a_message_of_a_batch_with_no_record_is_refused(tmp_path: Path, redis_url: str) -> None:
    from ovbatch.errors import StaleMessageError

    ctx = redis_context(tmp_path, redis_url)
    with pytest.raises(StaleMessageError, match="batch gone has no record of job j4; not run"):
        process_job(ctx, "txt2img", image_message(batch_id="gone", job_id="j4"))
    assert ctx.batches.summary("gone") is None, "a job's update must not recreate a lost batch"
    assert ctx.batches.set_job("gone", "j4", record(None, "done", job_id="j4")) == "lost"
    assert ctx.batches.summary("gone") is None


def test_an_output_outside_the_allowed_roots_fails_alone_before_any_work(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    settings = Settings.from_env(
        {"OVBATCH_STORAGE_URL": (tmp_path / "store").as_uri(), "OVBATCH_ALLOWED_ROOTS": allowed.as_uri()}
    )
    ctx = WorkerContext(settings, None, MemoryBatchStore(), None, "CPU", "w@test", ModelCache(1, 1 << 20))  # type: ignore[arg-type]
    elsewhere = tmp_path / "elsewhere"
    message = image_message(batch_id="b5", job_id="j5", out_url=elsewhere.as_uri() + "/")
    ctx.batches.create(
        "b5", {"kind": "txt2img"}, {"j5": record(None, "queued", job_id="j5", display="x")}, {"j5": message}
    )
    rec = process_job(ctx, "txt2img", message)
    assert rec["status"] == "failed" and not rec["retryable"], rec
    assert "output folder" in rec["error"] and "outside the storage roots this worker allows" in rec["error"], rec
    assert not elsewhere.exists(), "neither the output nor the batch report may be written there"
    with pytest.raises(Exception, match="outside the storage roots"):
        ctx.open_input(ctx.store(allowed.as_uri() + "/"), (tmp_path / "secret.wav").as_uri())


def test_two_kinds_of_one_model_get_their_own_engines(tmp_path: Path) -> None:
    """A worker that benchmarked a model and then quantizes it (or transcribes after a benchmark)
    must not be handed the other kind's cached engine: the cache key names the kind."""
    import openvino as ov

    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.storage import open_store
    from ovbatch.tasks.benchmark.job import Benchmarker
    from ovbatch.tasks.quantize.job import Quantizer
    from tests.conftest import build_tiny_ir

    ring = Keyring(tmp_path / "keys" / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(open_store((tmp_path / "registry").as_uri() + "/"), ring)
    registry.import_folder(build_tiny_ir(tmp_path / "src"), "tiny")
    settings = Settings.from_env({"OVBATCH_STORAGE_URL": (tmp_path / "store").as_uri()})
    ctx = WorkerContext(settings, registry, MemoryBatchStore(), ov.Core(), "CPU", "w@test", ModelCache(4, 1 << 30))
    bench = ctx.engine("benchmark", "tiny@1", "CPU")
    quant = ctx.engine("quantize", "tiny@1", "CPU")
    assert isinstance(bench, Benchmarker), f"the benchmark kind got {type(bench).__name__}"
    assert isinstance(quant, Quantizer), f"the quantize kind got {type(quant).__name__} (another kind's engine)"
    assert ctx.engine("benchmark", "tiny@1", "CPU") is bench, "the same kind's engine is cached"


def test_a_job_that_starts_while_its_worker_is_stopping_goes_back_untouched(tmp_path: Path, redis_url: str) -> None:
    """Celery looks at its stop flag only between polls of the broker, so a message fetched as SIGTERM
    came can still reach a thread: it must go back to its queue, not run on the leaving worker."""
    from ovbatch.errors import WorkerStopping

    ctx = redis_context(tmp_path, redis_url)
    message = image_message(batch_id="b5", job_id="j5", out_url=(tmp_path / "out").as_uri() + "/")
    queued = record(None, "queued", job_id="j5", display="inline 1 seed 3")
    ctx.batches.create("b5", {"kind": "txt2img"}, {"j5": queued}, {"j5": message})
    ctx.draining.set()
    with pytest.raises(WorkerStopping, match="inline 1 seed 3: the worker is stopping and starts no new job"):
        process_job(ctx, "txt2img", message)
    assert ctx.batches.job("b5", "j5") == queued, "a job sent back before it started must stay queued, attempt 0"
    assert not ctx.running and ctx.redis.get(ctx._lock_key("j5")) is None, "no lock may be left behind"
    assert not (tmp_path / "out").exists(), "nothing may be written"
