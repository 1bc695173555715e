"""Manifests kept in memory: a worker whose model is loaded runs jobs for it through a storage outage.

Storage is the loopback S3 server behind a proxy (tests/storage/faulty_s3.py) that counts requests
and can play dead: "served from memory" means not one request reached it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import ModelNotFound, TransientStorageError, UnknownKeyError
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.s3 import S3Store
from tests.storage.faulty_s3 import FaultyS3

PINNED = ModelRef("tiny", "1")


@dataclass
class Setup:
    proxy: FaultyS3
    store: S3Store  # through the proxy
    keyring: Keyring
    admin: Registry  # another process: imports, rotates


def import_tiny(registry: Registry, version: str | None = None) -> None:
    files: dict[str, bytes | memoryview] = {"weights.bin": uuid.uuid4().bytes * 64, "config.json": b"{}"}
    registry.import_buffers(files, "tiny", kind="generic", precision="fp32", source={"type": "test"}, version=version)


@pytest.fixture
def setup(s3_endpoint: str, aws_env: None, keyring: Keyring) -> Iterator[Setup]:
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    with FaultyS3(s3_endpoint) as proxy:
        store = S3Store(bucket, "reg", endpoint_url=proxy.url, max_attempts=2)
        admin = Registry(store, Keyring.load(keyring.path))
        import_tiny(admin)
        yield Setup(proxy, store, keyring, admin)


def worker_registry(setup: Setup, newest_ttl_s: float = 30.0) -> Registry:
    store = S3Store(setup.store.bucket, "reg", endpoint_url=setup.proxy.url, max_attempts=2)
    return Registry(store, Keyring.load(setup.keyring.path), newest_ttl_s=newest_ttl_s)


def test_a_pinned_manifest_is_read_once_then_served_with_storage_down(setup: Setup) -> None:
    worker = worker_registry(setup)
    setup.proxy.reset()
    first = worker.manifest(PINNED)
    assert setup.proxy.count("GET", "manifest.json") == 1 and setup.proxy.count("GET", "list-type") == 0, (
        "a pinned version needs no listing"
    )
    setup.proxy.down = True
    setup.proxy.reset()
    assert worker.manifest(PINNED) == first
    assert setup.proxy.count() == 0, "a kept manifest must not touch storage"
    worker.manifest(PINNED)["files"].clear()  # callers get copies
    assert worker.manifest(PINNED) == first


def test_an_unkept_version_with_storage_down_is_a_retryable_error(setup: Setup) -> None:
    worker = worker_registry(setup)
    setup.proxy.down = True
    with pytest.raises(TransientStorageError, match="models/tiny/1/manifest.json") as caught:
        worker.manifest(PINNED)
    assert caught.value.retryable


def test_a_missing_version_still_names_the_versions_there_are(setup: Setup) -> None:
    with pytest.raises(ModelNotFound, match=r"tiny@7 is not in the registry \(versions: 1\)"):
        worker_registry(setup).manifest(ModelRef("tiny", "7"))


def test_name_alone_is_listed_at_most_every_ttl_then_falls_back(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    worker = worker_registry(setup, newest_ttl_s=30.0)
    assert worker.manifest(ModelRef("tiny"))["version"] == "1"
    setup.proxy.down = True
    setup.proxy.reset()
    assert worker.manifest(ModelRef("tiny"))["version"] == "1"
    assert setup.proxy.count() == 0, "within the TTL neither the listing nor the manifest is read again"
    worker.newest_ttl_s = 0.0  # the listing is now too old
    with caplog.at_level(logging.WARNING, logger="ovbatch.registry.registry"):
        assert worker.manifest(ModelRef("tiny"))["version"] == "1"
    assert "unreachable" in caplog.text and "tiny resolves to version 1" in caplog.text, caplog.text
    assert setup.proxy.count("GET", "list-type") == 2, "one listing, tried twice (max_attempts=2)"


def test_name_alone_follows_new_versions_after_the_ttl(setup: Setup) -> None:
    worker = worker_registry(setup, newest_ttl_s=0.0)
    assert worker.manifest(ModelRef("tiny"))["version"] == "1"
    import_tiny(setup.admin)
    assert worker.manifest(ModelRef("tiny"))["version"] == "2"
    assert setup.admin.manifest(ModelRef("tiny"))["version"] == "2", "an import is seen at once by its registry"


def test_a_kept_manifest_rewrapped_by_a_rotation_is_read_again_once(setup: Setup) -> None:
    worker = worker_registry(setup)
    old = worker.manifest(PINNED)["key_id"]
    # `keys rotate` in another process: a new key, every manifest rewrapped, the old key removed
    ring = Keyring.load(setup.keyring.path)
    new = ring.add_new_key()
    ring.save()
    Registry(setup.store, ring).rewrap(PINNED)
    ring.remove(old)
    ring.save()
    worker.keyring = Keyring.load(setup.keyring.path)  # the worker's keyring, reloaded
    setup.proxy.reset()
    assert worker.manifest(PINNED)["key_id"] == new
    assert setup.proxy.count("GET", "manifest.json") == 1, "read again once"
    setup.proxy.reset()
    assert worker.manifest(PINNED)["key_id"] == new and setup.proxy.count() == 0, "and kept again"


def test_a_manifest_no_key_opens_is_read_again_once_then_refused(setup: Setup, tmp_path: Path) -> None:
    worker = worker_registry(setup)
    worker.manifest(PINNED)
    stranger = Keyring(tmp_path / "stranger.json")
    stranger.add_new_key()
    worker.keyring = stranger
    setup.proxy.reset()
    with pytest.raises(UnknownKeyError):
        worker.manifest(PINNED)
    assert setup.proxy.count("GET", "manifest.json") == 1


def test_removing_a_version_forgets_it(setup: Setup) -> None:
    setup.admin.manifest(PINNED)
    setup.admin.remove(PINNED)
    with pytest.raises(ModelNotFound):
        setup.admin.manifest(PINNED)


def test_a_worker_gets_its_cached_engine_with_storage_down(setup: Setup, tmp_path: Path) -> None:
    """The goal: a job for a pinned version whose model is loaded runs without touching storage."""
    from ovbatch.batches import MemoryBatchStore
    from ovbatch.settings import Settings
    from ovbatch.workers.cache import ModelCache
    from ovbatch.workers.runtime import WorkerContext

    settings = Settings.from_env({"OVBATCH_STORAGE_URL": setup.store.url}, cwd=tmp_path)
    ctx = WorkerContext(
        settings=settings,
        registry=worker_registry(setup),
        batches=MemoryBatchStore(),
        core=None,
        device="CPU",
        hostname="w@test",
        cache=ModelCache(2, 1 << 30),
    )
    engine = ctx.engine("benchmark", "tiny@1", "CPU")  # benchmark engines load nothing up front
    setup.proxy.down = True
    setup.proxy.reset()
    assert ctx.engine("benchmark", "tiny@1", "CPU") is engine
    assert setup.proxy.count() == 0
