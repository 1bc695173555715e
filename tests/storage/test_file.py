from __future__ import annotations

from pathlib import Path

import pytest

from ovbatch.errors import ConfigError, StorageError
from ovbatch.storage import open_store
from ovbatch.storage.file import FileStore


def test_unfinished_temp_files_are_invisible(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put_bytes("a/done", b"1")
    (tmp_path / "a" / ".other.tmp-123").write_bytes(b"half")
    assert list(store.list()) == ["a/done"]


def test_storage_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("not a dir")
    store = FileStore(tmp_path / "f")
    with pytest.raises(StorageError, match="not a directory"):
        list(store.list())
    with pytest.raises(StorageError, match="cannot create"):
        store.put_bytes("k", b"x")


def test_open_store_file_url(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    with pytest.raises(ConfigError, match="local path"):
        open_store("file://remotehost/x")
