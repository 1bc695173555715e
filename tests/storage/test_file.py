from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovbatch.errors import ConfigError, StorageError, TransientStorageError
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


# A real full disk: a 256 KiB tmpfs mounted in a private user and mount namespace (no root needed,
# nothing mounted outside the child process). The child reports what it saw as JSON.
_FULL_DISK_CHILD = """
import json, os, sys
from pathlib import Path
from ovbatch.errors import StorageFullError
from ovbatch.storage.file import FileStore

root = Path(sys.argv[1]) / "store"
store = FileStore(root)
store.put_bytes("kept.bin", b"old")
store.put_bytes("over.bin", b"old")
errors = []
for write in (
    lambda: store.put_stream("a/big.bin", (b"\\0" * (64 << 10) for _ in range(16))),
    lambda: store.put_bytes("b.bin", b"\\0" * (1 << 20)),
    lambda: store.put_stream("over.bin", [b"\\0" * (1 << 20)]),
):
    try:
        write()
        errors.append(None)
    except StorageFullError as exc:
        errors.append(str(exc))
files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
print(json.dumps({"errors": errors, "files": files, "over": store.get_bytes("over.bin").decode()}))
"""


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_partial(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private tmpfs")
    done = subprocess.run(
        [*command, str(disk), sys.executable, _FULL_DISK_CHILD], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 and "mount" in done.stderr.lower() and "Traceback" not in done.stderr:
        pytest.skip(f"no user+mount namespace here for a real full disk: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    for error, name in zip(seen["errors"], ["a/big.bin", "b.bin", "over.bin"], strict=True):
        assert error is not None, f"writing {name} to a full disk must fail"
        assert f"cannot write {disk}/store/{name} in storage file://" in error
        assert "no space left (No space left on device); nothing was kept" in error
    assert seen["files"] == ["kept.bin", "over.bin"], "no temp file or partial object may be left"
    assert seen["over"] == "old", "a failed overwrite keeps the old object"


def test_transient_io_errors_are_retried_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO cannot be had from a real disk here: os.fsync (the OS boundary, not FileStore) fails instead."""
    store = FileStore(tmp_path / "s", max_attempts=3)
    real_fsync, failures = os.fsync, [2]

    def flaky_fsync(fd: int) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    store.put_bytes("a", b"1")  # two failures, then the third attempt
    assert store.get_bytes("a") == b"1" and failures == [0]
    failures[0] = 99
    with pytest.raises(
        TransientStorageError, match=r"cannot write .*/s/b in storage .*: Input/output error \(gave up after 3"
    ):
        store.put_bytes("b", b"2")
    with pytest.raises(TransientStorageError, match="a streamed write is not retried") as caught:
        store.put_stream("c", [b"3"])
    assert caught.value.retryable
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["a"], "no temp file may be left"
