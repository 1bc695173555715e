"""How the batcher hands arriving files to an idle engine (no model: the engine here only records
what each ``take`` gave it and answers every file at once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ovbatch.tasks.transcribe.batcher import Batcher
from ovbatch.tasks.transcribe.engine import StreamRequest
from ovbatch.tasks.transcribe.types import TranscribeOptions, Transcript


class RecordingEngine:
    """Takes what the batcher gives, notes the size of each hand-over, finishes each file at once."""

    def __init__(self) -> None:
        self.handed: list[int] = []

    def check_options(self, options: TranscribeOptions) -> None:
        pass

    def serve(self, take: Callable[[bool], list[StreamRequest] | None]) -> None:
        while True:
            new = take(True)
            if new is None:
                return
            if new:
                self.handed.append(len(new))
            for request in new:
                list(request.blocks)
                request.done(Transcript(segments=[], language="en", duration_s=0.0))


def arrive(batcher: Batcher, count: int, apart_s: float) -> None:
    """``count`` jobs reaching the batcher ``apart_s`` seconds apart, as a worker's threads do."""

    def job(i: int) -> None:
        time.sleep(i * apart_s)
        batcher.transcribe([np.zeros(160, np.float32)], TranscribeOptions(language="en"))

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(job, range(count)))


def test_files_arriving_a_few_milliseconds_apart_start_together() -> None:
    engine = RecordingEngine()
    batcher = Batcher(engine, max_files=8, gather_s=0.1, gather_max_s=2.0)
    arrive(batcher, 8, 0.02)  # 140 ms from the first to the last: more than gather_s, each gap less
    assert engine.handed == [8], f"8 files 20 ms apart should reach the idle engine in one step, got {engine.handed}"


def test_gathering_stops_at_gather_max_s_and_at_max_files() -> None:
    engine = RecordingEngine()
    batcher = Batcher(engine, max_files=8, gather_s=0.1, gather_max_s=0.15)
    arrive(batcher, 8, 0.04)  # 280 ms in all: gathering stops 150 ms after the first arrival
    assert len(engine.handed) >= 2 and engine.handed[0] < 8, (
        f"gathering must end gather_max_s after the first file, got hand-overs {engine.handed}"
    )
    engine = RecordingEngine()
    batcher = Batcher(engine, max_files=3, gather_s=0.5, gather_max_s=5.0)
    started = time.monotonic()
    arrive(batcher, 3, 0.0)
    assert engine.handed == [3] and time.monotonic() - started < 0.5, (
        f"with max_files files arrived the engine must start at once, got {engine.handed} "
        f"after {time.monotonic() - started:.2f} s"
    )


def test_a_lone_file_waits_only_gather_s() -> None:
    engine = RecordingEngine()
    batcher = Batcher(engine, max_files=8, gather_s=0.05, gather_max_s=5.0)
    started = time.monotonic()
    done = threading.Event()
    threading.Thread(target=lambda: (arrive(batcher, 1, 0.0), done.set()), daemon=True).start()
    assert done.wait(2.0), "a lone file must not wait for gather_max_s"
    assert time.monotonic() - started < 1.0
