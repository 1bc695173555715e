"""``file://DIR`` backend: one file per object, written to a temp file and renamed into place.

A transient error of the file system (EIO, EAGAIN, ESTALE on NFS, a timeout or a reset of a network
mount) is retried with backoff, then raised as a ``TransientStorageError``; a streamed write cannot be
replayed, so it fails at once, as one. A full disk or quota is a ``StorageFullError`` naming the path.
A failed write leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from ovbatch.errors import (
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFullError,
    TransientStorageError,
)
from ovbatch.storage.base import ObjectStore, backoff_s, validate_key

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 4
TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE, errno.ECONNRESET, errno.ECONNABORTED}
)
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class FileStore(ObjectStore):
    def __init__(self, root: Path, *, max_attempts: int = MAX_ATTEMPTS):
        self.root = root.absolute()
        self.url = self.root.as_uri()
        self.max_attempts = max_attempts

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _failure(self, exc: OSError, action: str, path: Path, attempts: int | None = None) -> StorageError:
        """The storage error for ``exc``; ``attempts`` None: a streamed write, which is not retried."""
        where = f"{path} in storage {self.url}"
        if exc.errno in FULL_ERRNOS:
            return StorageFullError(
                f"cannot {action} {where}: no space left ({exc.strerror}); nothing was kept, "
                "free some space and run it again"
            )
        if exc.errno in TRANSIENT_ERRNOS:
            tried = "a streamed write is not retried" if attempts is None else f"gave up after {attempts} attempts"
            return TransientStorageError(f"cannot {action} {where}: {exc.strerror} ({tried})")
        return StorageError(f"cannot {action} {where}: {exc}")

    def _retrying(self, action: str, path: Path, op: Callable[[], T], passthrough: tuple[type[OSError], ...] = ()) -> T:
        """``op()``, again after a backoff while it fails with a transient errno; other errors become
        storage errors at once, except ``FileNotFoundError`` and ``passthrough``, left to the caller."""
        attempt = 1
        while True:
            try:
                return op()
            except FileNotFoundError:
                raise
            except passthrough:
                raise
            except OSError as exc:
                if exc.errno not in TRANSIENT_ERRNOS or attempt >= self.max_attempts:
                    raise self._failure(exc, action, path, attempt) from exc
                log.warning("cannot %s %s (%s); trying again", action, path, exc.strerror)
                time.sleep(backoff_s(attempt))
                attempt += 1

    def _mkdir(self, folder: Path) -> None:
        try:
            self._retrying("create", folder, lambda: folder.mkdir(parents=True, exist_ok=True))
        except OSError as exc:  # a file where a folder should be
            raise StorageError(f"cannot create {folder} in storage {self.url}: {exc}") from exc

    def _write(self, path: Path, chunks: Iterable[bytes | memoryview], publish: Callable[[Path, Path], None]) -> int:
        """Write ``chunks`` to a temp file beside ``path``, fsync it and ``publish`` it (rename: atomic
        on POSIX, readers see the old file or the new one; link: fails if the name exists). Whatever
        happens, the temp name is gone afterwards."""
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        written = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    written += out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            publish(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return written

    def _fsync_dir(self, path: Path) -> None:
        def sync() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        self._retrying("sync", path, sync)

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview]) -> int:
        path = self._path(key)
        self._mkdir(path.parent)
        try:
            written = self._write(path, chunks, os.replace)
        except OSError as exc:
            raise self._failure(exc, "write", path) from exc
        self._fsync_dir(path.parent)
        return written

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        self._mkdir(path.parent)
        publish = os.link if if_absent else os.replace  # link() fails if the name exists: a create-only write
        try:
            self._retrying("write", path, lambda: self._write(path, [data], publish), (FileExistsError,))
        except FileExistsError:
            raise ObjectExists(f"{key} already exists in storage {self.url}") from None
        except FileNotFoundError as exc:  # the folder was removed under the write
            raise self._failure(exc, "write", path) from exc
        self._fsync_dir(path.parent)

    def _reading(self, key: str, op: Callable[[Path], T]) -> T:
        path = self._path(key)
        try:
            return self._retrying("read", path, lambda: op(path))
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in storage {self.url}") from None

    def open(self, key: str) -> BinaryIO:
        return self._reading(key, lambda path: open(path, "rb"))

    def get_bytes(self, key: str) -> bytes:
        return self._reading(key, Path.read_bytes)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        def read(path: Path) -> bytes:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(length)

        return self._reading(key, read)

    def size(self, key: str) -> int:
        return self._reading(key, lambda path: path.stat().st_size)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return stat.S_ISREG(self._retrying("stat", path, path.stat, (NotADirectoryError,)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def list(self, prefix: str = "") -> Iterator[str]:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"storage {self.url} is not a directory")
        yield from self._retrying("list", self.root, lambda: _keys(self.root, prefix))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            self._retrying("delete", path, path.unlink)
        # prune now-empty parent folders up to the root so listings stay tidy
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _keys(root: Path, prefix: str) -> list[str]:
    """The keys under ``root`` starting with ``prefix``, sorted; unfinished writes are invisible."""

    def failed(exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):  # a folder removed while listing is no error
            raise exc

    keys = []
    for dirpath, _dirs, files in os.walk(root, onerror=failed):
        rel = Path(dirpath).relative_to(root)
        for name in files:
            if name.startswith(".") and ".tmp-" in name:
                continue  # an unfinished write
            key = (rel / name).as_posix() if rel.parts else name
            if key.startswith(prefix):
                keys.append(key)
    return sorted(keys)
