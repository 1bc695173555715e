"""Imports killed half way: a real process SIGKILLed after writing part of a version leaves no visible
version; its leftovers are found, named and removed (by the next import of the name on this host, or
by ``ovbatch models clean``), while imports still running and recent ones of other hosts are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry import refs
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.conftest import build_tiny_ir

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))

KILLED_IMPORT = """
import os, signal, sys
from pathlib import Path
from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore

registry = Registry(FileStore(Path(sys.argv[1])), Keyring.load(Path(sys.argv[2])))
put_stream = registry.store.put_stream

def stored_then_killed(key, chunks):  # the first encrypted file is stored: the process dies here
    put_stream(key, chunks)
    os.kill(os.getpid(), signal.SIGKILL)

registry.store.put_stream = stored_then_killed
registry.import_folder(Path(sys.argv[3]), "tiny")
"""


def setup(tmp_path: Path) -> tuple[Registry, Path, dict[str, str]]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(tmp_path / "storage"), ring)
    env = {**os.environ, "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
    return registry, build_tiny_ir(tmp_path / "src"), env


def kill_an_import(registry: Registry, src: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(tmp_path / "storage"), str(registry.keyring.path), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, f"the import should have been killed mid-way: rc {done.returncode}\n{done.stderr}"


def test_a_killed_import_leaves_nothing_visible_and_the_next_import_on_this_host_clears_it(tmp_path: Path) -> None:
    registry, src, env = setup(tmp_path)
    registry.import_folder(src, "tiny")
    kill_an_import(registry, src, tmp_path)
    assert registry.versions("tiny") == ["1"], "a killed import must not be visible"
    (left,) = registry.unfinished_imports()
    assert (left.name, left.version, left.state) == ("tiny", "2", "dead"), left
    assert any(k.endswith(".enc") for k in left.keys), f"the killed import had stored a file: {left.keys}"
    assert left.owner["pid"] != os.getpid() and left.age_s is not None and left.age_s < 60
    listing = subprocess.run([OVBATCH, "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert "1 unfinished import" in listing.stderr and "ovbatch models clean" in listing.stderr, listing.stderr
    listed, real_list = [], registry.store.list
    registry.store.list = lambda prefix: listed.append(prefix) or real_list(prefix)  # type: ignore[method-assign]
    manifest = registry.import_folder(src, "tiny")  # e.g. the quantization job rerun by the same worker
    registry.store.list = real_list  # type: ignore[method-assign]
    assert manifest["version"] == "2", "the dead import's number is taken again"
    folder = f"{refs.ROOT}/tiny/"
    assert listed.count(folder) == 1, f"one listing of {folder} should serve cleaning and numbering: {listed}"
    assert registry.unfinished_imports() == [] and registry.versions("tiny") == ["1", "2"]
    assert not list(registry.store.list(refs.reservation_key("tiny", "2"))), "the new version's reservation went"


def test_models_clean_removes_dead_and_old_leftovers_and_keeps_running_and_recent_ones(tmp_path: Path) -> None:
    registry, src, env = setup(tmp_path)
    kill_an_import(registry, src, tmp_path)  # tiny@1: dead, this host

    def reserve(name: str, owner: dict[str, object]) -> None:
        registry.store.put_bytes(refs.reservation_key(name, "1"), json.dumps(owner).encode())
        registry.store.put_bytes(refs.object_key(name, "1", "openvino_model.bin"), b"x" * 100)

    reserve("elsewhere-old", {"host": "another-host", "pid": 1, "start": "1", "at": time.time() - 30 * 3600})
    reserve("elsewhere-new", {"host": "another-host", "pid": 1, "start": "1", "at": time.time() - 2 * 3600})
    ticks = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    reserve("running", {"host": os.uname().nodename, "pid": os.getpid(), "start": ticks, "at": time.time() - 48 * 3600})
    states = {u.name: u.state for u in registry.unfinished_imports()}
    assert states == {"elsewhere-new": "unknown", "elsewhere-old": "unknown", "running": "running", "tiny": "dead"}

    def clean(*args: str) -> str:
        done = subprocess.run([OVBATCH, "models", "clean", *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    said = clean("--dry-run")
    assert "would remove" in said and len(registry.unfinished_imports()) == 4, "a dry run removes nothing"
    said = clean()
    assert {u.name for u in registry.unfinished_imports()} == {"elsewhere-new", "running"}, said
    assert "removed" in said and "tiny@1" in said and "elsewhere-old@1" in said, said
    clean("--older-than", "1")
    assert {u.name for u in registry.unfinished_imports()} == {"running"}, "an import still running is never touched"
    assert not list(registry.store.list("models/tiny/")) and not list(registry.store.list("models/elsewhere-new/"))
