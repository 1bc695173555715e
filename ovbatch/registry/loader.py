"""Fetch, authenticate and decrypt a model version into memory, and hand it to OpenVINO.

Each file is decrypted straight into one preallocated buffer; a weights buffer becomes the
``ov.Tensor`` that ``read_model(xml, tensor)`` wraps without a copy. Nothing touches the disk.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.crypto.stream import FileContext, decrypt_into, wipe
from ovbatch.errors import CorruptModelError, IntegrityError
from ovbatch.registry import refs
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, phase: str, seconds: float) -> None:
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

    def read_model(self, core: Any, xml_role: str) -> Any:
        import openvino as ov

        weights = ov.Tensor(self.buffers[xml_role[:-4] + ".bin"], shared_memory=True)
        try:
            return core.read_model(self.text(xml_role), weights)
        except Exception as exc:
            raise CorruptModelError(f"{self.ref} file {xml_role!r}: OpenVINO cannot read it: {exc}") from exc

    def wipe(self) -> None:
        for buf in self.buffers.values():
            wipe(buf.data)


def decrypt_version(
    registry: Registry,
    ref: ModelRef,
    roles: Iterable[str] | None = None,
    timings: Timings | None = None,
    check_digests: bool = False,
) -> DecryptedVersion:
    """Authenticate and decrypt the files of ``ref`` (all, or ``roles``) into memory."""
    timings = timings or Timings()
    t0 = time.perf_counter()
    manifest = registry.manifest(ref, verify_mac=False)
    data_key = registry.data_key(manifest)
    timings.add("fetch", time.perf_counter() - t0)
    name, version = manifest["name"], manifest["version"]
    wanted = set(roles) if roles is not None else None
    buffers: dict[str, np.ndarray] = {}
    for entry in manifest["files"]:
        role = entry["role"]
        if wanted is not None and role not in wanted:
            continue
        ctx = FileContext(name, version, role)
        buf = np.empty(int(entry["size"]), dtype=np.uint8)
        with registry.store.open(refs.object_key(name, version, role)) as stream:
            decrypt_into(data_key, ctx, stream, buf.data, timer=timings.add)
        if check_digests:
            t1 = time.perf_counter()
            if hashlib.sha256(buf.data).hexdigest() != entry["sha256"]:
                wipe(buf.data)
                raise IntegrityError(f"{ctx}: plaintext sha256 differs from the manifest")
            timings.add("digest", time.perf_counter() - t1)
        buffers[role] = buf
    return DecryptedVersion(manifest, buffers)


def verify(registry: Registry, ref: ModelRef, device: str) -> dict[str, Any]:
    """Fetch, authenticate, decrypt, read and compile every OpenVINO model of ``ref`` on ``device``."""
    from ovbatch.ov import check_device, make_core

    core = make_core()
    check_device(core, device)
    timings = Timings()
    version = decrypt_version(registry, ref, timings=timings, check_digests=True)
    models = []
    try:
        for xml_role in version.model_roles():
            t0 = time.perf_counter()
            model = version.read_model(core, xml_role)
            t1 = time.perf_counter()
            try:
                core.compile_model(model, device)
            except Exception as exc:
                raise CorruptModelError(
                    f"{version.ref} file {xml_role!r} does not compile on {device}: {str(exc).splitlines()[0]}"
                ) from exc
            t2 = time.perf_counter()
            timings.add("read_model", t1 - t0)
            timings.add("compile", t2 - t1)
            models.append({"model": xml_role, "read_model_s": t1 - t0, "compile_s": t2 - t1})
    finally:
        version.wipe()
    return {
        "ref": str(version.ref),
        "device": device,
        "files": len(version.buffers),
        "plaintext_bytes": sum(int(b.nbytes) for b in version.buffers.values()),
        "models": models,
        "seconds": dict(timings.seconds),
    }
