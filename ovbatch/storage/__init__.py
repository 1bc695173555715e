"""Object storage: ``file://DIR`` (embedded default) and ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from ovbatch.errors import ConfigError
from ovbatch.storage.base import ObjectStore


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> ObjectStore:
    """The backend for a storage URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"storage URL {url!r}: file:// URLs take a local path (file:///abs/dir)")
        return _file_store(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"storage URL {url!r}: name a bucket, as in s3://bucket/prefix")
        from ovbatch.storage.s3 import S3Store  # boto3 import is slow; only S3 users pay it

        return S3Store(parts.netloc, parts.path, endpoint_url=s3_endpoint_url)
    raise ConfigError(f"storage URL {url!r}: scheme must be file:// or s3://")


def _file_store(root: Path) -> ObjectStore:
    from ovbatch.storage.file import FileStore

    return FileStore(root)


__all__ = ["ObjectStore", "open_store"]


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b.wav`` -> (``s3://bucket/a/``, ``b.wav``): the store holding an object, and its key."""
    head, _, name = url.rstrip("/").rpartition("/")
    if not name or "://" not in head + "/":
        raise ConfigError(f"{url!r} does not name an object")
    return head + "/", name


def open_object(url: str, *, s3_endpoint_url: str | None = None) -> BinaryIO:
    """A readable stream over the object at ``url`` (``file://`` or ``s3://``)."""
    root, key = split_url(url)
    return open_store(root, s3_endpoint_url=s3_endpoint_url).open(key)
