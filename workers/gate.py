"""Who may run at once in one worker: ordinary jobs share the worker, an exclusive job (a benchmark
run) has it to itself.

An exclusive job waits until the running jobs end; while it waits or runs, no new job starts (writer
preference, so a busy queue cannot starve it). A job waiting at the gate when the worker is told to
stop raises ``WorkerStopping``: its message goes back to the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ovbatch.errors import WorkerStopping


class RunGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive jobs waiting: new shared jobs wait behind them

    @contextmanager
    def hold(self, exclusive: bool, stopping: Callable[[], bool] = lambda: False, what: str = "job") -> Iterator[None]:
        with self._cond:
            if exclusive:
                self._waiting += 1
                try:
                    self._wait(lambda: not self._exclusive and self._shared == 0, stopping, what)
                finally:
                    self._waiting -= 1
                self._exclusive = True
            else:
                self._wait(lambda: not self._exclusive and self._waiting == 0, stopping, what)
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool], stopping: Callable[[], bool], what: str) -> None:
        while not ready():
            if stopping():
                raise WorkerStopping(f"{what}: the worker is shutting down; the job goes back to its queue")
            self._cond.wait(timeout=1.0)

    @property
    def exclusive(self) -> bool:
        return self._exclusive
