"""``s3://bucket/prefix`` backend over boto3 (AWS, MinIO, any S3-compatible store).

Credentials come from the standard AWS variables and files, which boto3 reads itself.
Large objects go up as a multipart upload, which S3 makes visible only when it completes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ovbatch.errors import ObjectExists, ObjectNotFound, StorageError
from ovbatch.storage.base import STREAM_CHUNK_BYTES, ChunkReader, ObjectStore, validate_key

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url
        # Fail fast on an unreachable endpoint instead of retrying for minutes.
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer = TransferConfig(
            multipart_threshold=STREAM_CHUNK_BYTES,
            multipart_chunksize=STREAM_CHUNK_BYTES,
            max_concurrency=4,
        )

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _error(self, exc: Exception, action: str, key: str) -> StorageError:
        where = f"{key} in storage {self.url}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{key} not found in storage {self.url}")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return ObjectExists(f"{key} already exists in storage {self.url}")
            return StorageError(f"cannot {action} {where}: {code} {err.get('Message', '')}".rstrip())
        return StorageError(f"cannot {action} {where}: {exc}")

    def put_stream(self, key: str, chunks: Iterable[bytes | memoryview]) -> int:
        reader = ChunkReader(chunks)
        # BufferedReader makes read(n) return n bytes unless at the end; s3transfer takes a short
        # read of a raw stream for the end of the object.
        buffered = io.BufferedReader(reader, buffer_size=1 << 20)
        try:
            self.client.upload_fileobj(buffered, self.bucket, self._key(key), Config=self.transfer)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "write", key) from exc
        except Exception as exc:  # s3transfer wraps failures in its own types
            raise StorageError(f"cannot write {key} in storage {self.url}: {exc}") from exc
        return reader.bytes_read

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        kwargs: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "write", key) from exc

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "read", key) from exc
        return cast(BinaryIO, response["Body"])

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            return cast(bytes, response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise self._error(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "read", key) from exc

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "stat", key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix) :]
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "list", prefix or "/") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "delete", key) from exc
