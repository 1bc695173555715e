"""Pipelines handed to one thread at a time: a genai pipeline has one infer request per model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ovbatch.errors import ModelRetired


class PipelinePool:
    """Up to ``size`` pipelines, each built by ``build`` the first time all the others are busy."""

    def __init__(self, build: Callable[[], Any], size: int):
        if size < 1:
            raise ValueError(f"a pipeline pool holds at least 1 pipeline, not {size}")
        self.build, self.size = build, size
        self.idle: list[Any] = []
        self.built = 0
        self.busy = 0
        self.closed = False
        self.cond = threading.Condition()

    @contextmanager
    def pipeline(self) -> Iterator[Any]:
        pipe = self._acquire()
        try:
            yield pipe
        finally:
            with self.cond:
                self.busy -= 1
                if not self.closed:
                    self.idle.append(pipe)
                self.cond.notify_all()

    def _acquire(self) -> Any:
        with self.cond:
            while not self.closed and not self.idle and self.built >= self.size:
                self.cond.wait()
            if self.closed:
                raise ModelRetired("this image engine has been released; run the job again to reload the model")
            self.busy += 1
            if self.idle:
                return self.idle.pop()
            self.built += 1
        try:
            return self.build()  # outside the lock: compiling takes seconds, others may use idle pipelines
        except BaseException:
            with self.cond:
                self.built -= 1
                self.busy -= 1
                self.cond.notify_all()
            raise

    def close(self) -> None:
        """Hand out no more pipelines, drop the idle ones and wait until the busy ones are back."""
        with self.cond:
            self.closed = True
            self.idle.clear()
            self.cond.notify_all()
            while self.busy:
                self.cond.wait()
