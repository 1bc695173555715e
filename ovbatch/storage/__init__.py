"""Object storage: ``file://DIR`` (embedded default) and ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
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
