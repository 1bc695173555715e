from __future__ import annotations

import base64
import json
import os
import re
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ovbatch.crypto import envelope
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


# -- following the file: rotation while a worker runs -------------------------------------------


def writer_of(ring: Keyring) -> Keyring:
    """Another process's view of the same file (``keys rotate`` in a shell next to the worker)."""
    return Keyring.load(ring.path)


def wrapped(ring: Keyring, name: str = "m") -> tuple[dict, bytes]:
    data_key = envelope.new_data_key()
    manifest = {"name": name, "version": "1"}
    manifest.update(envelope.wrap(ring, data_key, name, "1"))
    return manifest, data_key


def test_a_loaded_keyring_learns_a_rotated_key_when_it_meets_it(keyring: Keyring) -> None:
    old = keyring.active
    rotator = writer_of(keyring)
    new = rotator.add_new_key()
    rotator.save()
    manifest, data_key = wrapped(rotator)
    assert new not in keyring.keys  # read before the rotation
    assert envelope.unwrap(keyring, manifest) == data_key  # unknown id: re-read the file
    assert keyring.active == new and keyring.state(old or "") == "retired"
    assert keyring.active_key()[0] == new


def test_active_key_follows_the_file(keyring: Keyring) -> None:
    rotator = writer_of(keyring)
    new = rotator.add_new_key()
    rotator.save()
    assert keyring.active_key()[0] == new  # an import wraps with the key the file says is active


def test_an_unchanged_file_is_not_read_again(keyring: Keyring) -> None:
    assert not keyring.reload_if_changed()
    with pytest.raises(UnknownKeyError, match="kek-nope"):
        keyring.key("kek-nope")
    writer_of(keyring).save()  # same content, new inode: read once
    assert keyring.reload_if_changed() and not keyring.reload_if_changed()


def test_a_kubernetes_secret_update_is_seen_through_its_symlinks(tmp_path: Path) -> None:
    """kubelet writes each version into a fresh folder and swaps the ``..data`` symlink."""
    mount = tmp_path / "secrets"

    def publish(ring: Keyring, version: str) -> None:
        folder = mount / f"..{version}"
        folder.mkdir(parents=True)
        ring.path = folder / "keyring.json"
        ring.save()
        (mount / "..data_tmp").symlink_to(folder.name)
        os.replace(mount / "..data_tmp", mount / "..data")

    source = Keyring(tmp_path / "unused.json")
    first = source.add_new_key()
    publish(source, "v1")
    (mount / "keyring.json").symlink_to("..data/keyring.json")
    worker = Keyring.load(mount / "keyring.json")
    assert worker.active == first
    second = source.add_new_key()
    publish(source, "v2")
    manifest, data_key = wrapped(source)
    assert envelope.unwrap(worker, manifest) == data_key and worker.active == second


def test_threads_asking_during_rotations_all_get_their_keys(keyring: Keyring) -> None:
    """Job threads unwrap while another process rotates again and again: none sees a missing key."""
    manifests = [wrapped(keyring)]
    done = threading.Event()
    failures: list[BaseException] = []

    def rotate_repeatedly() -> None:
        try:
            for _ in range(30):
                with Keyring.editing(keyring.path) as rotator:
                    rotator.add_new_key()
                manifests.append(wrapped(rotator))
        finally:
            done.set()

    def unwrap_repeatedly() -> None:
        try:
            while not done.is_set():
                for manifest, data_key in list(manifests):
                    assert envelope.unwrap(keyring, manifest) == data_key
                kid, _ = keyring.active_key()
                assert kid in keyring.keys
        except BaseException as exc:  # reported below, with the thread's traceback
            failures.append(exc)

    readers = [threading.Thread(target=unwrap_repeatedly) for _ in range(8)]
    for t in readers:
        t.start()
    rotate_repeatedly()
    for t in readers:
        t.join(timeout=60)
    assert not failures, failures[0]
    assert all(envelope.unwrap(keyring, m) == k for m, k in manifests)
    assert len(keyring.keys) == 31 and keyring.active == Keyring.load(keyring.path).active


def test_concurrent_askers_read_a_changed_file_once(keyring: Keyring) -> None:
    rotator = writer_of(keyring)
    new = rotator.add_new_key()
    rotator.save()
    start = threading.Barrier(16)
    reloaded: list[bool] = []
    keys: list[bytes] = []

    def ask() -> None:
        start.wait()
        reloaded.append(keyring.reload_if_changed())
        keys.append(keyring.key(new))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert reloaded.count(True) == 1 and len(set(keys)) == 1 and keys[0] == rotator.key(new)


