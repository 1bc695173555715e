"""The encrypted model registry: ``models/<name>/<version>/{manifest.json, <role>.enc}``.

Versions are immutable. A new version is first reserved with a create-only write, so two
concurrent imports of one name never write the same version's files.

Because they are, a registry keeps the manifests it has verified: a worker whose model is in memory
goes on running jobs for ``name@N`` while storage is down. Only a manifest's wrapped key ever changes
(``keys rotate``), and a kept one whose key the keyring no longer opens is read again. ``name`` alone
is resolved by a listing at most ``newest_ttl_s`` old, or the last one while storage is unreachable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ovbatch.crypto import envelope
from ovbatch.crypto.keyring import Keyring
from ovbatch.crypto.stream import DEFAULT_CHUNK_LOG2, FileContext, encrypt_chunks
from ovbatch.errors import (
    CryptoError,
    InputError,
    IntegrityError,
    ModelNotFound,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    VersionExists,
)
from ovbatch.registry import extensions, refs, sources, unfinished
from ovbatch.registry.irio import model_io
from ovbatch.registry.refs import ModelRef
from ovbatch.storage import ObjectStore

MANIFEST_FORMAT = 1
MANIFESTS_KEPT = 128  # verified manifests of pinned versions, least recently used dropped first
NEWEST_TTL_S = 30.0  # how long ``name`` keeps resolving to the newest version a listing found

log = logging.getLogger(__name__)


_FILE_FIELDS = {"role": str, "size": int, "sha256": str}


def _check_shape(ref: ModelRef, manifest: dict[str, Any]) -> None:
    """The fields readers index, with their types: a tampered manifest is an IntegrityError naming the
    model, never a bare KeyError or TypeError (its MAC is checked after, with the unwrapped key)."""

    def bad(what: str) -> IntegrityError:
        return IntegrityError(f"{ref}: manifest.json {what} (tampered or corrupt)")

    for field in ("key_id", "wrapped_key", "mac"):
        if not isinstance(manifest.get(field), str):
            raise bad(f"has no valid {field!r}")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise bad("lists no files")
    for entry in files:
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in _FILE_FIELDS.items()):
            raise bad(f"has a malformed file entry: {str(entry)[:80]}")
        if isinstance(entry["size"], bool) or entry["size"] < 0:
            raise bad(f"gives {entry['role']!r} a size of {entry['size']}")
    roles = {entry["role"] for entry in files}
    custom = manifest.get("extensions", [])
    if not isinstance(custom, list) or not all(
        isinstance(e, dict) and isinstance(e.get("kind"), str) and str(e.get("role")) in roles for e in custom
    ):
        raise bad("has a malformed extensions list")


class Registry:
    def __init__(self, store: ObjectStore, keyring: Keyring, *, newest_ttl_s: float = NEWEST_TTL_S):
        self.store = store
        self.keyring = keyring
        self.newest_ttl_s = newest_ttl_s
        self._manifests: OrderedDict[ModelRef, dict[str, Any]] = OrderedDict()
        self._newest: dict[str, tuple[float, str]] = {}  # name -> (monotonic time it was listed, version)
        self._cache_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted({k.split("/")[1] for k in self.store.list(refs.ROOT + "/") if k.endswith("/manifest.json")})

    def versions(self, name: str) -> list[str]:
        prefix = f"{refs.ROOT}/{refs.check_name(name)}/"
        found = {
            key[len(prefix) :].split("/")[0]
            for key in self.store.list(prefix)
            if key.endswith("/manifest.json") and key.count("/") == 3
        }
        return sorted(found, key=int)

    def resolve(self, ref: ModelRef) -> ModelRef:
        """``name`` -> ``name@newest`` (see the module docstring); ``name@N``: checks that it exists."""
        if ref.version is None:
            return ModelRef(ref.name, self._newest_version(ref.name))
        versions = self.versions(ref.name)
        if not versions:
            raise ModelNotFound(f"model {ref.name!r} is not in the registry at {self.store.url}")
        if ref.version not in versions:
            raise ModelNotFound(f"{ref} is not in the registry (versions: {', '.join(versions)})")
        return ref

    def _newest_version(self, name: str) -> str:
        now = time.monotonic()
        with self._cache_lock:
            known = self._newest.get(name)
        if known is not None and now - known[0] < self.newest_ttl_s:
            return known[1]
        try:
            versions = self.versions(name)
        except StorageError as exc:
            if known is None:
                raise
            log.warning(
                "registry %s unreachable (%s): %s resolves to version %s, listed %.0f s ago",
                self.store.url, exc, name, known[1], now - known[0],
            )  # fmt: skip
            return known[1]
        with self._cache_lock:
            if versions:
                self._newest[name] = (now, versions[-1])
            else:
                self._newest.pop(name, None)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not in the registry at {self.store.url}")
        return versions[-1]

    def manifest(self, ref: ModelRef, *, verify_mac: bool = True) -> dict[str, Any]:
        """The manifest of ``ref`` (``name`` alone: its newest version).

        With ``verify_mac``, its wrapped key opens with the keyring and its MAC holds; it is then kept
        and served again without touching storage, checked against the keyring each time: one that no
        longer opens (its key was rotated away) is read again, once. Without, it is read as stored now.
        """
        ref = self.resolve(ref) if ref.version is None else ref
        if not verify_mac:
            return self._read_manifest(ref)
        with self._cache_lock:
            kept = self._manifests.get(ref)
            if kept is not None:
                self._manifests.move_to_end(ref)
        if kept is not None:
            try:
                envelope.check_manifest(kept, envelope.unwrap(self.keyring, kept))
                return copy.deepcopy(kept)
            except CryptoError as exc:
                log.info("%s: the kept manifest does not open any more (%s); reading it again", ref, exc)
        manifest = self._read_manifest(ref)
        envelope.check_manifest(manifest, envelope.unwrap(self.keyring, manifest))
        self._keep(ref, manifest)
        return copy.deepcopy(manifest)

    def _read_manifest(self, ref: ModelRef) -> dict[str, Any]:
        assert ref.version is not None
        try:
            raw = self.store.get_bytes(refs.manifest_key(ref.name, ref.version))
        except ObjectNotFound:
            raw = None
        if raw is None:
            self.resolve(ref)  # names the versions there are
            raise ModelNotFound(f"{ref} is not in the registry at {self.store.url}")
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"{ref}: manifest.json is not valid JSON (tampered or corrupt)") from None
        if not isinstance(manifest, dict):
            raise IntegrityError(f"{ref}: manifest.json is not a JSON object (tampered or corrupt)")
        if manifest.get("name") != ref.name or manifest.get("version") != ref.version:
            raise IntegrityError(f"{ref}: manifest.json belongs to {manifest.get('name')}@{manifest.get('version')}")
        _check_shape(ref, manifest)
        return manifest

    def _keep(self, ref: ModelRef, manifest: dict[str, Any]) -> None:
        with self._cache_lock:
            self._manifests[ref] = copy.deepcopy(manifest)
            self._manifests.move_to_end(ref)
            while len(self._manifests) > MANIFESTS_KEPT:
                self._manifests.popitem(last=False)

    def _forget(self, ref: ModelRef) -> None:
        with self._cache_lock:
            self._newest.pop(ref.name, None)
            self._manifests.pop(ref, None)

    def data_key(self, manifest: dict[str, Any]) -> bytes:
        key = envelope.unwrap(self.keyring, manifest)
        envelope.check_manifest(manifest, key)
        return key

    def all_versions(self) -> Iterator[ModelRef]:
        for name in self.names():
            for version in self.versions(name):
                yield ModelRef(name, version)

    # -- writing -------------------------------------------------------------------------
    def _reserve(self, name: str, version: str | None) -> str:
        listed = list(self.store.list(f"{refs.ROOT}/{name}/"))  # one listing for the cleaning and the numbering
        # a killed import of this host: its number and files
        cleaned = self.clean_unfinished(name, only_dead=True, listed=listed)
        body = unfinished.reservation_body()
        if version is not None:
            if self.store.exists(refs.manifest_key(name, version)):
                raise VersionExists(f"{name}@{version} already exists; versions are immutable")
            try:
                self.store.put_bytes(refs.reservation_key(name, version), body, if_absent=True)
            except ObjectExists:
                raise VersionExists(f"{name}@{version} is already taken by another import") from None
            return version
        freed = {item.version for item in cleaned}
        taken = {k.split("/")[2] for k in listed if k.count("/") == 3} - freed
        candidate = max((int(v) for v in taken if v.isdigit()), default=0) + 1
        while True:
            try:
                self.store.put_bytes(refs.reservation_key(name, str(candidate)), body, if_absent=True)
                return str(candidate)
            except ObjectExists:
                candidate += 1

    def unfinished_imports(self, name: str | None = None) -> list[unfinished.Unfinished]:
        """Imports that never finished (``unfinished.py``)."""
        return unfinished.find(self.store, name)

    def clean_unfinished(
        self,
        name: str | None = None,
        *,
        older_than_s: float = 24 * 3600.0,
        only_dead: bool = False,
        dry_run: bool = False,
        listed: list[str] | None = None,
    ) -> list[unfinished.Unfinished]:
        """Remove what killed imports left: those whose owner on this host is dead, and (unless
        ``only_dead``) those of other hosts older than ``older_than_s``. Returns what was (or, with
        ``dry_run``, would be) removed. ``listed``: the keys under ``name``'s folder, already listed."""
        chosen = [
            u
            for u in unfinished.find(self.store, name, listed)
            if (u.state == "dead" if only_dead else u.removable(older_than_s))
        ]
        for item in chosen:
            if not dry_run:
                log.warning("removing an unfinished import: %s", item.describe())
                unfinished.remove(self.store, item)
        return chosen

    def import_folder(
        self,
        path: Path,
        name: str,
        version: str | None = None,
        task: str | None = None,
        libraries: Sequence[Path] = (),
        gpu_config: Path | None = None,
    ) -> dict[str, Any]:
        """Import a model folder as a new encrypted version; return its manifest. ``libraries``
        (OpenVINO extension libraries) and ``gpu_config`` (a GPU custom-layer config and the kernel
        sources it names) join the version, encrypted like the model (``extensions.py``)."""
        refs.check_name(name)
        if version is not None:
            version = refs.check_version(version)
        self.keyring.active_key()  # fail on a missing key before exporting anything
        extra = extensions.collect(libraries, gpu_config)
        with sources.prepare(path, task, libraries) as prepared:
            return self._import_prepared(prepared, name, version, extra)

    def import_lora(
        self, path: Path, name: str, version: str | None = None, base: ModelRef | None = None
    ) -> dict[str, Any]:
        """Import a LoRA adapter file (kohya or PEFT) as a new version of kind ``lora``; with ``base``,
        refuse it unless it applies to that Stable Diffusion version."""
        from ovbatch.registry import lora

        refs.check_name(name)
        if version is not None:
            version = refs.check_version(version)
        self.keyring.active_key()
        with lora.prepare(path, name, lora.decrypt_base(self, base) if base else None) as prepared:
            return self._import_prepared(prepared, name, version)

    def import_buffers(
        self,
        files: dict[str, bytes | memoryview],
        name: str,
        *,
        kind: str,
        precision: str,
        source: dict[str, str],
        extra: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Import a model held in memory (``{role: plaintext}``) as a new encrypted version: what a
        quantization job makes. Nothing is written in plaintext; the manifest goes last, so a process
        killed half way leaves no visible version (only its reservation)."""
        refs.check_name(name)
        if version is not None:
            version = refs.check_version(version)
        self.keyring.active_key()
        views = {role: memoryview(data).cast("B") for role, data in files.items()}
        entries = [(role, lambda v=v: _MemoryReader(v), len(v)) for role, v in sorted(views.items())]
        return self._import_entries(entries, name, version, kind, precision, source, extra or {})

    def _import_prepared(
        self,
        prepared: sources.PreparedModel,
        name: str,
        version: str | None,
        extra: Sequence[tuple[str, Path]] = (),
    ) -> dict[str, Any]:
        files = {p.relative_to(prepared.folder).as_posix(): p for p in _model_files(prepared.folder)}
        given = {p.resolve() for _, p in extra}
        files = {role: p for role, p in files.items() if p.resolve() not in given}  # stored once, by its extra role
        for role, path in extra:
            if role in files:
                raise InputError(f"{path} would be stored as {role}, and the model folder holds another {role}")
            files[role] = path
        entries = [(role, partial(open, p, "rb"), p.stat().st_size) for role, p in sorted(files.items())]
        return self._import_entries(
            entries, name, version, prepared.kind, prepared.precision, prepared.source, prepared.extra
        )

    def _import_entries(
        self,
        entries: Sequence[tuple[str, Callable[[], Any], int]],
        name: str,
        version: str | None,
        kind: str,
        precision: str,
        source: dict[str, str],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Reserve the version, encrypt every file, write the manifest last; undo on any failure."""
        version = self._reserve(name, version)
        try:
            manifest = self._encrypt_entries(entries, name, version, kind, precision, source, extra)
        except BaseException:
            self._delete_prefix(refs.version_prefix(name, version))
            raise
        self._forget(ModelRef(name, version))  # ``name`` now means this version
        self.store.delete(refs.reservation_key(name, version))
        return manifest

    def _encrypt_entries(
        self,
        entries: Sequence[tuple[str, Callable[[], Any], int]],
        name: str,
        version: str,
        kind: str,
        precision: str,
        source: dict[str, str],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        data_key = envelope.new_data_key()
        files = []
        roles = {role for role, _, _ in entries}
        io: dict[str, Any] = {}  # each OpenVINO model's inputs, read from its XML as it streams past
        gpu_configs: dict[str, str] = {}  # GPU custom-layer configs, read as they stream past
        for role, opener, size in entries:
            digest = hashlib.sha256()
            is_model = role.endswith(".xml") and role[:-4] + ".bin" in roles
            is_config = extensions.is_gpu_config(role) and size <= extensions.MAX_GPU_CONFIG_BYTES
            xml = bytearray() if is_model or is_config else None

            def observe(chunk: bytes, digest: Any = digest, xml: bytearray | None = xml) -> None:
                digest.update(chunk)
                if xml is not None:
                    xml.extend(chunk)

            with opener() as plaintext:
                stream = encrypt_chunks(data_key, FileContext(name, version, role), plaintext, observe=observe)
                stored = self.store.put_stream(refs.object_key(name, version, role), stream)
            files.append({"role": role, "size": size, "sha256": digest.hexdigest(), "ciphertext_size": stored})
            if xml is not None and is_config:
                gpu_configs[role] = xml.decode("utf-8", "replace")
            elif xml is not None:
                with contextlib.suppress(InputError):  # not readable here: OpenVINO says so at compile
                    io[role] = model_io(xml.decode("utf-8", "replace"))
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "version": version,
            "kind": kind,
            "precision": precision,
            "source": source,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "chunk_log2": DEFAULT_CHUNK_LOG2,
            "files": files,
        }
        if io:
            manifest["io"] = io
        custom = extensions.describe(roles, gpu_configs)
        if custom:
            manifest["extensions"] = custom
        manifest.update(extra)
        envelope.seal_manifest(manifest, data_key)
        manifest.update(envelope.wrap(self.keyring, data_key, name, version))
        self.store.put_bytes(refs.manifest_key(name, version), _dump(manifest), if_absent=True)
        return manifest

    def remove(self, ref: ModelRef) -> None:
        if ref.version is None:
            raise ModelNotFound(f"say which version to remove: {ref.name}@VERSION")
        ref = self.resolve(ref)
        assert ref.version is not None
        # the manifest goes first: from then on the version is gone for every reader
        self._forget(ref)
        self.store.delete(refs.manifest_key(ref.name, ref.version))
        self._delete_prefix(refs.version_prefix(ref.name, ref.version))

    def _delete_prefix(self, prefix: str) -> None:
        for key in list(self.store.list(prefix)):
            self.store.delete(key)

    def rewrap(self, ref: ModelRef) -> None:
        """Wrap this version's data key with the keyring's active key; the data is untouched."""
        ref = self.resolve(ref) if ref.version is None else ref
        manifest = self._read_manifest(ref)  # as stored now, never a kept copy
        data_key = envelope.unwrap(self.keyring, manifest)
        envelope.check_manifest(manifest, data_key)
        manifest.update(envelope.wrap(self.keyring, data_key, manifest["name"], manifest["version"]))
        self.store.put_bytes(refs.manifest_key(manifest["name"], manifest["version"]), _dump(manifest))
        self._keep(ref, manifest)


class _MemoryReader:
    """A read-only stream over plaintext in memory (no copy of the whole buffer, unlike BytesIO)."""

    def __init__(self, view: memoryview) -> None:
        self._view, self._at = view, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._at + n)
        chunk = bytes(self._view[self._at : end])
        self._at = end
        return chunk

    def __enter__(self) -> _MemoryReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._view = memoryview(b"")


def _model_files(folder: Path) -> list[Path]:
    """Every file of the model folder, leaving out hidden ones (.git, editor droppings)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _dump(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()
