"""The machine a benchmark ran on, and whether it was otherwise busy (load average before/after)."""

from __future__ import annotations

import os
import platform
import socket
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


def busy(before: list[float], cpus: int) -> bool:
    """Otherwise busy: the 1-minute load before the run (the benchmark itself not yet running)
    already kept a quarter of the CPUs, or one CPU, busy."""
    return before[0] > max(1.0, cpus / 4)
