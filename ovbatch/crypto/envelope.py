"""Envelope keys: a fresh data key per model version, wrapped by a key-encryption key.

The wrapped key and the KEK id live in the manifest, so ``keys rotate`` rewraps the data key
without touching the encrypted files. The wrap is AES-256-GCM with the model name, version and
KEK id as associated data: a wrapped key copied into another manifest does not open.
A manifest MAC keyed from the data key covers everything but the wrap fields, so rotation keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import IntegrityError, UnknownKeyError, WrongKeyError

WRAP_FIELDS = ("key_id", "wrapped_key", "mac")


def _aad(model: str, version: str, kid: str) -> bytes:
    return b"\0".join([b"ovbatch/dek/v1", model.encode(), version.encode(), kid.encode()])


def new_data_key() -> bytes:
    return os.urandom(32)


def wrap(ring: Keyring, data_key: bytes, model: str, version: str) -> dict[str, str]:
    kid, kek = ring.active_key()
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, data_key, _aad(model, version, kid))
    return {"key_id": kid, "wrapped_key": base64.b64encode(nonce + sealed).decode()}


def unwrap(ring: Keyring, manifest: dict[str, Any]) -> bytes:
    model, version, kid = manifest["name"], manifest["version"], manifest["key_id"]
    try:
        kek = ring.key(kid)
    except UnknownKeyError as exc:  # names the key id; the model too, here
        raise UnknownKeyError(f"{model}@{version}: {exc}") from None
    try:
        raw = base64.b64decode(manifest["wrapped_key"], validate=True)
        return AESGCM(kek).decrypt(raw[:12], raw[12:], _aad(model, version, kid))
    except (InvalidTag, ValueError):
        raise WrongKeyError(
            f"{model}@{version}: the data key does not open with key {kid!r} from keyring "
            f"{ring.path} (wrong key, or the manifest's wrapped key was altered)"
        ) from None


def _mac_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ovbatch/manifest/v1").derive(data_key)


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k not in WRAP_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal_manifest(manifest: dict[str, Any], data_key: bytes) -> None:
    manifest["mac"] = hmac.new(_mac_key(data_key), _canonical(manifest), hashlib.sha256).hexdigest()


def check_manifest(manifest: dict[str, Any], data_key: bytes) -> None:
    expected = hmac.new(_mac_key(data_key), _canonical(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(manifest.get("mac", ""))):
        raise IntegrityError(
            f"{manifest.get('name')}@{manifest.get('version')}: manifest.json fails its MAC (tampered)"
        )
