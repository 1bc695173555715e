"""The machine a benchmark ran on, and whether it was otherwise busy while it measured.

The load average is reported (before and after), but it lags by a minute and counts the worker's own
work just finished, so "busy" is decided from what others did during the run: the CPU time spent on
the run's own cores (``/proc/stat`` per CPU) minus this process's CPU time, over the run's wall time
(``OtherCpu``). Hypervisor steal on those cores is reported apart.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(device: str, device_info: dict[str, Any]) -> dict[str, Any]:
    import openvino as ov

    affinity = sorted(os.sched_getaffinity(0))
    return {
        "hostname": socket.gethostname(),
        "worker": f"{socket.gethostname()} pid {os.getpid()}",
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity": affinity,
        "pinned_cpus": len(affinity),
        "os": platform.platform(),
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "device": device,
        "device_name": device_info.get("full_name"),
        "device_capabilities": device_info.get("capabilities"),
    }


BUSY_CORES = 0.25  # others kept a quarter of a core busy on average on the run's cores: the run was shared


def _cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy ticks, steal ticks) summed over ``cpus`` since boot."""
    busy = steal = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *values = line.split()
                if int(name[3:]) in cpus:
                    v = [int(x) for x in values]
                    busy += v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
                    steal += v[7] if len(v) > 7 else 0
    except (OSError, ValueError):
        pass
    return busy, steal


class OtherCpu:
    """``with OtherCpu() as other: ...`` then ``other.report()``: what other processes used of this
    process's cores while the block ran (cores on average), and the hypervisor's steal."""

    def __init__(self) -> None:
        self.cpus = set(os.sched_getaffinity(0))
        self._start = (0, 0, 0.0, 0.0)
        self.others_cores = self.steal_cores = 0.0

    def __enter__(self) -> OtherCpu:
        busy, steal = _cpu_ticks(self.cpus)
        self._start = (busy, steal, time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *_: object) -> None:
        busy, steal = _cpu_ticks(self.cpus)
        busy0, steal0, own0, wall0 = self._start
        wall = max(time.perf_counter() - wall0, 1e-6)
        tick = os.sysconf("SC_CLK_TCK")
        own = time.process_time() - own0  # all threads of this process, wherever they ran
        self.others_cores = max(0.0, ((busy - busy0) / tick - own) / wall)
        self.steal_cores = (steal - steal0) / tick / wall

    def report(self) -> dict[str, Any]:
        return {
            "other_cpu_cores": round(self.others_cores, 3),
            "steal_cpu_cores": round(self.steal_cores, 3),
            "busy": self.others_cores > BUSY_CORES,
        }
