"""No plaintext model on disk, ever: traced with strace, then proven by scanning for the bytes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC")
TRACED = "open,openat,openat2,creat,memfd_create,rename,renameat,renameat2,link,linkat,symlinkat,mknodat"


def needles(folder: Path) -> list[bytes]:
    """64-byte samples of every model file's plaintext, from places that are not all zeros."""
    found = []
    for path in folder.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        for offset in range(0, len(data), max(len(data) // 8, 1)):
            sample = data[offset : offset + 64]
            if len(sample) == 64 and len(set(sample)) > 16:
                found.append(sample)
    return found


def scan(roots: list[Path], samples: list[bytes]) -> list[str]:
    hits = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits += [f"{path} holds plaintext bytes" for s in samples if s in data][:1]
    return hits


def traced_writes(log: Path, home: Path) -> list[str]:
    writes = []
    for line in log.read_text().splitlines():
        if "= -1" in line:
            continue
        call = line.split(None, 1)[-1]
        if call.startswith(("memfd_create", "rename", "link", "symlink", "mknod", "creat")):
            writes.append(call)
        elif call.startswith("open") and WRITE_FLAGS.search(call):
            path = call.split('"')[1]
            # OpenVINO's telemetry keeps a usage counter in ~/intel; it is scanned for model bytes below
            if path in ("/dev/null", "/dev/tty") or path.startswith(str(home / "intel")):
                continue
            writes.append(call)
    return writes


def run_traced(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """``command`` under strace (file-creating and opening calls of every thread into ``log``); it must succeed."""
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(log), *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{' '.join(command[1:3])} failed under strace:\n{done.stdout}\n{done.stderr}"
    return done


def verify_under_strace(tmp_path: Path, registry: Registry, ref: str, source: Path) -> None:
    if not shutil.which("strace"):
        pytest.fail("strace is not installed: `make test` installs it (apt-get install strace)")
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    assert isinstance(registry.store, FileStore)
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "OVBATCH_STORAGE_URL": registry.store.url,
        "OVBATCH_KEYRING": str(registry.keyring.path),
    }
    log = tmp_path / "strace.log"
    done = run_traced([OVBATCH, "models", "verify", ref], env, tmp_path, log)
    assert f"verified {ref}" in done.stdout
    writes = traced_writes(log, home)
    assert not writes, "verify opened files for writing:\n" + "\n".join(writes)
    samples = needles(source)
    assert samples, "no plaintext samples to look for"
    hits = scan([registry.store.root, tmp, home, tmp_path, Path("/dev/shm")], samples)
    assert not hits, "plaintext model bytes found on disk:\n" + "\n".join(hits)


def test_verify_writes_nothing_and_leaves_no_plaintext(tmp_path: Path, tiny_ir: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    keyring.add_new_key()
    keyring.save()
    registry = Registry(FileStore(tmp_path / "storage"), keyring)
    registry.import_folder(tiny_ir, "tiny")
    # the source folder itself is plaintext by nature; move it out of the scanned tree
    source = tmp_path.parent / f"{tmp_path.name}-source"
    shutil.move(tiny_ir, source)
    try:
        verify_under_strace(tmp_path, registry, "tiny@1", source)
    finally:
        shutil.rmtree(source)


def test_scanner_finds_plaintext_when_it_is_there(tmp_path: Path, tiny_ir: Path) -> None:
    """The scan above would catch a leak: a copied weights file is found."""
    leak = tmp_path / "tmp" / "leak.bin"
    leak.parent.mkdir()
    shutil.copy(tiny_ir / "openvino_model.bin", leak)
    assert scan([tmp_path / "tmp"], needles(tiny_ir))


def test_trace_catches_a_process_that_writes_a_file(tmp_path: Path) -> None:
    """The strace check above would catch a write: a process that writes a file is flagged."""
    log = tmp_path / "strace.log"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            f"trace={TRACED}",
            "-o",
            str(log),
            sys.executable,
            "-c",
            f"open({str(tmp_path / 'model.bin')!r}, 'wb').write(b'x')",
        ],
        check=True,
        timeout=60,
    )
    assert any("model.bin" in w for w in traced_writes(log, tmp_path / "home"))
