"""The storage contract, run against both real backends (file:// and S3 over HTTP)."""

from __future__ import annotations

import os

import pytest

from ovbatch.errors import ObjectExists, ObjectNotFound, StorageError
from ovbatch.storage import ObjectStore


def test_put_get_range_exists_list_delete(store: ObjectStore) -> None:
    store.put_bytes("a/b/one.bin", b"0123456789")
    store.put_stream("a/two.bin", [b"ab", memoryview(b"cd"), b""])
    store.put_bytes("z.bin", b"z")
    assert store.get_bytes("a/b/one.bin") == b"0123456789"
    assert store.get_bytes("a/two.bin") == b"abcd"
    assert store.get_range("a/b/one.bin", 3, 4) == b"3456"
    assert store.get_range("a/b/one.bin", 8, 10) == b"89", "a range past the end returns what exists"
    assert store.size("a/b/one.bin") == 10
    assert store.exists("a/two.bin") and not store.exists("a/three.bin")
    assert list(store.list("a/")) == ["a/b/one.bin", "a/two.bin"]
    assert list(store.list()) == ["a/b/one.bin", "a/two.bin", "z.bin"]
    store.delete("a/two.bin")
    store.delete("a/two.bin")  # deleting a missing key is not an error
    assert list(store.list("a/")) == ["a/b/one.bin"]


def test_missing_key_is_object_not_found(store: ObjectStore) -> None:
    for op in (lambda: store.get_bytes("nope"), lambda: store.size("nope"), lambda: store.open("nope")):
        with pytest.raises(ObjectNotFound, match="nope not found in storage"):
            op()


def test_create_only_write_refuses_an_existing_key(store: ObjectStore) -> None:
    store.put_bytes("m.json", b"first", if_absent=True)
    with pytest.raises(ObjectExists, match="m.json already exists"):
        store.put_bytes("m.json", b"second", if_absent=True)
    assert store.get_bytes("m.json") == b"first"


def test_overwrite_replaces_whole_object(store: ObjectStore) -> None:
    store.put_bytes("k", b"old" * 1000)
    store.put_bytes("k", b"new")
    assert store.get_bytes("k") == b"new"


def test_crash_mid_write_leaves_the_old_object(store: ObjectStore) -> None:
    store.put_bytes("obj", b"old version")

    def dying_writer():  # type: ignore[no-untyped-def]
        yield os.urandom(9 << 20)  # past the multipart threshold on S3
        raise RuntimeError("writer died")

    with pytest.raises((RuntimeError, StorageError)):
        store.put_stream("obj", dying_writer())
    assert store.get_bytes("obj") == b"old version", "a failed write must not replace the object"
    assert list(store.list()) == ["obj"], "a failed write must leave no partial object behind"


def test_crash_mid_write_of_a_new_key_leaves_none(store: ObjectStore) -> None:
    def dying_writer():  # type: ignore[no-untyped-def]
        yield b"partial"
        raise RuntimeError("writer died")

    with pytest.raises((RuntimeError, StorageError)):
        store.put_stream("fresh", dying_writer())
    assert not store.exists("fresh")


def test_large_object_streams_in_chunks(store: ObjectStore) -> None:
    data = os.urandom(20 << 20)
    chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    assert store.put_stream("big.bin", chunks) == len(data)
    with store.open("big.bin") as stream:
        first = stream.read(1 << 20)
        rest = stream.read()
    assert first + rest == data
    assert store.get_range("big.bin", 15 << 20, 16) == data[15 << 20 : (15 << 20) + 16]


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_keys_cannot_escape_the_root(store: ObjectStore, bad: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        store.put_bytes(bad, b"x")
