"""Storage roots: the only places a worker reads inputs from and writes outputs to.

``OVBATCH_ALLOWED_ROOTS`` is a comma-separated list of URL prefixes (``s3://archive/calls/``,
``file:///srv/audio/``). A job naming an input or an ``--out`` outside every root fails alone with
the reason, before anything is read or written. Unset, a worker allows any path its credentials
reach and says so at start: set it on any fleet whose Redis others can reach.

``file://`` paths are compared after resolving symlinks and ``..`` (a link inside a root that points
out of it is outside); ``s3://`` URLs by bucket and key prefix, on ``/`` boundaries, and a key with
``.``/``..`` segments is refused (S3 takes them literally, a file system would not). The registry's
own uploads (``registry:...``) are always readable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ovbatch.errors import ConfigError, OutsideRootsError

REGISTRY = "registry:"


def _normal(url: str, *, config: bool) -> str:
    """A URL as a comparable prefix ending in ``/``: ``file:///real/path/``, ``s3://bucket/key/``."""
    error = ConfigError if config else OutsideRootsError
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise error(f"{url!r}: file:// URLs take a local path")
        path = os.path.realpath(unquote(parts.path) or "/")
        return "file://" + path.rstrip("/") + "/"
    if parts.scheme == "s3" and parts.netloc:
        key = unquote(parts.path).lstrip("/")
        if any(seg in (".", "..") for seg in key.split("/")):
            raise error(f"{url!r}: '.' and '..' are not allowed in S3 keys")
        return f"s3://{parts.netloc}/" + (key.rstrip("/") + "/" if key else "")
    raise error(f"{url!r}: not a file:// or s3:// URL")


@dataclass(frozen=True)
class Roots:
    prefixes: tuple[str, ...] = ()  # normalized; empty: everything allowed

    @classmethod
    def parse(cls, text: str | None) -> Roots:
        items = [t.strip() for t in (text or "").split(",") if t.strip()]
        return cls(tuple(_normal(t, config=True) for t in items))

    @property
    def restricted(self) -> bool:
        return bool(self.prefixes)

    def check(self, url: str, what: str) -> None:
        """Raise OutsideRootsError unless ``url`` (an input to read or an output folder) is under a root."""
        if url.startswith(REGISTRY) or not self.prefixes:
            return
        normal = _normal(url, config=False)
        if not any(normal.startswith(p) for p in self.prefixes):
            raise OutsideRootsError(
                f"{what} {url} is outside the storage roots this worker allows "
                f"(OVBATCH_ALLOWED_ROOTS={','.join(self.prefixes)})"
            )
