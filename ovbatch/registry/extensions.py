"""Custom operations a model version carries: OpenVINO extension libraries and GPU custom-kernel configs.

They are files of the version like its IR, encrypted the same way, found by where they sit:

* ``*.so`` anywhere in the version (``extensions/<name>.so`` for ``models import --extension``):
  an OpenVINO extension library (``OPENVINO_CREATE_EXTENSIONS``), loaded from memory before any of
  the version's models is read (``memload.py``);
* ``gpu/*.xml``: a GPU plugin custom-layer config (``CONFIG_FILE``); the OpenCL sources its
  ``<Source filename=...>`` elements name sit beside it under ``gpu/``.

The manifest lists them under ``extensions`` (covered by its MAC like every field), derived from the
files as they are encrypted, so a version made from another (a quantization result) carries its
parent's extensions without being told.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ovbatch.errors import InputError

EXTENSION = "extension"
GPU_CONFIG = "gpu_config"
EXTENSIONS_FOLDER = "extensions/"
GPU_FOLDER = "gpu/"
MAX_GPU_CONFIG_BYTES = 1 << 20  # a custom-layer config is a few KiB; bigger is not one
ELF_MAGIC = b"\x7fELF"
# OpenVINO's IR reader, meeting an op no opset or loaded extension defines
_UNKNOWN_OP = re.compile(r"Cannot create (\S+) layer (\S+) id:\S+ from unsupported opset: (\S+)")


def is_library(role: str) -> bool:
    name = role.rsplit("/", 1)[-1]
    return name.endswith(".so") or ".so." in name


def is_gpu_config(role: str) -> bool:
    return role.startswith(GPU_FOLDER) and role.endswith(".xml") and role.count("/") == 1


def kernel_sources(config_text: str, where: str) -> list[str]:
    """The OpenCL files a GPU custom-layer config names (``Kernel/Source@filename``), relative to it."""
    # the GPU plugin (pugixml) takes several top-level <CustomLayer> elements; ElementTree wants one root
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", config_text)
    try:
        root = ET.fromstring(f"<config>{body}</config>")
    except ET.ParseError as exc:
        raise InputError(f"{where}: not a GPU custom-layer config ({exc})") from None
    layers = root.findall("CustomLayer")
    if not layers:
        raise InputError(f"{where}: not a GPU custom-layer config (no <CustomLayer> element)")
    names = []
    for source in root.iterfind("CustomLayer/Kernel/Source"):
        name = source.get("filename", "")
        normal = posixpath.normpath(name)
        if not name or name.startswith("/") or normal.startswith(".."):
            raise InputError(f"{where}: kernel source {name!r} must be a file beside the config or below it")
        names.append(normal)
    return names


def describe(roles: Iterable[str], gpu_configs: dict[str, str]) -> list[dict[str, Any]]:
    """The manifest's ``extensions``: each library and GPU config of a version (``gpu_configs``: each
    config's text, by role), refusing a config whose kernel sources are not in the version."""
    roles = set(roles)
    found: list[dict[str, Any]] = [{"role": r, "kind": EXTENSION} for r in sorted(roles) if is_library(r)]
    for role in sorted(r for r in roles if is_gpu_config(r)):
        if role not in gpu_configs:
            raise InputError(f"{role}: larger than {MAX_GPU_CONFIG_BYTES} bytes: not a GPU custom-layer config")
        kernels = [GPU_FOLDER + name for name in kernel_sources(gpu_configs[role], role)]
        missing = [k for k in kernels if k not in roles]
        if missing:
            raise InputError(f"{role} names kernel sources the model does not hold: {', '.join(missing)}")
        found.append({"role": role, "kind": GPU_CONFIG, "kernels": kernels})
    return found


