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
