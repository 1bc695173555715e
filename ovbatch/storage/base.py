"""The object storage interface every backend implements."""

from __future__ import annotations

import io
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

# Chunks of this size move between storage and the caller; a multi-GB object never sits in memory whole.
STREAM_CHUNK_BYTES = 8 << 20


def backoff_s(attempt: int, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    """The pause before retry ``attempt`` (1, 2, ...): exponential with full jitter, so that workers
    that failed together do not all come back together."""
    return random.uniform(0.0, min(cap_s, base_s * 2 ** (attempt - 1)))


class ObjectStore(ABC):
    """A flat key space of immutable-once-written blobs.

    Keys are ``/``-separated relative paths. Writes are atomic: a reader sees the old object,
    the new one or none, never a partial one.
    """

    url: str

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview]) -> int:
        """Write the concatenation of ``chunks`` under ``key``; return the byte count."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write a small object. With ``if_absent``, raise ``ObjectExists`` if the key is taken."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream over the whole object. Raises ``ObjectNotFound``."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from offset ``start`` (fewer at the end of the object)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes. Raises ``ObjectNotFound``."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in lexical order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()


class ChunkReader(io.RawIOBase):
    """A file-like view over an iterable of byte chunks (for libraries that want ``read``)."""

    def __init__(self, chunks: Iterable[bytes | memoryview]):
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks)).cast("B")
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.bytes_read += n
        return n


def validate_key(key: str) -> str:
    """Reject keys that could escape a backend's root or collide with its temp files."""
    from ovbatch.errors import StorageError

    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}: use a relative path without '..' or '//'")
    if any(p.startswith(".") and ".tmp-" in p for p in parts):
        raise StorageError(f"invalid storage key {key!r}: names like '.x.tmp-*' are reserved")
    return key