def of(manifest: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    """The manifest's extension entries (of one ``kind``)."""
    entries = manifest.get("extensions") or []
    return [e for e in entries if isinstance(e, dict) and (kind is None or e.get("kind") == kind)]


def library_roles(manifest: dict[str, Any]) -> list[str]:
    return [str(e["role"]) for e in of(manifest, EXTENSION)]


def gpu_blocker(manifest: dict[str, Any], device: str) -> str | None:
    """Why ``device`` cannot run this version (it names a GPU and the version carries GPU custom
    kernels), or None.

    The GPU plugin reads ``CONFIG_FILE`` with ``realpath()`` and opens each kernel source by a path
    relative to the config's folder. A memfd's ``/proc/self/fd/N`` resolves to ``/memfd:... (deleted)``,
    which ``realpath`` refuses, so the config would have to be a plaintext file in a real folder;
    ovbatch writes no plaintext to disk, so such a version does not run on GPU."""
    configs = [e["role"] for e in of(manifest, GPU_CONFIG)]
    if not configs or "GPU" not in device.upper():
        return None
    return (
        f"{manifest['name']}@{manifest['version']} carries GPU custom kernels ({', '.join(configs)}), and "
        "OpenVINO's GPU plugin loads CONFIG_FILE and its OpenCL sources only from a folder on a filesystem, "
        "which would put them there in plaintext; run it on CPU (its extension library) instead"
    )


# -- import ------------------------------------------------------------------------------------------
def collect(libraries: Sequence[Path], gpu_config: Path | None) -> list[tuple[str, Path]]:
    """The files ``models import --extension/--gpu-config`` add to a version, as (role, path)."""
    files: dict[str, Path] = {}
    for path in libraries:
        if not path.is_file():
            raise InputError(f"extension library {path} does not exist")
        with path.open("rb") as f:
            if f.read(4) != ELF_MAGIC:
                raise InputError(f"{path} is not a shared library (an OpenVINO extension is a .so)")
        role = EXTENSIONS_FOLDER + (path.name if is_library(path.name) else path.name + ".so")
        if role in files:
            raise InputError(f"two extension libraries are named {path.name}: rename one")
        files[role] = path
    if gpu_config is not None:
        if not gpu_config.is_file():
            raise InputError(f"GPU custom-layer config {gpu_config} does not exist")
        if gpu_config.stat().st_size > MAX_GPU_CONFIG_BYTES:
            raise InputError(f"{gpu_config}: larger than {MAX_GPU_CONFIG_BYTES} bytes: not a GPU custom-layer config")
        files[GPU_FOLDER + gpu_config.name] = gpu_config
        for name in kernel_sources(gpu_config.read_text(errors="replace"), str(gpu_config)):
            kernel = gpu_config.parent / name
            if not kernel.is_file():
                raise InputError(f"{gpu_config} names kernel source {name}, which is not at {kernel}")
            files[GPU_FOLDER + name] = kernel
    return list(files.items())


def folder_libraries(folder: Path) -> list[Path]:
    """Extension libraries inside a model folder (imported with it like its other files)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_library(p.name))


def add_libraries(core: Any, libraries: Iterable[Path]) -> None:
    """Load extension libraries from disk into ``core``: at import, where the source is plaintext anyway."""
    for path in libraries:
        try:
            core.add_extension(str(path))
        except Exception as exc:
            raise InputError(f"{path} is not an OpenVINO extension library: {error_line(exc)}") from exc


# -- errors ------------------------------------------------------------------------------------------
def error_line(exc: BaseException) -> str:
    """The line of an OpenVINO exception that says what went wrong (its first lines are source locations)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0]


def read_error(exc: BaseException, libraries: Sequence[str], what: str = "it") -> str:
    """Why OpenVINO could not read an IR, naming the operation it does not know if that is why."""
    found = _UNKNOWN_OP.search(str(exc))
    if found is None:
        return f"OpenVINO cannot read {what}: {error_line(exc)}"
    op, layer, opset = found.groups()
    said = f"it uses operation {op!r} (layer {layer!r}, opset {opset!r}), which OpenVINO does not know"
    if libraries:
        return f"{said}: none of its extension libraries ({', '.join(libraries)}) defines it"
    return f"{said}: import the model with the extension library that defines it (--extension LIB.so)"
