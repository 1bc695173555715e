from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ovbatch.crypto import envelope
from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import IntegrityError, UnknownKeyError, WrongKeyError


def manifest_for(ring: Keyring, key: bytes, name: str = "m", version: str = "1") -> dict:
    m = {"name": name, "version": version, "files": [{"role": "a", "size": 1, "sha256": "00"}]}
    envelope.seal_manifest(m, key)
    m.update(envelope.wrap(ring, key, name, version))
    return m


def test_wrap_unwrap_and_mac(keyring: Keyring) -> None:
    key = envelope.new_data_key()
    m = manifest_for(keyring, key)
    assert envelope.unwrap(keyring, m) == key
    envelope.check_manifest(m, key)


def test_wrong_kek_for_the_id(keyring: Keyring, tmp_path: Path) -> None:
    m = manifest_for(keyring, envelope.new_data_key())
    other = Keyring(tmp_path / "other.json")  # same key id, different key material
    other.keys[m["key_id"]] = {"key": base64.b64encode(os.urandom(32)).decode()}
    with pytest.raises(WrongKeyError, match="m@1"):
        envelope.unwrap(other, m)


def test_unknown_kek_id(keyring: Keyring, tmp_path: Path) -> None:
    m = manifest_for(keyring, envelope.new_data_key())
    empty = Keyring(tmp_path / "empty.json")
    with pytest.raises(UnknownKeyError, match=m["key_id"]):
        envelope.unwrap(empty, m)


def test_wrapped_key_moved_to_another_manifest_fails(keyring: Keyring) -> None:
    a = manifest_for(keyring, envelope.new_data_key(), "a", "1")
    b = manifest_for(keyring, envelope.new_data_key(), "b", "1")
    b["wrapped_key"] = a["wrapped_key"]
    with pytest.raises(WrongKeyError, match="b@1"):
        envelope.unwrap(keyring, b)


def test_manifest_mac_catches_edits_and_survives_rewrap(keyring: Keyring) -> None:
    key = envelope.new_data_key()
    m = manifest_for(keyring, key)
    keyring.add_new_key()
    m.update(envelope.wrap(keyring, key, "m", "1"))  # rotation changes only the wrap fields
    envelope.check_manifest(m, key)
    m["files"][0]["sha256"] = "ff"
    with pytest.raises(IntegrityError, match="m@1: manifest.json fails its MAC"):
        envelope.check_manifest(m, key)
