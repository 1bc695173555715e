"""A store behind a proxy that fails on purpose (faulty_s3.py), over the loopback S3 server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ovbatch.storage.s3 import S3Store
from tests.storage.faulty_s3 import FaultyS3

ATTEMPTS = 4  # what the faulty store is configured with: one try and three retries


@pytest.fixture
def faulty(s3_endpoint: str) -> Iterator[FaultyS3]:
    with FaultyS3(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def faulty_store(faulty: FaultyS3, s3_endpoint: str, aws_env: None) -> S3Store:
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return S3Store(bucket, "p", endpoint_url=faulty.url, max_attempts=ATTEMPTS)
