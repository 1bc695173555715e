"""A process's peak resident memory over a block of work (a compile, a quantization job).

Linux keeps the peak (``VmHWM`` in /proc/self/status); writing 5 to /proc/self/clear_refs resets it
to the current RSS, so the peak read afterwards belongs to the block. Where that file cannot be
written (some sandboxes), the RSS is sampled every 0.2 s instead and the peak is the largest sample.
"""

from __future__ import annotations

import os
import threading


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """``with PeakRss() as rss: ...`` then ``rss.peak`` (MiB, the block's peak) and ``rss.before``."""

    def __init__(self, sample_s: float = 0.2) -> None:
        self.before = self.peak = rss_mib()
        self._sample_s = sample_s
        self._exact = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ovbatch-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._sample_s):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self) -> PeakRss:
        self.before = self.peak = rss_mib()
        self._exact = _reset_hwm()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        hwm = _hwm_mib() if self._exact else None
        if hwm is not None:
            self.peak = max(self.peak, hwm)
