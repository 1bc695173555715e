"""The one place ovbatch makes an OpenVINO Core.

OpenVINO is not fork-safe: call these only in a process that will not fork afterwards.
No ``CACHE_DIR`` is ever set: on CPU the model cache stores weights unencrypted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ovbatch.errors import DeviceError


def make_core() -> Any:
    import openvino as ov

    with contextlib.suppress(ImportError):
        import openvino_tokenizers  # noqa: F401  registers tokenizer ops for *_tokenizer.xml models
    core = ov.Core()
    core.set_property({"CACHE_DIR": ""})  # never a plaintext model cache on disk
    return core


def check_device(core: Any, device: str) -> str:
    """Return ``device`` if OpenVINO lists it, else raise naming the devices that are there."""
    available = list(core.available_devices)
    base = device.split(".")[0]
    if device in available or (device == base and any(d.split(".")[0] == base for d in available)):
        return device
    raise DeviceError(
        f"device {device!r} is not available to OpenVINO on this machine; available: {', '.join(available)}"
    )


def device_info(core: Any, device: str) -> dict[str, Any]:
    """What a worker tells clients about its device (``ovbatch workers``, benchmark submission checks)."""
    info: dict[str, Any] = {}
    for key, name in (("full_name", "FULL_DEVICE_NAME"), ("capabilities", "OPTIMIZATION_CAPABILITIES")):
        try:
            value = core.get_property(device, name)
        except Exception:  # a virtual device (AUTO) may not report it
            continue
        info[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    return info
