"""The per-process model cache: compiled models kept between jobs, LRU-bounded by count and bytes.

Key: the model version's content digest (over its files' sha256), the device and the compile
options. A hit costs a dictionary lookup; a miss fetches, decrypts and compiles.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def content_digest(manifest: dict[str, Any]) -> str:
    """A model version's identity by content: same files, same digest, whatever its name."""
    files = sorted((f["role"], f["sha256"]) for f in manifest["files"])
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    digest: str
    device: str
    options: str  # canonical JSON of the compile options

    @classmethod
    def of(cls, manifest: dict[str, Any], device: str, options: dict[str, Any] | None = None) -> CacheKey:
        return cls(content_digest(manifest), device, json.dumps(options or {}, sort_keys=True))


@dataclass
class Entry:
    value: Any
    size_bytes: int
    label: str
    acquire_s: float


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass
class ModelCache:
    max_models: int
    max_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)
    _entries: OrderedDict[CacheKey, Entry] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get_or_load(self, key: CacheKey, label: str, load: Callable[[], tuple[Any, int]]) -> tuple[Any, bool]:
        """The cached value for ``key``, or ``load()``'s (value, size_bytes); returns (value, was_hit)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry.value, True
            self.stats.misses += 1
        t0 = time.perf_counter()
        value, size = load()
        with self._lock:
            self._entries[key] = Entry(value, size, label, time.perf_counter() - t0)
            self._entries.move_to_end(key)
            self._evict()
        return value, False

    def grow(self, key: CacheKey, extra_bytes: int) -> None:
        """A cached model took more memory after loading (the word-timestamp aligner compiles on first
        use): count it, as in use now, and evict older models if that goes over the budget."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.size_bytes += extra_bytes
            self._entries.move_to_end(key)
            self._evict()

    def _evict(self) -> None:
        # the newest entry always stays, even if it alone is over the byte budget
        while len(self._entries) > 1 and (len(self._entries) > self.max_models or self.total_bytes() > self.max_bytes):
            _, old = self._entries.popitem(last=False)
            self.stats.evictions += 1
            release = getattr(old.value, "release", None)
            if release is not None:
                release()

    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    def labels(self) -> list[str]:
        with self._lock:
            return [e.label for e in self._entries.values()]

    def describe(self) -> dict[str, Any]:
        return {
            "models": self.labels(),
            "bytes": self.total_bytes(),
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "evictions": self.stats.evictions,
        }
