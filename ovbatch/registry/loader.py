"""Fetch, authenticate and decrypt a model version into memory, and hand it to OpenVINO.

Each file is decrypted straight into one preallocated buffer; a weights buffer becomes the
``ov.Tensor`` that ``read_model(xml, tensor)`` wraps without a copy. Nothing touches the disk.
A version's extension libraries (custom operations, ``extensions.py``) are always decrypted with its
models and loaded from memory before they are read (``memload.py``), whichever job kind reads them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.crypto.stream import FileContext, decrypt_into, wipe
from ovbatch.errors import CorruptModelError, IntegrityError
from ovbatch.registry import extensions, memload, refs
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry


@dataclass
class Timings:
    """Seconds per phase, summed over files (phases may overlap in wall time when pipelined)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, phase: str, seconds: float) -> None:
        with self.lock:
            self.seconds[phase] += seconds

    def __getitem__(self, phase: str) -> float:
        return self.seconds.get(phase, 0.0)


@dataclass
class DecryptedVersion:
    """A model version's plaintext, in process memory only."""

    manifest: dict[str, Any]
    buffers: dict[str, np.ndarray]

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.manifest["name"], self.manifest["version"])

    def data(self, role: str) -> memoryview:
        return self.buffers[role].data

    def text(self, role: str) -> str:
        return self.buffers[role].tobytes().decode("utf-8")

    def model_roles(self) -> list[str]:
        """The OpenVINO models of this version: every ``X.xml`` with an ``X.bin`` beside it."""
        return sorted(r for r in self.buffers if r.endswith(".xml") and r[:-4] + ".bin" in self.buffers)

    def weights_tensor(self, xml_role: str) -> Any:
        """The model's decrypted weights as an ``ov.Tensor`` over the same memory (no copy)."""
        import openvino as ov

        return ov.Tensor(self.buffers[xml_role[:-4] + ".bin"], shared_memory=True)

    def read_model(self, core: Any, xml_role: str) -> Any:
        """The ``ov.Model`` of ``xml_role``, read by ``core``, or, when the version carries extension
        libraries, by the Core that holds them (``memload.reader``): the model compiles on any Core."""
        weights = self.weights_tensor(xml_role)
        reader = memload.reader(self) or core
        try:
            return reader.read_model(self.text(xml_role), weights)
        except Exception as exc:
            why = extensions.read_error(exc, extensions.library_roles(self.manifest))
            raise CorruptModelError(f"{self.ref} file {xml_role!r}: {why}") from exc

    def wipe(self) -> None:
        for buf in self.buffers.values():
            wipe(buf.data)


def _open_manifest(registry: Registry, ref: ModelRef, timings: Timings) -> tuple[dict[str, Any], bytes]:
    t0 = time.perf_counter()
    manifest = registry.manifest(ref, verify_mac=False)
    data_key = registry.data_key(manifest)
    timings.add("fetch", time.perf_counter() - t0)
    return manifest, data_key


def _decrypt_file(
    registry: Registry,
    manifest: dict[str, Any],
    data_key: bytes,
    entry: dict[str, Any],
    timings: Timings,
    check_digest: bool,
) -> np.ndarray:
    name, version, role = manifest["name"], manifest["version"], entry["role"]
    ctx = FileContext(name, version, role)
    buf = np.empty(int(entry["size"]), dtype=np.uint8)
    with registry.store.open(refs.object_key(name, version, role)) as stream:
        decrypt_into(data_key, ctx, stream, buf.data, timer=timings.add)
    if check_digest:
        t0 = time.perf_counter()
        if hashlib.sha256(buf.data).hexdigest() != entry["sha256"]:
            wipe(buf.data)
            raise IntegrityError(f"{ctx}: plaintext sha256 differs from the manifest")
        timings.add("digest", time.perf_counter() - t0)
    return buf


