"""Streaming authenticated encryption of one file: AES-256-GCM in chunks, STREAM-style.

Format (docs/ENCRYPTION.md has the reasoning):

    header (32 B) = b"OVBE" | version u8 (1) | chunk_log2 u8 | reserved u16 (0)
                    | salt (16 B) | nonce_prefix (7 B) | reserved u8 (0)
    chunk i      = AES-256-GCM(file_key, nonce_prefix | u32be(i) | final u8, plaintext_i, aad=header)

``file_key = HKDF-SHA256(data_key, salt, info="ovbatch/stream/v1" | model | version | role)``,
so a chunk, a file or a whole object moved to another model, version or role fails to open.
Every chunk but the last holds exactly ``2**chunk_log2`` plaintext bytes; the last one carries the
final flag, so truncation at a chunk boundary is caught too.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ovbatch.errors import IntegrityError

MAGIC = b"OVBE"
FORMAT_VERSION = 1
HEADER_BYTES = 32
TAG_BYTES = 16
DEFAULT_CHUNK_LOG2 = 20  # 1 MiB: big enough that per-call overhead vanishes, small enough to stream
_HEADER = struct.Struct(">4sBBH16s7sB")


@dataclass(frozen=True)
class FileContext:
    """What a ciphertext file belongs to; bound into its key so files cannot be swapped."""

    model: str
    version: str
    role: str

    def info(self) -> bytes:
        return b"\0".join([b"ovbatch/stream/v1", self.model.encode(), self.version.encode(), self.role.encode()])

    def __str__(self) -> str:
        return f"{self.model}@{self.version} file {self.role!r}"


def _file_key(data_key: bytes, salt: bytes, ctx: FileContext) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=ctx.info())
    return AESGCM(hkdf.derive(data_key))


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if final else 0)


def ciphertext_size(plaintext_bytes: int, chunk_log2: int = DEFAULT_CHUNK_LOG2) -> int:
    chunk = 1 << chunk_log2
    chunks = max(1, -(-plaintext_bytes // chunk))
    return HEADER_BYTES + plaintext_bytes + chunks * TAG_BYTES


def encrypt_chunks(
    data_key: bytes,
    ctx: FileContext,
    plaintext: BinaryIO,
    chunk_log2: int = DEFAULT_CHUNK_LOG2,
    observe: Callable[[bytes], None] | None = None,
) -> Iterator[bytes]:
    """Yield the header, then each sealed chunk of ``plaintext``; ``observe`` sees each plaintext chunk."""
    salt, prefix = os.urandom(16), os.urandom(7)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, chunk_log2, 0, salt, prefix, 0)
    aead = _file_key(data_key, salt, ctx)
    chunk_bytes = 1 << chunk_log2
    yield header
    current = plaintext.read(chunk_bytes)
    counter = 0
    while True:
        following = plaintext.read(chunk_bytes) if len(current) == chunk_bytes else b""
        final = not following
        if observe:
            observe(current)
        yield aead.encrypt(_nonce(prefix, counter, final), current, header)
        if final:
            return
        current, counter = following, counter + 1


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends; return the byte count.

    ``readinto`` into a reused buffer avoids allocating and copying a bytes object per chunk,
    which costs more than AES-GCM itself on these CPUs.
    """
    readinto = getattr(stream, "readinto", None)
    got = 0
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            part = stream.read(len(view) - got)
            n = len(part)
            view[got : got + n] = part
        if not n:
            break
        got += n
    return got


_EMPTY = memoryview(b"")


