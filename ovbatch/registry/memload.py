"""Extension libraries loaded from memory: decrypted into a sealed ``memfd``, ``dlopen``ed through
``/proc/self/fd/N``, never written to a disk.

``Core.add_extension(path)`` dlopens the path; a memfd's ``/proc/self/fd/N`` is a path dlopen takes,
and its bytes live in RAM only (like anonymous memory: swap aside). Each library is loaded once per
process, keyed by its plaintext sha256: the memfd stays open for the process's life, so every Core
that adds it gets the same loaded object (glibc finds it by device and inode).

A version whose models need libraries is read by a Core of its own that holds exactly those
(``reader``), one per set of libraries, kept for the process's life: a Core keeps the first
definition of an op type it learns, so two versions carrying different builds of one library must not
share one. What it reads compiles on any Core: the nodes carry their library's code.

GPU custom kernels cannot be loaded this way (``extensions.gpu_blocker``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from typing import Any, Protocol

import numpy as np

from ovbatch.errors import CorruptModelError, DeviceError, IntegrityError
from ovbatch.registry import extensions

MFD_EXEC = 0x0010  # Linux 6.3+: executable on kernels whose vm.memfd_noexec defaults memfds to noexec
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class Version(Protocol):
    """What the loader's ``DecryptedVersion`` gives: the manifest and the plaintext by role."""

    manifest: dict[str, Any]
    buffers: dict[str, np.ndarray]


class MemoryLibrary:
    """A library's bytes in a sealed memfd: nothing can change them after they were checked."""

    def __init__(self, name: str, data: memoryview) -> None:
        self.fd = _memfd(f"ovbatch-ext:{name}")
        try:
            view, written = data.cast("B"), 0
            while written < len(view):
                written += os.write(self.fd, view[written:])
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, SEALS)
        except BaseException:
            os.close(self.fd)
            raise
        self.path = f"/proc/self/fd/{self.fd}"


def _memfd(name: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create(name, flags | MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EACCES: vm.memfd_noexec=2 forbids executable memfds
            raise DeviceError(f"cannot make an executable memfd for {name} ({exc}): see vm.memfd_noexec") from exc
        return os.memfd_create(name, flags)  # a kernel before 6.3: every memfd may be executed


_lock = threading.Lock()
_libraries: dict[str, MemoryLibrary] = {}  # plaintext sha256 -> its memfd, for the process's life
_readers: dict[frozenset[str], Any] = {}  # set of library digests -> the Core that holds them


def loaded_libraries() -> dict[str, str]:
    """sha256 -> ``/proc/self/fd/N`` of each library this process loaded from memory."""
    with _lock:
        return {digest: lib.path for digest, lib in _libraries.items()}


def _library(version: Version, role: str, digest: str) -> MemoryLibrary:
    """The memfd of one library of ``version`` (made now from its plaintext, or the one made before)."""
    known = _libraries.get(digest)
    if known is not None:
        return known
    buf = version.buffers.get(role)
    if buf is None:
        raise RuntimeError(f"{_label(version)}: extension library {role} was not decrypted with its models")
    if hashlib.sha256(buf.data).hexdigest() != digest:
        raise IntegrityError(f"{_label(version)} file {role!r}: plaintext sha256 differs from the manifest")
    _libraries[digest] = MemoryLibrary(role.rsplit("/", 1)[-1], buf.data)
    return _libraries[digest]


def reader(version: Version) -> Any | None:
    """The Core that reads ``version``'s models with its extension libraries loaded from memory, or
    None when it carries none."""
    roles = extensions.library_roles(version.manifest)
    if not roles:
        return None
    digests = {f["role"]: str(f["sha256"]) for f in version.manifest["files"]}
    key = frozenset(digests[r] for r in roles)
    with _lock:
        core = _readers.get(key)
        if core is not None:
            return core
        from ovbatch.ov import make_core

        core = make_core()
        for role in roles:
            library = _library(version, role, digests[role])
            try:
                core.add_extension(library.path)
            except Exception as exc:
                raise CorruptModelError(
                    f"{_label(version)} file {role!r} is not an extension library this OpenVINO can load "
                    f"here: {extensions.error_line(exc)}"
                ) from exc
        _readers[key] = core
        return core


def check_device(manifest: dict[str, Any], device: str) -> None:
    """Refuse a device this version cannot run on from memory (``extensions.gpu_blocker``)."""
    blocker = extensions.gpu_blocker(manifest, device)
    if blocker is not None:
        raise DeviceError(blocker)


def _label(version: Version) -> str:
    return f"{version.manifest['name']}@{version.manifest['version']}"
