"""Batch records on real Redis and in memory: the same semantics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ovbatch.batches import BatchStore, MemoryBatchStore, RedisBatchStore


@pytest.fixture(params=["redis", "memory"])
def batches(request: pytest.FixtureRequest) -> Iterator[BatchStore]:
    if request.param == "memory":
        yield MemoryBatchStore()
        return
    import redis

    yield RedisBatchStore(redis.Redis.from_url(request.getfixturevalue("redis_url")))


def rec(job_id: str, status: str, units: float = 0.0) -> dict:
    return {
        "job_id": job_id,
        "display": job_id,
        "relpath": job_id,
        "status": status,
        "units": units,
        "outputs": [],
        "error": None,
    }


def test_counts_follow_job_states_and_the_batch_finishes(batches: BatchStore) -> None:
    batches.create(
        "b1",
        {"model": "m@1"},
        {"a": rec("a", "queued"), "b": rec("b", "queued"), "c": rec("c", "failed")},
        specs={"a": {"x": 1}},
    )
    s = batches.summary("b1")
    assert s is not None and (s["total"], s["queued"], s["failed"], s["ended_s"]) == (3, 2, 1, None)
    assert batches.specs("b1") == {"a": {"x": 1}}
    batches.set_job("b1", "a", rec("a", "running"))
    assert batches.summary("b1")["started_s"] is not None
    batches.set_job("b1", "a", rec("a", "done", 12.5))
    assert batches.set_job("b1", "b", rec("b", "done", 2.5)) == "finished"
    s = batches.summary("b1")
    assert (s["queued"], s["running"], s["done"], s["failed"], s["units"]) == (0, 0, 2, 1, 15.0)
    assert s["ended_s"] is not None


def test_a_duplicate_delivery_never_double_counts_or_undoes_done(batches: BatchStore) -> None:
    batches.create("b2", {}, {"a": rec("a", "queued"), "b": rec("b", "queued")})
    batches.set_job("b2", "a", rec("a", "running"))
    batches.set_job("b2", "a", rec("a", "done", 3.0))
    assert batches.set_job("b2", "a", rec("a", "running")) == "done", "a late redelivery must not reopen a job"
    batches.set_job("b2", "a", rec("a", "done", 3.0))
    s = batches.summary("b2")
    assert (s["done"], s["running"], s["queued"], s["units"]) == (1, 0, 1, 3.0)
    assert batches.jobs("b2")["a"]["status"] == "done"


def test_cancel_flag(batches: BatchStore) -> None:
    batches.create("b3", {}, {"a": rec("a", "queued")})
    assert not batches.is_cancelled("b3")
    batches.cancel("b3")
    assert batches.is_cancelled("b3") and batches.summary("b3")["cancel_requested"]


def test_unknown_batch(batches: BatchStore) -> None:
    assert batches.summary("nope") is None and batches.jobs("nope") == {}


def test_running_jobs_count_finer_work(batches: BatchStore) -> None:
    batches.create("b4", {}, {"a": rec("a", "queued")})
    for _ in range(3):
        batches.add_work("b4", 1)
    assert batches.summary("b4")["work"] == 3.0, "denoising steps reported by running jobs are summed"
