"""Batching across jobs: one thread owns a model's engine; job threads hand it audio and wait.

A worker runs several jobs at once in threads (Celery's threads pool never forks, so OpenVINO stays
safe). Jobs that reach the batcher within ``gather_s`` of each other, with the same options, are
transcribed together: their 30 s windows share encoder and decoder calls, which is what makes
short files fast (benchmarks/RESULTS.md: 1.75x over one at a time). One file's bad audio fails that
file alone: its error is caught inside its own block stream, and the other files go on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.tasks.transcribe.types import TranscribeOptions, Transcript


@dataclass
class _Request:
    blocks: Iterable[np.ndarray]
    options: TranscribeOptions
    future: Future[Transcript] = field(default_factory=Future)
    error: BaseException | None = None

    def guarded(self) -> Iterator[np.ndarray]:
        """The request's blocks; a decoding error ends this stream and is kept for this request only."""
        try:
            yield from self.blocks
        except Exception as exc:
            self.error = exc


class ModelRetired(RuntimeError):
    """Raised when a job reaches a model the cache has just evicted; running the job again reloads it."""


class Batcher:
    def __init__(self, engine: Any, max_files: int = 8, gather_s: float = 0.05):
        self.engine = engine
        self.max_files = max_files
        self.gather_s = gather_s
        self._queue: queue.Queue[_Request | Callable[[], None]] = queue.Queue()
        self._held: list[_Request] = []  # taken from the queue but waiting for a group with their options
        self._gate = threading.Lock()
        self._retired = False
        threading.Thread(target=self._loop, name="ovbatch-batcher", daemon=True).start()

    def transcribe(self, blocks: Iterable[np.ndarray], options: TranscribeOptions) -> Transcript:
        """Called from job threads: same signature as the engine's, so jobs need not know."""
        request = _Request(blocks, options)
        with self._gate:
            if self._retired:
                raise ModelRetired("the model was evicted from this worker's cache while the job started")
            self._queue.put(request)
        return request.future.result()

    def retire(self, then: Callable[[], None]) -> None:
        """Finish what is queued, then run ``then`` (wiping the weights) on the batcher's thread:
        evicting a model never pulls its memory from under a running group."""
        with self._gate:
            self._retired = True
            self._queue.put(then)

    def _next_group(self) -> list[_Request] | Callable[[], None]:
        if self._held:
            first = self._held.pop(0)
        else:
            item = self._queue.get()
            if not isinstance(item, _Request):
                return item
            first = item
        group = [first]
        while len(group) < self.max_files:
            try:
                item = self._queue.get(timeout=self.gather_s)
            except queue.Empty:
                break
            if not isinstance(item, _Request):
                self._queue.put(item)  # retirement comes after everything already queued
                break
            (group if item.options == first.options else self._held).append(item)
        return group

    def _loop(self) -> None:
        while True:
            group = self._next_group()
            if not isinstance(group, list):
                if self._held:  # requests held for another options group still go first
                    self._queue.put(group)
                    continue
                group()
                return
            try:
                results = self.engine.transcribe_streams([r.guarded() for r in group], group[0].options)
            except BaseException as exc:  # the engine itself failed: every file of the group fails
                for request in group:
                    request.future.set_exception(exc)
                continue
            for request, result in zip(group, results, strict=True):
                if request.error is not None:
                    request.future.set_exception(request.error)
                else:
                    request.future.set_result(result)