def _sealed_chunks(stream: BinaryIO, sealed_bytes: int) -> Iterator[memoryview]:
    """The stream's remaining bytes in ``sealed_bytes`` pieces (the last may be short or empty).

    A local file is memory-mapped, so chunks are views of the page cache with no copy at all.
    Other streams are read into two alternating buffers: each view stays valid until two more
    have been taken, which is all the one-chunk lookahead needs.
    """
    try:
        fileno = stream.fileno()
        position = stream.tell()
        mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) if os.fstat(fileno).st_size else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        mapped = None
    if mapped is not None:
        # no explicit close: the caller may still hold the last views; the map goes with them
        view = memoryview(mapped)
        # up to len + 1: a full last chunk is followed by an empty one, as with the buffered reader
        for start in range(position, len(view) + 1, sealed_bytes):
            yield view[start : start + sealed_bytes]
        return
    buffers = (memoryview(bytearray(sealed_bytes)), memoryview(bytearray(sealed_bytes)))
    turn = 0
    while True:
        buf = buffers[turn]
        turn ^= 1
        n = _fill(stream, buf)
        yield buf[:n]
        if n < sealed_bytes:
            return


def decrypt_into(
    data_key: bytes,
    ctx: FileContext,
    ciphertext: BinaryIO,
    out: memoryview,
    timer: Callable[[str, float], None] | None = None,
) -> int:
    """Authenticate and decrypt ``ciphertext`` straight into ``out``; return the plaintext size.

    ``out`` must be exactly the plaintext size (the manifest's). On any failure ``out`` is zeroed
    before ``IntegrityError`` is raised, so unverified plaintext never outlives the call.
    ``timer(phase, seconds)`` receives the time spent in "fetch" (reading) and "decrypt".
    """
    clock = time.perf_counter
    t0 = clock()
    header = _read_exact(ciphertext, HEADER_BYTES)
    fetch_s = clock() - t0
    decrypt_s = 0.0
    if len(header) != HEADER_BYTES:
        raise IntegrityError(f"{ctx}: ciphertext shorter than its header (truncated or empty)")
    magic, version, chunk_log2, _r1, salt, prefix, _r2 = _HEADER.unpack(header)
    if magic != MAGIC or version != FORMAT_VERSION or not 12 <= chunk_log2 <= 30:
        raise IntegrityError(f"{ctx}: not an ovbatch ciphertext (bad magic/version in header)")
    aead = _file_key(data_key, salt, ctx)
    sealed_bytes = (1 << chunk_log2) + TAG_BYTES
    chunks = _sealed_chunks(ciphertext, sealed_bytes)
    written = 0
    counter = 0
    try:
        t0 = clock()
        current = next(chunks)
        while True:
            # read one chunk ahead: only the last chunk may carry the final flag
            following = next(chunks) if len(current) == sealed_bytes else _EMPTY
            t1 = clock()
            fetch_s += t1 - t0
            final = not following
            size = len(current) - TAG_BYTES
            if size < 0 or written + size > len(out):
                raise IntegrityError(f"{ctx}: ciphertext size does not match the manifest (tampered)")
            try:
                aead.decrypt_into(_nonce(prefix, counter, final), current, header, out[written : written + size])
            except InvalidTag:
                raise IntegrityError(
                    f"{ctx}: authentication failed at chunk {counter} (tampered, truncated, "
                    "reordered, swapped from another model/version/role, or wrong key)"
                ) from None
            t0 = clock()
            decrypt_s += t0 - t1
            written += size
            if final:
                break
            current, counter = following, counter + 1
        if written != len(out):
            raise IntegrityError(f"{ctx}: decrypted {written} bytes but the manifest says {len(out)} (truncated)")
    except BaseException:
        wipe(out)
        raise
    finally:
        if timer:
            timer("fetch", fetch_s)
            timer("decrypt", decrypt_s)
    return written


def decrypt_bytes(data_key: bytes, ctx: FileContext, ciphertext: BinaryIO, size: int) -> bytearray:
    """Decrypt a small file (configs, XML) into a new buffer."""
    buf = bytearray(size)
    decrypt_into(data_key, ctx, ciphertext, memoryview(buf))
    return buf


def wipe(buf: memoryview) -> None:
    """Zero a writable buffer in place, without allocating a second one of its size."""
    np.frombuffer(buf, dtype=np.uint8)[:] = 0