def replace_file(path: Path, content: str, mode: int = 0o600) -> None:
    """Swap in a new file the way a writer does (rename), with the given content and mode."""
    tmp = path.with_name("incoming")
    tmp.write_text(content)
    tmp.chmod(mode)
    os.replace(tmp, path)


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        ('{"format": 1, "active": "kek-x", "ke', 0o600, "not a valid keyring file"),
        ('{"format": 1, "active": "kek-x", "keys": {"kek-x": {"key": "AAAA"}}}', 0o600, "not 32 bytes"),
        ("{}", 0o644, "readable by others"),
        (None, 0o600, "does not exist"),
    ],
    ids=["half-written", "short-key", "world-readable", "deleted"],
)
def test_a_bad_rewrite_keeps_the_old_keys_and_says_so(
    keyring: Keyring, content: str | None, mode: int, why: str
) -> None:
    old, old_key = keyring.active_key()
    manifest, data_key = wrapped(keyring)
    if content is None:
        keyring.path.unlink()
    else:
        replace_file(keyring.path, content, mode)
    assert envelope.unwrap(keyring, manifest) == data_key  # a known key needs no file
    with pytest.raises(KeyringError, match=f"keyring {re.escape(str(keyring.path))}.*{why}.*still using the 1 key"):
        keyring.key("kek-new")
    with pytest.raises(KeyringError, match=why):
        keyring.active_key()  # which key is active now is unknown: no wrap with a guess
    assert keyring.active == old and keyring.key(old) == old_key
    good = Keyring(keyring.path)
    good.keys, good.active = dict(keyring.keys), old
    new = good.add_new_key()
    good.save()  # the writer fixes the file: the next ask takes it
    assert keyring.active_key()[0] == new


def test_unsaved_edits_are_not_replaced_by_the_file(keyring: Keyring) -> None:
    mine = keyring.add_new_key()
    other = writer_of(keyring)
    other.add_new_key()
    other.save()
    assert keyring.active_key()[0] == mine


# -- states: staged, active, retired ---------------------------------------------------------------


def test_activate_retires_the_others_and_keeps_them(keyring: Keyring) -> None:
    old = keyring.active or ""
    staged = keyring.stage_new_key()
    assert keyring.state(staged) == "staged" and keyring.staged() == staged and keyring.active == old
    assert keyring.activate(staged) == [old]
    keyring.save()
    ring = Keyring.load(keyring.path)
    assert ring.active == staged and ring.state(old) == "retired" and ring.staged() is None
    retired_at = ring.retired_at(old)
    assert retired_at is not None and abs((datetime.now(UTC) - retired_at).total_seconds()) < 60
    assert ring.key(old) == keyring.key(old)


@pytest.mark.parametrize(
    ("entry", "active", "why"),
    [
        ({"retired": "yesterday"}, None, "retired time that is not ISO 8601"),
        ({"retired": "2026-01-01T00:00:00+00:00"}, "k", "active key 'k' is marked retired"),
    ],
)
def test_bad_states_are_clear_errors(tmp_path: Path, entry: dict, active: str | None, why: str) -> None:
    path = tmp_path / "keyring.json"
    key = base64.b64encode(bytes(32)).decode()
    path.write_text(json.dumps({"format": 1, "active": active, "keys": {"k": {"key": key, **entry}}}))
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=why):
        Keyring.load(path)


def test_two_editors_never_overlap(keyring: Keyring) -> None:
    with Keyring.editing(keyring.path) as ring:
        ring.add_new_key()
        busy = "being changed by another `ovbatch keys` command"
        with pytest.raises(KeyringError, match=busy), Keyring.editing(keyring.path):
            pass
    assert len(Keyring.load(keyring.path).keys) == 2


def test_editing_needs_an_existing_keyring_unless_creating(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"), Keyring.editing(tmp_path / "k" / "keyring.json"):
        pass
    assert not (tmp_path / "k").exists()
    with Keyring.editing(tmp_path / "k" / "keyring.json", create=True) as ring:
        kid = ring.add_new_key()
    assert Keyring.load(tmp_path / "k" / "keyring.json").active == kid
