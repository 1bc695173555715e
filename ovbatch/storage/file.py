"""``file://DIR`` backend: one file per object, written to a temp file and renamed into place."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ovbatch.errors import ObjectExists, ObjectNotFound, StorageError
from ovbatch.storage.base import ObjectStore, validate_key


class FileStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root.absolute()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write_temp(self, path: Path, chunks: Iterable[bytes | memoryview]) -> tuple[Path, int]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path.parent} in storage {self.url}: {exc}") from exc
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        written = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    written += out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {path} in storage {self.url}: {exc}") from exc
            raise
        return tmp, written

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview]) -> int:
        path = self._path(key)
        tmp, written = self._write_temp(path, chunks)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
        self._fsync_dir(path.parent)
        return written

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if not if_absent:
            self.put_stream(key, [data])
            return
        path = self._path(key)
        tmp, _ = self._write_temp(path, [data])
        try:
            os.link(tmp, path)  # link() fails if the name exists: an atomic create-only write
        except FileExistsError:
            raise ObjectExists(f"{key} already exists in storage {self.url}") from None
        finally:
            tmp.unlink()
        self._fsync_dir(path.parent)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in storage {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} from storage {self.url}: {exc}") from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as f:
            f.seek(start)
            return f.read(length)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in storage {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"storage {self.url} is not a directory")
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if name.startswith(".") and ".tmp-" in name:
                    continue  # an unfinished write, invisible to readers
                key = (rel / name).as_posix() if rel.parts else name
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # prune now-empty parent folders up to the root so listings stay tidy
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
