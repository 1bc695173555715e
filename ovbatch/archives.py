"""Zip and tar archives as batch inputs: members listed and checked before anything is read,
then streamed one at a time, never extracted to disk.

A member whose path is absolute or climbs out with ``..``, one over ``max_member_bytes``, or one that
decompresses more than ``max_ratio`` times its stored size (a sparse tar member: its data) is refused
alone; an archive whose audio adds up to more than ``max_total_bytes`` is refused whole, and so is a
compressed tar whose listing would decompress more than ``max_ratio`` times the archive's size (found
from the headers, before that much is decompressed).
"""

from __future__ import annotations

import io
import lzma
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from ovbatch.errors import BadInputError

ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError)

AUDIO_EXTENSIONS = frozenset(
    ["wav", "flac", "ogg", "oga", "opus", "mp3", "m4a", "aac", "wma", "webm", "mp4", "mkv", "aiff", "aif", "au", "caf"]
)  # fmt: skip


def is_audio(name: str) -> bool:
    base = PurePosixPath(name).name
    if base.startswith("._") or "__MACOSX/" in name:
        return False
    return PurePosixPath(base).suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


def size_text(size_bytes: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size_bytes >= unit:
            return f"{size_bytes / unit:.1f} {name}"
    return f"{size_bytes} bytes"


def safe_relpath(name: str) -> str | None:
    """``name`` as a normalised relative posix path, or None if absolute or climbing out."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return None
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


@dataclass(frozen=True)
class ArchiveLimits:
    max_member_bytes: int = 4 << 30  # ~6 h of 48 kHz 16-bit stereo wav
    max_total_bytes: int = 64 << 30
    max_ratio: float = 100.0  # uncompressed / stored; audio barely compresses, bombs do ~1000:1
    ratio_min_bytes: int = 16 << 20  # smaller members may compress as well as they like
    max_members: int = 100_000


# --- archives ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str  # the safe relative path, or the raw name when ``problem`` is set
    size: int
    open: Callable[[], BinaryIO] | None  # None when ``problem`` is set
    problem: str | None = None


def _member_problem(name: str, size: int, stored: int | None, limits: ArchiveLimits) -> str | None:
    if safe_relpath(name) is None:
        return "unsafe member path (absolute, or with '..' parts); it is skipped"
    if size > limits.max_member_bytes:
        return f"member is {size_text(size)}, over the limit of {size_text(limits.max_member_bytes)}"
    if stored is not None and size > limits.ratio_min_bytes and size > limits.max_ratio * max(stored, 1):
        return f"member expands {size / max(stored, 1):.0f} times ({stored} -> {size} bytes): a decompression bomb?"
    return None


def _check_total(total: int, count: int, path: Path, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise BadInputError(f"{path.name}: over {limits.max_members} members; split the archive")
    if total > limits.max_total_bytes:
        limit = size_text(limits.max_total_bytes)
        raise BadInputError(f"{path.name}: its members add up to more than {limit}; split the archive")


def list_zip(path: Path, limits: ArchiveLimits) -> list[_Member]:
    archive = zipfile.ZipFile(path)  # kept open: members are read through it, from any thread
    try:
        return _zip_members(archive, path, limits)
    except BaseException:
        archive.close()
        raise


def _zip_members(archive: zipfile.ZipFile, path: Path, limits: ArchiveLimits) -> list[_Member]:
    _check_total(0, len(archive.infolist()), path, limits)
    members, total = [], 0
    for info in archive.infolist():
        if info.is_dir() or not is_audio(info.filename):
            continue
        problem = _member_problem(info.filename, info.file_size, info.compress_size, limits)
        if not problem and info.flag_bits & 0x1:
            problem = "member is encrypted"
        if problem:
            members.append(_Member(info.filename, info.file_size, None, problem))
            continue
        total += info.file_size
        _check_total(total, 0, path, limits)
        name = cast(str, safe_relpath(info.filename))
        members.append(_Member(name, info.file_size, partial(_open_zip_member, archive, info)))
    return members


def _open_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> BinaryIO:
    return cast(BinaryIO, archive.open(info))


def list_tar(path: Path, limits: ArchiveLimits) -> list[_Member]:
    compressed = not path.name.lower().endswith(".tar")
    stored = path.stat().st_size
    opener = _TarOpener(path)
    members, total, scanned, count = [], 0, 0, 0
    with tarfile.open(path) as archive:
        while (info := archive.next()) is not None:
            count += 1
            scanned += info.size if compressed else 0  # listing decompresses every member
            _check_total(max(total, scanned), count, path, limits)
            _check_ratio(scanned, stored, path, limits)  # before the next member is decompressed
            if info.isdir() or not is_audio(info.name):
                continue
            sparse = cast("list[tuple[int, int]] | None", info.sparse)  # (offset, size) of each data run
            data = sum(size for _offset, size in sparse) if sparse is not None else None
            problem = _member_problem(info.name, info.size, data, limits)
            if not problem and not info.isfile():
                problem = "member is a link or a special file, not a regular file"
            if problem:
                members.append(_Member(info.name, info.size, None, problem))
                continue
            total += info.size
            _check_total(total, count, path, limits)
            members.append(_Member(cast(str, safe_relpath(info.name)), info.size, partial(opener.open, info)))
    if compressed:
        _check_ratio(total, stored, path, limits)
    return members


def _check_ratio(size: int, stored: int, path: Path, limits: ArchiveLimits) -> None:
    if size > limits.ratio_min_bytes and size > limits.max_ratio * max(stored, 1):
        raise BadInputError(f"{path.name}: expands {size / max(stored, 1):.0f} times: a decompression bomb?")


class _TarOpener:
    """Opens members of one tar; keeps one handle, so reading members in order decompresses once."""

    def __init__(self, path: Path):
        self.path = path
        self._idle: tarfile.TarFile | None = None
        self._lock = threading.Lock()

    def open(self, info: tarfile.TarInfo) -> BinaryIO:
        with self._lock:
            archive, self._idle = self._idle, None
        archive = archive or tarfile.open(self.path)  # noqa: SIM115  # closed by _release
        try:
            stream = archive.extractfile(info)
        except BaseException:
            archive.close()
            raise
        if stream is None:
            archive.close()
            raise BadInputError(f"{self.path.name}::{info.name}: not a regular file")
        return cast(BinaryIO, _OnClose(stream, lambda: self._release(archive)))

    def _release(self, archive: tarfile.TarFile) -> None:
        with self._lock:
            if self._idle is None:
                self._idle = archive
                return
        archive.close()

    def __del__(self) -> None:
        if self._idle is not None:
            self._idle.close()


class _OnClose(io.RawIOBase):
    """A read-only view of ``inner`` that calls ``on_close`` once when closed."""

    def __init__(self, inner: Any, on_close: Callable[[], None]):
        self._inner = inner
        self._on_close: Callable[[], None] | None = on_close

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def close(self) -> None:
        if self._on_close is not None:
            self._inner.close()
            self._on_close()
            self._on_close = None
        super().close()
