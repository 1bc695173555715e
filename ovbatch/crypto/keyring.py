"""The keyring: key-encryption keys (KEKs) in a JSON file readable by its owner only.

    {"format": 1, "active": "<key id>",
     "keys": {"<key id>": {"key": "<base64>", "created": "...", "retired": "..." | "staged": "..."}}}

A key is active (new wraps use it), staged (readers know it; nothing is wrapped with it yet),
retired (still opens what it wrapped, until ``ovbatch keys prune`` removes it) or, in files older
than retirement, simply inactive.

A loaded keyring follows its file: asked for a key id it does not hold, or for the active key, it
re-reads the file if it changed since it was read (a rotation, a Kubernetes secret update), so
running workers pick up a rotated keyring without a restart.

Key material never leaves this module except into ``envelope`` wrap/unwrap calls.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ovbatch.errors import KeyringError, UnknownKeyError

KEY_BYTES = 32
# what changes when the file is rewritten: an atomic rename or a symlink swap gives a new inode
Stamp = tuple[int, int, int, int]


@dataclass
class Keyring:
    path: Path
    active: str | None = None
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    # the file as last read or written; None for a keyring built in memory, which follows no file
    _stamp: Stamp | None = field(default=None, repr=False, compare=False)
    _unsaved: bool = field(default=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"Keyring(path={str(self.path)!r}, active={self.active!r}, key_ids={sorted(self.keys)})"

    @classmethod
    def load(cls, path: Path) -> Keyring:
        stamp, active, keys = _read(path)
        return cls(path=path, active=active, keys=keys, _stamp=stamp)

    @classmethod
    def load_or_empty(cls, path: Path) -> Keyring:
        return cls.load(path) if path.exists() else cls(path=path)

    @classmethod
    @contextlib.contextmanager
    def editing(cls, path: Path, *, create: bool = False) -> Iterator[Keyring]:
        """Load (or, with ``create``, start empty) under an exclusive lock, yield, and save any change
        when the block ends without an error: two ``ovbatch keys`` commands never undo each other's."""
        if not create:
            _read(path)  # a missing or broken keyring is named as such, before any lock file is made
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyringError(f"cannot lock keyring {path}: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KeyringError(
                    f"keyring {path} is being changed by another `ovbatch keys` command; run this one when it ends"
                ) from None
            ring = cls.load_or_empty(path) if create else cls.load(path)
            yield ring
            if ring._unsaved:
                ring.save()
        finally:
            os.close(fd)  # releases the lock

    # -- reading ------------------------------------------------------------------------------
    def key(self, kid: str) -> bytes:
        keys = self.keys  # no lock: a reload swaps in a new dict, never edits this one
        if kid not in keys:
            self.reload_if_changed()  # a rotation since this ring was read
            keys = self.keys
        return _decode(self.path, kid, keys.get(kid))

    def active_key(self) -> tuple[str, bytes]:
        self.reload_if_changed()
        with self._lock:  # active and keys from the same reading of the file
            kid, keys = self.active, self.keys
        if kid is None:
            raise KeyringError(f"keyring {self.path} has no active key: run `ovbatch keys new`")
        return kid, _decode(self.path, kid, keys.get(kid))

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since this ring read or wrote it; return whether it did.

        The path is stat-ed each time (not an open descriptor): a Kubernetes secret update swaps a
        symlink. A new file that fails validation leaves the keys as they were and raises.
        """
        if self._stamp is None or self._unsaved:
            return False  # built in memory, or holding edits a reload would throw away
        with self._lock:
            with contextlib.suppress(OSError):  # gone or unreadable: _read says which
                if _stamp_of(self.path.stat()) == self._stamp:
                    return False
            try:
                stamp, active, keys = _read(self.path)
            except KeyringError as exc:
                raise KeyringError(
                    f"{exc} (it changed since it was read; still using the {len(self.keys)} key(s) read before)"
                ) from None
            self.keys, self.active, self._stamp = keys, active, stamp  # keys first, for lock-free key()
            return True

    def state(self, kid: str) -> str:
        entry = self.keys[kid]
        if kid == self.active:
            return "active"
        if "retired" in entry:
            return "retired"
        return "staged" if "staged" in entry else "inactive"

    def staged(self) -> str | None:
        return next((kid for kid in sorted(self.keys) if self.state(kid) == "staged"), None)

    def retired_at(self, kid: str) -> datetime | None:
        return _retired_at(self.path, kid, self.keys[kid])

    # -- editing ------------------------------------------------------------------------------
    def stage_new_key(self) -> str:
        """Make a fresh random KEK that readers learn before anything is wrapped with it; return its id."""
        kid = "kek-" + secrets.token_hex(8)
        now = _now()
        key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
        self.keys[kid] = {"key": key, "created": now, "staged": now}
        self._unsaved = True
        return kid

    def activate(self, kid: str) -> list[str]:
        """Make ``kid`` the active key and retire every other key not retired yet; return those.

        Retired keys stay in the file: running workers and in-flight imports still use them."""
        _decode(self.path, kid, self.keys.get(kid))
        now = _now()
        newly_retired = []
        for other, entry in self.keys.items():
            if other != kid and "retired" not in entry:
                entry.pop("staged", None)
                entry["retired"] = now
                newly_retired.append(other)
        self.keys[kid].pop("staged", None)
        self.active = kid
        self._unsaved = True
        return newly_retired

    def add_new_key(self) -> str:
        """Make a fresh random KEK, make it active (retiring the previous one), and return its id."""
        kid = self.stage_new_key()
        self.activate(kid)
        return kid

    def remove(self, kid: str) -> None:
        self.keys.pop(kid, None)
        self._unsaved = True

    def save(self) -> None:
        """Write atomically with mode 0600 from the first byte (never briefly world-readable)."""
        payload = json.dumps({"format": 1, "active": self.active, "keys": self.keys}, indent=2).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(payload)
                    out.flush()
                    os.fsync(out.fileno())
                    stamp = _stamp_of(os.fstat(out.fileno()))  # the rename keeps inode, size and mtime
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
        except OSError as exc:
            raise KeyringError(f"cannot write keyring {self.path}: {exc}") from exc
        self._stamp, self._unsaved = stamp, False


def _read(path: Path) -> tuple[Stamp, str | None, dict[str, dict[str, str]]]:
    """Read and check the file; every problem is a ``KeyringError`` naming it."""
    try:  # non-blocking: a FIFO put in its place must not hang a worker
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyringError(
            f"keyring {path} does not exist: create one with `ovbatch keys new` or point OVBATCH_KEYRING at yours"
        ) from None
    except PermissionError:
        raise KeyringError(f"keyring {path} is not readable by this user") from None
    except OSError as exc:
        raise KeyringError(f"keyring {path} cannot be opened: {exc}") from None
    try:
        st = os.fstat(fd)  # the stamp and the checks describe the very file that is read
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"keyring {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyringError(
                f"keyring {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"keyring {path} is not a valid keyring file: {exc}") from None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("keys"), dict):
        raise KeyringError(f"keyring {path} is not a valid keyring file (format 1 expected)")
    active, keys = data.get("active"), data["keys"]
    for kid, entry in keys.items():  # every entry now, not at first use
        _decode(path, kid, entry)
        _retired_at(path, kid, entry)
    if active is not None and active not in keys:
        raise KeyringError(f"keyring {path}: active key {active!r} is not in the file")
    if active is not None and "retired" in keys[active]:
        raise KeyringError(f"keyring {path}: active key {active!r} is marked retired")
    return _stamp_of(st), active, keys


def _decode(path: Path, kid: str, entry: Any) -> bytes:
    if entry is None:
        raise UnknownKeyError(f"key {kid!r} is not in keyring {path}")
    try:
        key = base64.b64decode(entry["key"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise KeyringError(f"keyring {path}: key {kid!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"keyring {path}: key {kid!r} is not {KEY_BYTES} bytes")
    return key


def _retired_at(path: Path, kid: str, entry: dict[str, str]) -> datetime | None:
    if "retired" not in entry:
        return None
    try:
        at = datetime.fromisoformat(entry["retired"])
    except (TypeError, ValueError):
        raise KeyringError(f"keyring {path}: key {kid!r} has a retired time that is not ISO 8601") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stamp_of(st: os.stat_result) -> Stamp:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
