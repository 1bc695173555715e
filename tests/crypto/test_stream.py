"""The streaming AEAD: round trips, and every tampering it must catch before anyone sees a byte."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from ovbatch.crypto.stream import HEADER_BYTES, TAG_BYTES, FileContext, ciphertext_size, decrypt_into, encrypt_chunks
from ovbatch.errors import IntegrityError

LOG2 = 12  # 4 KiB chunks keep exhaustive tests fast
CHUNK = 1 << LOG2
KEY = bytes(range(32))
CTX = FileContext("whisper-base", "3", "openvino_encoder_model.bin")


def seal(data: bytes, key: bytes = KEY, ctx: FileContext = CTX) -> bytes:
    return b"".join(encrypt_chunks(key, ctx, io.BytesIO(data), chunk_log2=LOG2))


def open_(blob: bytes, size: int, key: bytes = KEY, ctx: FileContext = CTX) -> bytes:
    out = bytearray(size)
    decrypt_into(key, ctx, io.BytesIO(blob), memoryview(out))
    return bytes(out)


SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    blob = seal(data)
    assert len(blob) == ciphertext_size(size, LOG2)
    assert open_(blob, size) == data


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_from_a_memory_mapped_file(size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob.enc"
    path.write_bytes(seal(data))
    out = bytearray(size)
    with open(path, "rb") as f:
        assert decrypt_into(KEY, CTX, f, memoryview(out)) == size
    assert out == data


def test_tampered_memory_mapped_file_is_caught(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK)
    blob = bytearray(seal(data))
    blob[HEADER_BYTES + CHUNK + TAG_BYTES + 3] ^= 1
    path = tmp_path / "blob.enc"
    path.write_bytes(bytes(blob))
    with open(path, "rb") as f, pytest.raises(IntegrityError, match="chunk 1"):
        decrypt_into(KEY, CTX, f, memoryview(bytearray(len(data))))
    path.write_bytes(seal(data)[: HEADER_BYTES + CHUNK + TAG_BYTES])  # truncated at a chunk boundary
    with open(path, "rb") as f, pytest.raises(IntegrityError, match="chunk 0"):
        decrypt_into(KEY, CTX, f, memoryview(bytearray(CHUNK)))


def test_ciphertext_reveals_nothing_of_the_plaintext() -> None:
    data = b"A" * (4 * CHUNK)
    blob = seal(data)
    assert b"AAAAAAAA" not in blob
    assert seal(data) != blob, "a fresh salt and nonce prefix per file: same plaintext, new ciphertext"


def test_every_single_flipped_byte_is_caught() -> None:
    data = os.urandom(2 * CHUNK + 100)
    blob = seal(data)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            open_(bytes(bad), len(data))


@pytest.mark.parametrize("chunks_kept", [0, 1, 2])
def test_truncation_at_a_chunk_boundary_is_caught(chunks_kept: int) -> None:
    data = os.urandom(3 * CHUNK)
    blob = seal(data)
    cut = HEADER_BYTES + chunks_kept * (CHUNK + TAG_BYTES)
    with pytest.raises(IntegrityError):
        open_(blob[:cut], chunks_kept * CHUNK)  # even with the manifest size forged to match


def test_reordered_chunks_are_caught() -> None:
    data = os.urandom(3 * CHUNK)
    blob = seal(data)
    sealed = CHUNK + TAG_BYTES
    c = [blob[HEADER_BYTES + i * sealed : HEADER_BYTES + (i + 1) * sealed] for i in range(3)]
    with pytest.raises(IntegrityError, match="chunk 0"):
        open_(blob[:HEADER_BYTES] + c[1] + c[0] + c[2], len(data))


def test_appended_chunk_is_caught() -> None:
    data = os.urandom(2 * CHUNK)
    blob = seal(data)
    with pytest.raises(IntegrityError):
        open_(blob + blob[HEADER_BYTES : HEADER_BYTES + CHUNK + TAG_BYTES], 3 * CHUNK)


@pytest.mark.parametrize(
    "other",
    [
        FileContext("whisper-small", "3", "openvino_encoder_model.bin"),  # another model
        FileContext("whisper-base", "4", "openvino_encoder_model.bin"),  # another version
        FileContext("whisper-base", "3", "openvino_decoder_model.bin"),  # another role
    ],
)
def test_file_swapped_between_models_versions_or_roles_is_caught(other: FileContext) -> None:
    data = os.urandom(CHUNK + 5)
    with pytest.raises(IntegrityError, match="whisper-base@3 file 'openvino_encoder_model.bin'"):
        open_(seal(data, ctx=other), len(data))


def test_wrong_key_is_caught() -> None:
    data = os.urandom(100)
    with pytest.raises(IntegrityError):
        open_(seal(data), len(data), key=bytes(32))


def test_size_mismatch_with_manifest_is_caught() -> None:
    data = os.urandom(CHUNK + 1)
    with pytest.raises(IntegrityError, match="manifest"):
        open_(seal(data), CHUNK + 2)
    with pytest.raises(IntegrityError, match="manifest"):
        open_(seal(data), CHUNK)


def test_buffer_is_zeroed_when_authentication_fails() -> None:
    data = b"\x7f" * (3 * CHUNK)
    blob = bytearray(seal(data))
    blob[-1] ^= 0xFF  # the last chunk fails after the first two decrypted fine
    out = np.full(len(data), 0x55, dtype=np.uint8)
    with pytest.raises(IntegrityError, match="chunk 2"):
        decrypt_into(KEY, CTX, io.BytesIO(bytes(blob)), memoryview(out))
    assert not out.any(), "unverified plaintext left in the buffer after a failed tag check"


def test_not_a_ciphertext() -> None:
    with pytest.raises(IntegrityError, match="bad magic"):
        open_(b"\0" * 100, 10)
    with pytest.raises(IntegrityError, match="shorter than its header"):
        open_(b"OVBE", 10)