def decrypt_version(
    registry: Registry,
    ref: ModelRef,
    roles: Iterable[str] | None = None,
    timings: Timings | None = None,
    check_digests: bool = False,
) -> DecryptedVersion:
    """Authenticate and decrypt the files of ``ref`` (all, or ``roles`` and its extension libraries)
    into memory."""
    timings = timings or Timings()
    manifest, data_key = _open_manifest(registry, ref, timings)
    wanted = {*roles, *extensions.library_roles(manifest)} if roles is not None else None
    buffers = {
        entry["role"]: _decrypt_file(registry, manifest, data_key, entry, timings, check_digests)
        for entry in manifest["files"]
        if wanted is None or entry["role"] in wanted
    }
    return DecryptedVersion(manifest, buffers)


def _compile_order(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Files in the order a loader needs them: the extension libraries (read_model needs them), each
    model's xml and bin together, smallest model first (compilation starts sooner and hides the big
    decrypts), then the remaining files."""
    roles = {e["role"]: e for e in manifest["files"]}
    models = sorted(
        (r for r in roles if r.endswith(".xml") and r[:-4] + ".bin" in roles),
        key=lambda xml: (int(roles[xml[:-4] + ".bin"]["size"]), xml),
    )
    libraries = [roles[r] for r in extensions.library_roles(manifest) if r in roles]
    ordered = libraries + [roles[r] for xml in models for r in (xml, xml[:-4] + ".bin")]
    return ordered + [e for e in manifest["files"] if e not in ordered]


def load_and_compile(
    registry: Registry,
    ref: ModelRef,
    core: Any,
    device: str,
    timings: Timings | None = None,
    check_digests: bool = False,
    config: dict[str, Any] | None = None,
) -> tuple[DecryptedVersion, dict[str, Any]]:
    """Decrypt every file and compile every OpenVINO model of ``ref``, pipelined.

    A background thread decrypts the files in compile order while the caller's thread reads and
    compiles the models whose files are ready: AES-GCM and ``compile_model`` both release the GIL,
    so decryption hides behind compilation. Returns the plaintext and the compiled models by role.
    """
    timings = timings or Timings()
    manifest, data_key = _open_manifest(registry, ref, timings)
    memload.check_device(manifest, device)
    version = DecryptedVersion(manifest, {})
    compiled: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovbatch-decrypt") as pool:
        pending = {
            e["role"]: pool.submit(_decrypt_file, registry, manifest, data_key, e, timings, check_digests)
            for e in _compile_order(manifest)
        }
        try:
            for role, future in pending.items():
                version.buffers[role] = future.result()
                xml = role[:-4] + ".xml" if role.endswith(".bin") else None
                if xml is None or xml not in version.buffers:
                    continue
                t0 = time.perf_counter()
                model = version.read_model(core, xml)
                t1 = time.perf_counter()
                try:
                    compiled[xml] = core.compile_model(model, device, config or {})
                except Exception as exc:
                    raise CorruptModelError(
                        f"{version.ref} file {xml!r} does not compile on {device}: {extensions.error_line(exc)}"
                    ) from exc
                timings.add("read_model", t1 - t0)
                timings.add("compile", time.perf_counter() - t1)
        except BaseException:
            for future in pending.values():
                future.cancel()
            version.wipe()
            raise
    return version, compiled


def verify(registry: Registry, ref: ModelRef, device: str) -> dict[str, Any]:
    """Fetch, authenticate, decrypt, read and compile every OpenVINO model of ``ref`` on ``device``."""
    from ovbatch.ov import check_device, make_core

    core = make_core()
    check_device(core, device)
    timings = Timings()
    t0 = time.perf_counter()
    version, compiled = load_and_compile(registry, ref, core, device, timings, check_digests=True)
    wall_s = time.perf_counter() - t0
    version.wipe()
    return {
        "ref": str(version.ref),
        "device": device,
        "files": len(version.buffers),
        "plaintext_bytes": sum(int(b.nbytes) for b in version.buffers.values()),
        "models": sorted(compiled),
        "extensions": extensions.library_roles(version.manifest),  # loaded from memory
        "seconds": dict(timings.seconds),
        "wall_s": wall_s,
    }
