"""Workers advertise themselves in Redis: device, queue, cached models, jobs done.

Each worker refreshes ``ovbatch:worker:<hostname>`` every few seconds with a short expiry, so a
dead worker disappears from ``ovbatch workers`` on its own. The same beat keeps the running job's
lock alive.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

BEAT_S = 5
EXPIRE_S = 15


def worker_key(hostname: str) -> str:
    return f"ovbatch:worker:{hostname}"


def advertise(redis: Any, ctx: Any, queue: str, started_s: float) -> None:
    info = {
        "hostname": ctx.hostname,
        "device": ctx.device,
        "queue": queue,
        "pid": os.getpid(),
        "cpus": ctx.cpus,
        "cache": ctx.cache.describe(),
        "jobs_done": ctx.jobs_done,
        "current_job": ctx.current_job,
        "exclusive": ctx.gate.exclusive,  # a benchmark has the worker to itself now
        **ctx.device_info,  # full_name, capabilities (FP32, BF16, INT8...)
        "started_s": started_s,
        "seen_s": time.time(),
    }
    redis.set(worker_key(ctx.hostname), json.dumps(info), ex=EXPIRE_S)


class Beat:
    """Refreshes the advertisement every BEAT_S seconds, and at once when ``now()`` is called."""

    def __init__(self, redis: Any, ctx: Any, queue: str):
        self.redis, self.ctx, self.queue = redis, ctx, queue
        self.started_s = time.time()
        self._wake = threading.Event()
        self._stopped = False
        threading.Thread(target=self._run, name="ovbatch-presence", daemon=True).start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                advertise(self.redis, self.ctx, self.queue, self.started_s)
                self.ctx.refresh_lock()
            except Exception:  # Redis blips must not kill the worker; the next beat retries
                pass
            self._wake.wait(BEAT_S)
            self._wake.clear()

    def now(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()


def live_workers(redis: Any) -> list[dict[str, Any]]:
    found = []
    for key in redis.scan_iter(match="ovbatch:worker:*", count=100):
        raw = redis.get(key)
        if raw:
            found.append(json.loads(raw))
    return sorted(found, key=lambda w: (w["device"], w["hostname"]))
