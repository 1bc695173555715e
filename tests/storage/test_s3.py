"""S3 specifics, over HTTP against a real S3 server on loopback."""

from __future__ import annotations

import os

import boto3
import pytest

from ovbatch.errors import StorageError
from ovbatch.storage import open_store
from ovbatch.storage.s3 import S3Store
from tests.conftest import free_port


def test_large_object_goes_up_as_a_multipart_upload(s3_store: S3Store) -> None:
    data = os.urandom(20 << 20)
    s3_store.put_stream("model.bin.enc", [data[: 7 << 20], data[7 << 20 :]])
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store.prefix + "model.bin.enc")
    assert s3_store.get_bytes("model.bin.enc") == data, "multipart upload lost or reordered bytes"
    assert head["ETag"].strip('"').endswith("-3"), f"expected a 3-part multipart upload, ETag {head['ETag']}"
    assert s3_store.get_bytes("model.bin.enc") == data


def test_prefix_is_respected(s3_store: S3Store, s3_endpoint: str) -> None:
    s3_store.put_bytes("x", b"1")
    raw = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_store.bucket)
    assert [o["Key"] for o in raw["Contents"]] == ["ovbatch/prefix/x"]


def test_open_store_builds_s3_from_url(s3_endpoint: str, aws_env: None) -> None:
    store = open_store("s3://some-bucket/a/b", s3_endpoint_url=s3_endpoint)
    assert isinstance(store, S3Store) and store.url == "s3://some-bucket/a/b/"


def test_missing_bucket_is_a_clear_error(s3_endpoint: str, aws_env: None) -> None:
    store = S3Store("no-such-bucket", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="no-such-bucket"):
        list(store.list())


def test_unreachable_endpoint_is_a_clear_error(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    store = S3Store("bucket", endpoint_url=endpoint)
    with pytest.raises(StorageError, match=f"cannot list .* at {endpoint}"):
        list(store.list())
