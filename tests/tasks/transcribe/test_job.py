"""The job's own time limit and mid-job cancellation (``Watch`` through ``watched``), on real block streams."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from ovbatch.errors import JobCancelled, JobTimeLimitExceeded
from ovbatch.jobs import Watch
from ovbatch.tasks.transcribe.job import watched


def slow_blocks(n: int, every_s: float) -> Iterator[np.ndarray]:
    for _ in range(n):
        time.sleep(every_s)
        yield np.zeros(1600, np.float32)


def test_blocks_pass_through_untouched_when_nothing_stops_them() -> None:
    blocks = [np.full(10, i, np.float32) for i in range(5)]
    got = list(watched(iter(blocks), Watch("a.wav", time.monotonic() + 60, 60, lambda: False, 0.0)))
    assert [b[0] for b in got] == [0, 1, 2, 3, 4]


def test_a_job_past_its_time_limit_stops_at_the_next_block() -> None:
    seen = []
    t0 = time.monotonic()
    with pytest.raises(JobTimeLimitExceeded, match=r"calls/a\.wav: stopped after the job time limit of 0\.2 s"):
        for block in watched(slow_blocks(100, 0.02), Watch("calls/a.wav", t0 + 0.2, 0.2, lambda: False, 60)):
            seen.append(block)
    assert 5 <= len(seen) <= 12, f"stopped after {len(seen)} blocks of 20 ms with a 0.2 s limit"


def test_a_cancelled_batch_stops_a_running_job_and_asks_redis_rarely() -> None:
    asked = []

    def cancelled() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 3

    with pytest.raises(JobCancelled, match="b.flac: batch cancelled"):
        for _ in watched(slow_blocks(1000, 0.01), Watch("b.flac", None, None, cancelled, 0.1)):
            pass
    gaps = np.diff(asked)
    assert len(asked) == 3 and gaps.min() >= 0.09, f"asked at gaps {gaps} with a 0.1 s check interval"
