"""``s3://bucket/prefix`` backend over boto3 (AWS, MinIO, any S3-compatible store).

Credentials come from the standard AWS variables and files, which boto3 reads itself.
Large objects go up as a multipart upload, which S3 makes visible only when it completes.

Transient failures are retried. botocore's "standard" mode retries each request (HTTP 500, 502, 503,
504 and 429, throttling codes such as SlowDown, refused or reset connections, timeouts) with
exponential backoff and jitter; what it does not cover, a body that breaks off while it streams, is
resumed here from the byte reached, with a ranged GET pinned to the object's ETag. Past the last
attempt the error is a ``TransientStorageError`` naming the object and the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as URLLib3Error

from ovbatch.errors import ObjectExists, ObjectNotFound, StorageError, TransientStorageError
from ovbatch.storage.base import STREAM_CHUNK_BYTES, ChunkReader, ObjectStore, backoff_s, validate_key

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # per request (and per stretch of a streamed body), the first one included
CONNECT_TIMEOUT_S = 5  # an unreachable endpoint fails in seconds, not minutes
READ_TIMEOUT_S = 60
POOL_CONNECTIONS = 32  # job threads and multipart uploads share one client
CLIENTS_KEPT = 16

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "PriorRequestNotComplete", "OperationAborted",
}  # fmt: skip
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# what botocore raises when the network fails; a body read also raises urllib3's and the socket's own
_TRANSIENT_EXCEPTIONS = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_STREAM_ERRORS = (*_TRANSIENT_EXCEPTIONS, URLLib3Error, OSError)

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client(endpoint_url: str | None, max_attempts: int) -> Any:
    """This process's client for the endpoint, made once from a private ``boto3.session.Session``.

    boto3's default session is not thread-safe; a client is, once made. A session and its client cost
    about 11 MB and 65 ms, so the stores of one endpoint (one per job input, one per output folder)
    share one. A client made where no credentials were found is not kept: the next store looks again.
    """
    key = (os.getpid(), endpoint_url, max_attempts)  # a forked worker makes its own: sockets are not shared
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            session = boto3.session.Session()
            config = Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},  # the first one included
                max_pool_connections=POOL_CONNECTIONS,
                tcp_keepalive=True,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
            if session.get_credentials() is not None:
                if len(_clients) >= CLIENTS_KEPT:
                    _clients.pop(next(iter(_clients)))
                _clients[key] = client
        return client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, *, max_attempts: int = MAX_ATTEMPTS
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url
        self.max_attempts = max_attempts
        self.client = _client(endpoint_url, max_attempts)
        self.transfer = TransferConfig(
            multipart_threshold=STREAM_CHUNK_BYTES,
            multipart_chunksize=STREAM_CHUNK_BYTES,
            max_concurrency=4,
        )

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def where(self, key: str) -> str:
        return f"{key} in storage {self.url}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _error(self, exc: Exception, action: str, key: str) -> StorageError:
        where = self.where(key)
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code, status = _code(exc), meta.get("HTTPStatusCode")
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{key} not found in storage {self.url}")
            if code in _EXISTS:
                return ObjectExists(f"{key} already exists in storage {self.url}")
            text = f"cannot {action} {where}: {code} {err.get('Message', '')}".rstrip()
            if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
                attempts = int(meta.get("RetryAttempts", 0)) + 1
                return TransientStorageError(f"{text} (HTTP {status}; gave up after {attempts} attempts)")
            return StorageError(text)
        if isinstance(exc, _TRANSIENT_EXCEPTIONS):
            return TransientStorageError(f"cannot {action} {where}: {exc} (gave up after retrying)")
        return StorageError(f"cannot {action} {where}: {exc}")

    def get_object(self, key: str, start: int = 0, end: int | None = None, etag: str | None = None) -> Any:
        """The GET response for bytes ``start`` to ``end`` (exclusive; None: to the end), raw botocore errors."""
        kwargs: dict[str, Any] = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if etag:
            kwargs["IfMatch"] = etag
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)

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
            response = self.get_object(key)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "read", key) from exc
        return _reader(self, key, response, 0)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self.get_object(key, start, start + length)
        except ClientError as exc:
            if _code(exc) == "InvalidRange":
                return b""
            raise self._error(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "read", key) from exc
        with _reader(self, key, response, start) as stream:
            return stream.read()

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


def _reader(store: S3Store, key: str, response: Any, start: int) -> BinaryIO:
    return cast(BinaryIO, io.BufferedReader(ResumableBody(store, key, response, start), buffer_size=1 << 20))


class ResumableBody(io.RawIOBase):
    """The body of a GET that outlives a broken connection.

    A read that fails mid-stream (a reset, a read timeout, a body cut short) reopens at the byte
    reached, with a ranged GET pinned to the object's ETag, after a backoff. ``max_attempts`` failures
    in a row without a byte of progress give up with a ``TransientStorageError``; an object replaced
    meanwhile is one too (reading it again from the start gives the new one whole).
    """

    def __init__(self, store: S3Store, key: str, response: Any, start: int) -> None:
        self._store, self._key = store, key
        self._body = response["Body"]
        self._etag = response.get("ETag")
        self._next = start  # the object offset of the next byte to read
        self._end = start + int(response["ContentLength"])
        self._failures = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._next < self._end and len(buffer):
            try:
                n = self._body.readinto(buffer)
                if not n:
                    raise IncompleteReadError(actual_bytes=self._next, expected_bytes=self._end)
            except _STREAM_ERRORS as exc:
                self._resume(exc)
                continue
            self._next += n
            self._failures = 0
            return n
        return 0

    def readall(self) -> bytes:
        out = bytearray(self._end - self._next)
        view, got = memoryview(out), 0
        while got < len(out) and (n := self.readinto(view[got:])):
            got += n
        view.release()
        return bytes(out[:got])

    def _resume(self, exc: BaseException) -> None:
        self._failures += 1
        with contextlib.suppress(Exception):
            self._body.close()
        where = self._store.where(self._key)
        if self._failures >= self._store.max_attempts:
            raise TransientStorageError(
                f"cannot read {where}: the download broke off at byte {self._next} of {self._end} "
                f"{self._failures} times in a row ({exc})"
            ) from exc
        log.warning("reading %s broke off at byte %d (%s); resuming", where, self._next, exc)
        time.sleep(backoff_s(self._failures))
        try:
            self._body = self._store.get_object(self._key, self._next, self._end, self._etag)["Body"]
        except ClientError as err:
            if _code(err) in ("PreconditionFailed", "412"):
                raise TransientStorageError(f"{where} was replaced while it was being read; read it again") from err
            raise self._store._error(err, "read", self._key) from err
        except BotoCoreError as err:
            raise self._store._error(err, "read", self._key) from err

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()
