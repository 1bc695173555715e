"""Transient S3 failures, injected as real HTTP by a proxy in front of the loopback S3 server."""

from __future__ import annotations

import os
import threading

import boto3
import pytest

from ovbatch.errors import ObjectNotFound, StorageError, TransientStorageError
from ovbatch.storage.s3 import S3Store
from tests.storage.conftest import ATTEMPTS
from tests.storage.faulty_s3 import FaultyS3


def test_slowdown_then_success_is_retried_as_configured(faulty_store: S3Store, faulty: FaultyS3) -> None:
    faulty_store.put_bytes("a.bin", b"payload")
    faulty.fail("GET", "/p/a.bin", times=ATTEMPTS - 1, code="SlowDown")
    assert faulty_store.get_bytes("a.bin") == b"payload"
    assert faulty.count("GET", "/p/a.bin") == ATTEMPTS, "every configured attempt is used, and no more"


@pytest.mark.parametrize("method", ["HEAD", "PUT"])
def test_5xx_then_success_on_stat_and_write(faulty_store: S3Store, faulty: FaultyS3, method: str) -> None:
    faulty_store.put_bytes("b.bin", b"x" * 100)
    faulty.fail(method, "/p/b.bin", times=2, status=500, code="InternalError")
    if method == "HEAD":
        assert faulty_store.size("b.bin") == 100
    else:
        faulty_store.put_bytes("b.bin", b"new")
        assert faulty_store.get_bytes("b.bin") == b"new"
    assert faulty.count(method, "/p/b.bin") == 1 + 3 - (method == "HEAD"), faulty.seen


def test_persistent_503_is_a_retryable_error_naming_the_key(faulty_store: S3Store, faulty: FaultyS3) -> None:
    faulty_store.put_bytes("models/m/1/manifest.json", b"{}")
    faulty.fail("GET", "manifest.json", times=1000, code="ServiceUnavailable")
    with pytest.raises(TransientStorageError) as caught:
        faulty_store.get_bytes("models/m/1/manifest.json")
    message = str(caught.value)
    assert "cannot read models/m/1/manifest.json in storage s3://" in message and faulty.url in message
    assert f"ServiceUnavailable injected by the test proxy (HTTP 503; gave up after {ATTEMPTS} attempts)" in message
    assert caught.value.retryable and isinstance(caught.value, StorageError)
    assert faulty.count("GET", "manifest.json") == ATTEMPTS


def test_persistent_throttling_of_a_listing_and_a_write(faulty_store: S3Store, faulty: FaultyS3) -> None:
    faulty.fail("*", "/", times=1000, status=503, code="ServiceUnavailable")
    with pytest.raises(TransientStorageError, match="cannot list / in storage"):
        list(faulty_store.list())
    with pytest.raises(TransientStorageError, match="cannot write k.bin in storage"):
        faulty_store.put_bytes("k.bin", b"1")


def test_missing_and_forbidden_are_not_transient(faulty_store: S3Store, faulty: FaultyS3) -> None:
    with pytest.raises(ObjectNotFound):
        faulty_store.get_bytes("nope")
    faulty.fail("GET", "/p/secret", times=1000, status=403, code="AccessDenied")
    with pytest.raises(StorageError, match="AccessDenied") as caught:
        faulty_store.get_bytes("secret")
    assert not isinstance(caught.value, TransientStorageError)
    assert faulty.count("GET", "/p/secret") == 1, "a refusal is not retried"


def test_a_connection_reset_mid_body_resumes_where_it_broke(faulty_store: S3Store, faulty: FaultyS3) -> None:
    data = os.urandom(3 << 20)
    faulty_store.put_bytes("big.bin", data)
    etag = faulty_store.client.head_object(Bucket=faulty_store.bucket, Key="p/big.bin")["ETag"]
    faulty.fail("GET", "/p/big.bin", times=1, cut_body=True)
    with faulty_store.open("big.bin") as stream:
        got = b"".join(iter(lambda: stream.read(1 << 16), b""))
    assert got == data
    gets = [s for s in faulty.seen if s.method == "GET"]
    assert len(gets) == 2, gets
    resumed = {k.lower(): v for k, v in gets[1].headers.items()}
    start = int(resumed["range"].removeprefix("bytes=").split("-")[0])
    assert 0 < start < len(data) and resumed["if-match"] == etag, resumed


def test_a_range_read_resumes_too(faulty_store: S3Store, faulty: FaultyS3) -> None:
    data = os.urandom(1 << 20)
    faulty_store.put_bytes("r.bin", data)
    faulty.fail("GET", "/p/r.bin", times=2, cut_body=True)
    assert faulty_store.get_range("r.bin", 1000, 500_000) == data[1000:501_000]
    assert faulty.count("GET", "/p/r.bin") == 3


def test_a_body_that_keeps_breaking_gives_up(faulty_store: S3Store, faulty: FaultyS3) -> None:
    faulty_store.put_bytes("flaky.bin", os.urandom(1 << 20))
    faulty.fail("GET", "/p/flaky.bin", times=1000, cut_body=True)
    with pytest.raises(TransientStorageError, match=r"cannot read flaky.bin in storage .* broke off at byte"):
        faulty_store.get_bytes("flaky.bin")
    assert faulty.count("GET", "/p/flaky.bin") == ATTEMPTS


def test_an_object_replaced_while_read_is_not_spliced(
    faulty_store: S3Store, faulty: FaultyS3, s3_endpoint: str
) -> None:
    faulty_store.put_bytes("v.bin", os.urandom(1 << 20))
    faulty.fail("GET", "/p/v.bin", times=1, cut_body=True)
    stream = faulty_store.open("v.bin")
    direct = boto3.client("s3", endpoint_url=s3_endpoint)
    direct.put_object(Bucket=faulty_store.bucket, Key="p/v.bin", Body=os.urandom(1 << 20))
    with stream, pytest.raises(TransientStorageError, match="v.bin in storage .* was replaced while it was being read"):
        stream.read()


def test_stores_of_an_endpoint_share_one_thread_safe_client(faulty_store: S3Store, faulty: FaultyS3) -> None:
    other = S3Store(faulty_store.bucket, "q", endpoint_url=faulty.url, max_attempts=ATTEMPTS)
    assert other.client is faulty_store.client, "one client per endpoint, made once"
    assert boto3.DEFAULT_SESSION is None or other.client is not boto3.DEFAULT_SESSION.client
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            store = S3Store(faulty_store.bucket, f"t{n}", endpoint_url=faulty.url, max_attempts=ATTEMPTS)
            for i in range(5):
                store.put_bytes(f"k{i}", f"{n}-{i}".encode())
                assert store.get_bytes(f"k{i}") == f"{n}-{i}".encode()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
