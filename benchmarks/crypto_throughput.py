"""Decryption throughput on one core, against a plain read of the same bytes from the same storage.

    .venv/bin/python benchmarks/crypto_throughput.py [--mib 512] [--repeats 5]

Writes one encrypted object to a file:// store in a temp dir (page cache warm for both readers),
then alternates: (a) plain read of the ciphertext object into a preallocated buffer, chunk by
chunk through the storage interface; (b) authenticated decryption of the same object straight
into a preallocated buffer (what model loading does). Pinned to one CPU core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ovbatch.crypto.stream import DEFAULT_CHUNK_LOG2, TAG_BYTES, FileContext, decrypt_into, encrypt_chunks
from ovbatch.storage.file import FileStore


def plain_read(store: FileStore, key: str, out: np.ndarray) -> None:
    view, pos = out.data, 0
    step = (1 << DEFAULT_CHUNK_LOG2) + TAG_BYTES
    with store.open(key) as stream:
        while n := stream.readinto(view[pos : pos + step]):  # type: ignore[attr-defined]
            pos += n


def aead_only(key: bytes) -> float:
    """AES-256-GCM alone: one 1 MiB chunk decrypted 256 times into the same buffer (cache-hot)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce, chunk = AESGCM(key), os.urandom(12), os.urandom(1 << 20)
    sealed, out = aead.encrypt(nonce, chunk, b""), bytearray(1 << 20)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(256):
            aead.decrypt_into(nonce, sealed, b"", out)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    size = args.mib << 20
    key, ctx = os.urandom(32), FileContext("bench", "1", "weights.bin")
    with tempfile.TemporaryDirectory(prefix="ovbatch-bench-") as tmp:
        store = FileStore(Path(tmp))
        plaintext = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
        import io

        store.put_stream("obj.enc", encrypt_chunks(key, ctx, io.BytesIO(plaintext.tobytes())))
        cipher_bytes = store.size("obj.enc")
        read_buf = np.empty(cipher_bytes, dtype=np.uint8)
        out = np.empty(size, dtype=np.uint8)
        plain_read(store, "obj.enc", read_buf)  # warm the page cache
        read_s, dec_s = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain_read(store, "obj.enc", read_buf)
            t1 = time.perf_counter()
            with store.open("obj.enc") as stream:
                decrypt_into(key, ctx, stream, out.data)
            t2 = time.perf_counter()
            read_s.append(t1 - t0)
            dec_s.append(t2 - t1)
        assert np.array_equal(out, plaintext), "decryption returned wrong bytes"
    aead_s = aead_only(key)
    gbs = lambda secs: size / statistics.median(secs) / 1e9  # noqa: E731
    result = {
        "bytes": size,
        "plain_read_GBps": round(gbs(read_s), 2),
        "read_and_decrypt_GBps": round(gbs(dec_s), 2),
        "aes_gcm_only_cache_hot_GBps": round((256 << 20) / aead_s / 1e9, 2),
        "decrypt_vs_plain_read_time_ratio": round(statistics.median(dec_s) / statistics.median(read_s), 2),
        "cpu": "1 core (sched_setaffinity)",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
