"""The keyring: key-encryption keys (KEKs) in a JSON file readable by its owner only.

    {"format": 1, "active": "<key id>", "keys": {"<key id>": {"key": "<base64>", "created": "..."}}}

Key material never leaves this module except into ``envelope`` wrap/unwrap calls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ovbatch.errors import KeyringError, UnknownKeyError

KEY_BYTES = 32


@dataclass
class Keyring:
    path: Path
    active: str | None = None
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"Keyring(path={str(self.path)!r}, active={self.active!r}, key_ids={sorted(self.keys)})"

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyringError(
                f"keyring {path} does not exist: create one with `ovbatch keys new` or point OVBATCH_KEYRING at yours"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"keyring {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyringError(
                f"keyring {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
            )
        try:
            data = json.loads(path.read_text())
        except PermissionError:
            raise KeyringError(f"keyring {path} is not readable by this user") from None
        except (OSError, ValueError) as exc:
            raise KeyringError(f"keyring {path} is not a valid keyring file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("keys"), dict):
            raise KeyringError(f"keyring {path} is not a valid keyring file (format 1 expected)")
        ring = cls(path=path, active=data.get("active"), keys=data["keys"])
        for kid in ring.keys:
            ring._key(kid)  # validate every entry now, not at first use
        if ring.active is not None and ring.active not in ring.keys:
            raise KeyringError(f"keyring {path}: active key {ring.active!r} is not in the file")
        return ring

    @classmethod
    def load_or_empty(cls, path: Path) -> Keyring:
        return cls.load(path) if path.exists() else cls(path=path)

    def _key(self, kid: str) -> bytes:
        entry = self.keys.get(kid)
        if entry is None:
            raise UnknownKeyError(f"key {kid!r} is not in keyring {self.path}")
        try:
            key = base64.b64decode(entry["key"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeyringError(f"keyring {self.path}: key {kid!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyringError(f"keyring {self.path}: key {kid!r} is not {KEY_BYTES} bytes")
        return key

    def key(self, kid: str) -> bytes:
        return self._key(kid)

    def active_key(self) -> tuple[str, bytes]:
        if self.active is None:
            raise KeyringError(f"keyring {self.path} has no active key: run `ovbatch keys new`")
        return self.active, self._key(self.active)

    def add_new_key(self) -> str:
        """Make a fresh random KEK, make it active, and return its id."""
        kid = "kek-" + secrets.token_hex(8)
        self.keys[kid] = {
            "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.active = kid
        return kid

    def remove(self, kid: str) -> None:
        self.keys.pop(kid, None)

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
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
        except OSError as exc:
            raise KeyringError(f"cannot write keyring {self.path}: {exc}") from exc
