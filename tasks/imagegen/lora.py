"""LoRA adapter files (safetensors, kohya names) as openvino_genai applies them.

genai ignores the ``<layer>.alpha`` tensors in the file and scales ``up @ down`` by the alpha it is
given, where diffusers and kohya scale by ``weight * alpha / rank``. ``scale_of`` reads alpha / rank
from the file (no torch needed) so that a request's weight means what it means everywhere else.
genai matches only kohya-style names (``lora_unet_*``, ``lora_te_*``) and silently ignores the rest,
so a file without them is refused here instead of doing nothing.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from ovbatch.errors import InputError

KOHYA_PREFIXES = ("lora_unet_", "lora_te_")
DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight")
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def read_header(data: np.ndarray, name: str) -> tuple[dict[str, Any], int]:
    """The safetensors header (tensor name -> dtype, shape, data_offsets) and where tensor data starts."""
    if data.nbytes < 8:
        raise InputError(f"LoRA adapter {name!r} is not a safetensors file: {data.nbytes} bytes")
    (length,) = struct.unpack("<Q", data[:8].tobytes())
    try:
        header = json.loads(data[8 : 8 + length].tobytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"LoRA adapter {name!r} is not a safetensors file: {exc}") from exc
    header.pop("__metadata__", None)
    return header, 8 + length


def _scalar(data: np.ndarray, start: int, entry: dict[str, Any]) -> float:
    begin, end = (start + int(x) for x in entry["data_offsets"])
    raw = data[begin:end]
    if entry["dtype"] == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        return float((raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)[0])
    if entry["dtype"] not in _DTYPES:
        raise InputError(f"LoRA alpha of dtype {entry['dtype']} is not supported (F64, F32, F16, BF16 are)")
    return float(raw.view(_DTYPES[entry["dtype"]])[0])


def scale_of(data: np.ndarray, name: str) -> float:
    """The adapter's ``alpha / rank`` (1 where a layer has no alpha), the same for every layer."""
    header, start = read_header(data, name)
    if not any(key.startswith(KOHYA_PREFIXES) for key in header):
        raise InputError(
            f"LoRA adapter {name!r} has no kohya-style tensor names ({', '.join(p + '*' for p in KOHYA_PREFIXES)}); "
            "openvino_genai would ignore it"
        )
    scales = set()
    for key, entry in header.items():
        layer = next((key[: -len(s)] for s in DOWN_SUFFIXES if key.endswith(s)), None)
        if layer is None:
            continue
        rank = int(entry["shape"][0])
        alpha_entry = header.get(layer + ".alpha")
        alpha = _scalar(data, start, alpha_entry) if alpha_entry else float(rank)
        scales.add(round(alpha / rank, 6))
    if len(scales) != 1:
        raise InputError(f"LoRA adapter {name!r}: layers have different alpha/rank {sorted(scales)}; genai takes one")
    return scales.pop()
