"""Batching across jobs: one thread owns a model's engine; job threads hand it audio and wait.

A worker runs several jobs at once in threads (Celery's threads pool never forks, so OpenVINO stays
safe). The batcher thread feeds their files into one running ``WhisperEngine.serve`` call: every
decoder step carries windows of all open files, a file that arrives while others are being decoded
joins at the next step (a short file never waits behind an hour-long one), and each job gets its
transcript as soon as its own file is done. Files with different options (language, task, word
timestamps) share steps too. One file's bad audio fails that file alone: its error is caught
inside its own block stream, and the other files go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.errors import ModelRetired
from ovbatch.tasks.transcribe.engine import StreamRequest
from ovbatch.tasks.transcribe.types import TranscribeOptions, Transcript

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: requests hold audio arrays
class _Request:
    blocks: Iterable[np.ndarray]
    options: TranscribeOptions
    check: Callable[[], None] | None = None  # the job's stop conditions, asked before every step
    future: Future[Transcript] = field(default_factory=Future)
    error: BaseException | None = None

    def go_on(self) -> bool:
        """False once this file must stop (its stream failed, or its check raised: kept as its error)."""
        if self.error is None and self.check is not None:
            try:
                self.check()
            except Exception as exc:
                self.error = exc
        return self.error is None

    def guarded(self) -> Iterator[np.ndarray]:
        """The request's blocks; a decoding error ends this stream and is kept for this request only."""
        try:
            yield from self.blocks
        except Exception as exc:
            self.error = exc


class Batcher:
    def __init__(self, engine: Any, max_files: int = 8, gather_s: float = 0.05, gather_max_s: float = 0.5):
        self.engine = engine
        self.max_files = max_files  # files open in the engine at once (a worker runs as many jobs)
        # An idle engine waits for files arriving together: gather_s after each arrival, at most
        # gather_max_s after the first. Jobs reach the worker a few milliseconds apart (each thread
        # takes its message, checks its marker, opens its input); starting on the first few would
        # give a step of one or two short files, and the rest would wait for that whole step.
        self.gather_s = gather_s
        self.gather_max_s = gather_max_s
        self._queue: queue.Queue[_Request | Callable[[], None]] = queue.Queue()
        self._open: list[_Request] = []  # handed to the engine, transcript not yet given back
        self._then: Callable[[], None] | None = None  # retirement, run once the engine is idle
        self._gate = threading.Lock()
        self._retired = False
        threading.Thread(target=self._loop, name="ovbatch-batcher", daemon=True).start()

    def transcribe(
        self, blocks: Iterable[np.ndarray], options: TranscribeOptions, check: Callable[[], None] | None = None
    ) -> Transcript:
        """Called from job threads: same signature as the engine's, so jobs need not know. ``check``
        (the job's time limit, cancel, shutdown) is asked before every step; when it raises, this
        file stops at once with that error and the other files go on."""
        self.engine.check_options(options)  # a bad option fails this job here, not a shared step
        request = _Request(blocks, options, check)
        with self._gate:
            if self._retired:
                raise ModelRetired("the model was evicted from this worker's cache while the job started")
            self._queue.put(request)
        return request.future.result()

    def retire(self, then: Callable[[], None]) -> None:
        """Finish what is queued, then run ``then`` (wiping the weights) on the batcher's thread:
        evicting a model never pulls its memory from under a running step."""
        with self._gate:
            self._retired = True
            self._queue.put(then)

    def _loop(self) -> None:
        while True:
            try:
                self.engine.serve(self._take)
                return  # serve ends only after retirement
            except BaseException as exc:  # the engine itself failed: every file it held fails
                failed, self._open = self._open, []
                for request in failed:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _take(self, idle: bool) -> list[StreamRequest] | None:
        """New files for the engine: waits for the first one when the engine is idle, then gathers
        while files keep arriving (``gather_s`` apart, ``gather_max_s`` in all); never more than
        ``max_files`` open. None once retired."""
        if self._then is not None:
            if not idle:
                return []
            then, self._then = self._then, None
            try:
                then()
            except Exception:  # retired either way: nothing can be queued behind it
                log.exception("releasing an evicted model failed")
            return None
        taken: list[_Request] = []
        deadline = last = None
        while len(self._open) + len(taken) < self.max_files:
            try:
                if idle and not taken:
                    item = self._queue.get()
                    last = time.monotonic() + self.gather_max_s
                elif deadline is not None:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Request):
                self._then = item  # retirement comes after everything already queued
                break
            taken.append(item)
            if last is not None:  # gathering: each arrival gives the next one gather_s more
                deadline = min(time.monotonic() + self.gather_s, last)
        self._open.extend(taken)
        return [StreamRequest(r.guarded(), r.options, self._finisher(r), r.go_on) for r in taken]

    def _finisher(self, request: _Request) -> Callable[[Transcript], None]:
        def finish(transcript: Transcript) -> None:
            self._open.remove(request)
            if request.error is not None:
                request.future.set_exception(request.error)
            else:
                request.future.set_result(transcript)

        return finish
