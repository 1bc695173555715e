"""An ``ov.Model`` to IR bytes without a plaintext file: OpenVINO serializes only to paths.

OpenVINO's serializer insists on a path ending in ``.xml``, so the paths are two symlinks, in a
private (0700) temporary folder (in ``/dev/shm``, RAM, where there is one), to anonymous memory
files (``memfd_create``): the bytes go to RAM through ``/proc/self/fd/N``; at most two links touch
a file system, and they are removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, at = [], 0
    while at < size:
        chunk = os.pread(fd, min(size - at, 1 << 26), at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


def _link_dir() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else tempfile.gettempdir()


def serialize(model: Any) -> tuple[bytes, bytes]:
    """``(xml, bin)`` of ``model``, weights as they are (no fp16 compression)."""
    import openvino as ov

    xml_fd = os.memfd_create("ovbatch-xml", os.MFD_CLOEXEC)
    bin_fd = os.memfd_create("ovbatch-bin", os.MFD_CLOEXEC)
    try:
        with tempfile.TemporaryDirectory(prefix="ovbatch-ser-", dir=_link_dir()) as tmp:
            xml_link, bin_link = Path(tmp) / "model.xml", Path(tmp) / "model.bin"
            os.symlink(f"/proc/{os.getpid()}/fd/{xml_fd}", xml_link)
            os.symlink(f"/proc/{os.getpid()}/fd/{bin_fd}", bin_link)
            ov.serialize(model, str(xml_link), str(bin_link))
        return _read_all(xml_fd), _read_all(bin_fd)
    finally:
        os.close(xml_fd)
        os.close(bin_fd)
