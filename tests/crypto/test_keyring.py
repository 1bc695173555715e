from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import KeyringError, UnknownKeyError


def test_new_keyring_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "k" / "keyring.json")
    kid = ring.add_new_key()
    ring.save()
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    loaded = Keyring.load(ring.path)
    assert loaded.active == kid and loaded.key(kid) == ring.key(kid)


def test_repr_never_shows_key_material(keyring: Keyring) -> None:
    kid, key = keyring.active_key()
    entry = keyring.keys[kid]["key"]
    assert entry not in repr(keyring) and entry not in str(keyring)


def test_missing_keyring_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist: create one with `ovbatch keys new`"):
        Keyring.load(tmp_path / "nope.json")


def test_world_readable_keyring_is_refused(keyring: Keyring) -> None:
    keyring.path.chmod(0o644)
    with pytest.raises(KeyringError, match="readable by others .*chmod 600"):
        Keyring.load(keyring.path)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"format": 2, "keys": {}}',
        '{"format": 1, "keys": {"k": {"key": "!!"}}}',
        '{"format": 1, "keys": {"k": {"key": "AAAA"}}}',
        '{"format": 1, "active": "x", "keys": {}}',
    ],
)
def test_malformed_keyring_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=str(path)):
        Keyring.load(path)


def test_keyring_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="not a regular file"):
        Keyring.load(tmp_path)


def test_unknown_key_id(keyring: Keyring) -> None:
    with pytest.raises(UnknownKeyError, match="kek-nope"):
        keyring.key("kek-nope")


def test_empty_keyring_has_no_active_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"format": 1, "active": None, "keys": {}}))
    path.chmod(0o600)
    with pytest.raises(KeyringError, match="no active key"):
        Keyring.load(path).active_key()
