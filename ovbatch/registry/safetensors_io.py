"""The safetensors format, read and written with numpy alone (workers install neither torch nor safetensors).

A file is an 8-byte little-endian header length, a JSON header (``name -> {dtype, shape,
data_offsets}`` and an optional ``__metadata__`` of strings), then the raw tensor bytes. The header
is checked against the file's real size, so a truncated download is named as such, and a pickle
renamed to ``.safetensors`` is recognised and never unpickled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ovbatch.errors import CorruptModelError, NotAModelError

MAX_HEADER_BYTES = 100 * 2**20
DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def _is_pickle(head: bytes) -> bool:
    """A zip (torch >= 1.6) or a raw pickle (protocol 2-5), where a safetensors header would show ``{``."""
    return head[8:9] != b"{" and (
        head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")
    )


def _parse_header(head: bytes, raw_header: Any, size: int, where: Any) -> tuple[dict[str, Any], int]:
    """Check the first 9 bytes and the header that ``raw_header(n)`` reads against the total ``size``."""
    if _is_pickle(head):
        raise NotAModelError(
            f"{where} is a pickled PyTorch file, not safetensors: ovbatch never unpickles files "
            "(loading a pickle runs code from it); use a .safetensors release of it"
        )
    if len(head) < 9:
        raise CorruptModelError(f"{where} is truncated or corrupt: {size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise CorruptModelError(
            f"{where} is truncated or not a safetensors file: its header claims {n} bytes, the file has {size}"
        )
    try:
        header = json.loads(raw_header(n))
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        data_end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
        for v in entries.values():
            v["shape"] = [int(d) for d in v["shape"]]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise CorruptModelError(f"{where} is corrupt: its safetensors header does not parse ({exc})") from exc
    if 8 + n + data_end > size:
        raise CorruptModelError(
            f"{where} is truncated: its header promises {data_end} bytes of tensor data, the file holds {size - 8 - n}"
        )
    return header, 8 + n


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed header (tensor entries and ``__metadata__``) and where the tensor data starts."""
    with open(path, "rb") as f:

        def raw_header(n: int) -> bytes:
            f.seek(8)
            return f.read(n)

        return _parse_header(f.read(9), raw_header, path.stat().st_size, path)


def shapes(path: Path) -> dict[str, list[int]]:
    header, _ = read_header(path)
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _array(raw: Any, dtype: str, shape: list[int], name: str, path: Any) -> np.ndarray:
    if dtype == "BF16":  # numpy has no bfloat16: widen to float32 exactly
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype not in DTYPES:
        raise CorruptModelError(f"{path}: tensor {name!r} has dtype {dtype}, which ovbatch does not read")
    array = np.frombuffer(raw, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
    if array.size != int(np.prod(shape)):
        raise CorruptModelError(f"{path}: tensor {name!r} holds {array.size} values for shape {shape}")
    return array.reshape(shape)


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor (bf16 widened to float32) and the string metadata of the file at ``path``."""
    return loads(path.read_bytes(), path)


def loads(data: bytes | memoryview, where: Any = "adapter") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``load`` for a file's bytes in memory (a decrypted registry file)."""
    data = memoryview(data).cast("B")
    header, start = _parse_header(bytes(data[:9]), lambda n: bytes(data[8 : 8 + n]), len(data), where)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = (start + int(x) for x in entry["data_offsets"])
        tensors[name] = _array(data[begin:end], entry["dtype"], entry["shape"], name, where)
    metadata = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def dumps(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes; tensors in name order, little-endian, 8-byte aligned header."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
