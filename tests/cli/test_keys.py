"""``ovbatch keys rotate`` / ``prune`` against running readers: workers and imports that read the
keyring before the rotation keep working, and no key that a manifest uses is ever removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.process import die_with_parent
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.cli.test_cli import OVBATCH
from tests.conftest import build_tiny_ir


class Home:
    """One ``.ovbatch`` home: the ``ovbatch`` command run as a user runs it, and in-process readers
    of the same keyring file and storage (what a worker holds)."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
        self.ring_path = cwd / ".ovbatch" / "keyring.json"
        self.storage = cwd / ".ovbatch" / "storage"

    def __call__(self, *args: str, ok: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [OVBATCH, *args], cwd=self.cwd, env=self.env, input=stdin, capture_output=True, text=True, timeout=300
        )
        where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, where
        assert (done.returncode == 0) == ok, where
        return done

    def ring(self) -> dict[str, Any]:
        return dict(json.loads(self.ring_path.read_text()))

    def reader(self, ring_path: Path | None = None) -> Registry:
        """A registry as a worker builds it at start: the keyring is read now, once."""
        return Registry(FileStore(self.storage), Keyring.load(ring_path or self.ring_path))

    def key_of(self, ref: str) -> str:
        return str(
            Registry(FileStore(self.storage), Keyring(self.ring_path)).manifest(ModelRef.parse(ref), verify_mac=False)[
                "key_id"
            ]
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path)
    h("keys", "new")
    return h


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return build_tiny_ir(tmp_path / "src", hidden=16)


def decrypts(registry: Registry, ref: str) -> bool:
    decrypted = decrypt_version(registry, ModelRef.parse(ref), check_digests=True)
    decrypted.wipe()
    return True


def test_rotate_keeps_old_keys_and_running_readers_follow(home: Home, tiny: Path) -> None:
    home("models", "import", str(tiny), "--name", "tiny")
    old = home.ring()["active"]
    worker = home.reader()  # started before the rotation
    assert decrypts(worker, "tiny@1")
    before = {p: p.read_bytes() for p in home.storage.rglob("*.enc")}

    out = home("keys", "rotate").stdout
    assert "rewrapped 1 model version(s); retired 1 old key(s)" in out
    ring = home.ring()
    new = ring["active"]
    assert new != old and set(ring["keys"]) == {old, new} and "retired" in ring["keys"][old]
    assert home.key_of("tiny@1") == new
    assert {p: p.read_bytes() for p in home.storage.rglob("*.enc")} == before

    # job threads of the running worker meet the rewrapped manifest at once
    results: list[BaseException | bool] = []

    def job() -> None:
        try:
            results.append(decrypts(worker, "tiny@1"))
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [True] * 6, results
    assert worker.keyring.active == new
    listing = home("keys", "list").stdout
    assert f"* {new}" in listing and f"  {old}" in listing and "retired" in listing


def test_prune_waits_for_the_grace_period_then_removes_unused_keys(home: Home, tiny: Path) -> None:
    home("models", "import", str(tiny), "--name", "tiny")
    old = home.ring()["active"]
    home("keys", "rotate")
    worker = home.reader()

    waiting = home("keys", "prune", "--yes").stdout  # default grace: 24 h
    assert f"kept {old}: retired" in waiting and "no retired key to prune" in waiting
    assert old in home.ring()["keys"]

    asked = home("keys", "prune", "--older-than", "0s", stdin="n\n", ok=False)
    assert f"remove {old} from" in asked.stdout and "Aborted" in asked.stderr
    assert old in home.ring()["keys"]

    out = home("keys", "prune", "--older-than", "0s", "--yes").stdout
    assert f"removed 1 retired key(s): {old}" in out
    ring = home.ring()
    assert list(ring["keys"]) == [ring["active"]]
    assert decrypts(worker, "tiny@1")  # read before the prune: it holds the active key
    assert "verified tiny@1" in home("models", "verify", "tiny").stdout
    bad = home("keys", "prune", "--older-than", "soon", ok=False).stderr
    assert "'soon' is not a duration" in bad


def test_prune_keeps_a_key_a_version_still_needs_and_names_it(home: Home, tiny: Path) -> None:
    home("models", "import", str(tiny), "--name", "tiny")
    old = home.ring()["active"]
    # a manifest whose MAC no longer checks cannot be rewrapped: its key must stay
    manifest_path = home.storage / "models" / "tiny" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kind"] = "tampered"
    manifest_path.write_text(json.dumps(manifest))
    home("models", "import", str(tiny), "--name", "tiny")
    failed = home("keys", "rotate", ok=False)  # names it, and still rotates the others
    assert "rewrapped 1 model version(s)" in failed.stdout and "could not rewrap" in failed.stderr
    assert home.key_of("tiny@1") == old and home.key_of("tiny@2") == home.ring()["active"]

    err = home("keys", "prune", "--older-than", "0s", "--yes", ok=False).stderr
    assert f"kept, still in use:\n  {old}: tiny@1 (tiny@1: manifest.json fails its MAC" in err
    assert old in home.ring()["keys"]
    assert decrypts(home.reader(), "tiny@2")


def test_import_racing_a_rotation_stays_decryptable_and_prune_rewraps_it(home: Home, tiny: Path) -> None:
    """The import wraps its data key with the active key, then a rotation runs (and lists the
    versions) before the import's manifest is written: the version lands wrapped with a key that is
    already retired. It must still open, and prune must rewrap it before removing that key."""
    home("models", "import", str(tiny), "--name", "tiny")
    old = home.ring()["active"]

    class RotatesBeforeTheManifest(FileStore):
        def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
            if key.endswith("/manifest.json") and if_absent:
                home("keys", "rotate")
            super().put_bytes(key, data, if_absent=if_absent)

    importer = Registry(RotatesBeforeTheManifest(home.storage), Keyring.load(home.ring_path))
    importer.import_folder(tiny, "tiny")
    new = home.ring()["active"]
    assert new != old and home.key_of("tiny@2") == old and home.key_of("tiny@1") == new
    assert decrypts(home.reader(), "tiny@2")

    out = home("keys", "prune", "--older-than", "0s", "--yes").stdout
    assert f"removed 1 retired key(s): {old}" in out and list(home.ring()["keys"]) == [new]
    assert home.key_of("tiny@2") == new
    assert decrypts(home.reader(), "tiny@1") and decrypts(home.reader(), "tiny@2")


def test_import_from_a_stale_copy_of_the_keyring_is_found_by_prune(home: Home, tiny: Path) -> None:
    """A host whose copy of the keyring was not updated yet imports with the retired key."""
    copy = home.cwd / "copy" / "keyring.json"
    copy.parent.mkdir()
    shutil.copy2(home.ring_path, copy)
    old = home.ring()["active"]
    home("keys", "rotate")
    stale = home.reader(copy)
    stale.import_folder(tiny, "tiny")
    assert home.key_of("tiny@1") == old
    worker = home.reader()
    assert decrypts(worker, "tiny@1")
    home("keys", "prune", "--older-than", "0s", "--yes")
    assert home.key_of("tiny@1") == home.ring()["active"] and old not in home.ring()["keys"]
    assert decrypts(worker, "tiny@1")


def test_staged_rotation_for_copies_of_the_keyring(home: Home, tiny: Path) -> None:
    """Kubernetes: the staged key reaches every worker's copy before any manifest uses it."""
    home("models", "import", str(tiny), "--name", "tiny")
    old = home.ring()["active"]
    out = home("keys", "rotate", "--stage").stdout
    staged = home.ring()["keys"]
    (next_kid,) = set(staged) - {old}
    assert f"staged key {next_kid}" in out and home.ring()["active"] == old
    assert home.key_of("tiny@1") == old
    copy = home.cwd / "secret" / "keyring.json"  # the secret as distributed after --stage
    copy.parent.mkdir()
    shutil.copy2(home.ring_path, copy)
    worker = home.reader(copy)
    home("keys", "rotate")
    assert home.ring()["active"] == next_kid and home.key_of("tiny@1") == next_kid
    assert decrypts(worker, "tiny@1")  # its copy is one step behind, and enough


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_running_worker_serves_jobs_after_rotate_and_prune(home: Home, tiny: Path, redis_url: str) -> None:
    """A worker started before the rotation runs a job on a version rewrapped after it, with a job
    message signed with the new key: it learns the key from the file, without a restart."""
    import redis

    home("models", "import", str(tiny), "--name", "tiny")
    home.env["OVBATCH_BROKER_URL"] = redis_url
    log = (home.cwd / "worker.log").open("wb")
    worker = subprocess.Popen(
        [OVBATCH, "worker", "--device", "CPU", "--name", "before-rotation"],
        cwd=home.cwd,
        env=home.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        client = redis.Redis.from_url(redis_url)
        deadline = time.time() + 120
        while not any(  # advertised: it has read the keyring
            json.loads(client.get(k) or b"{}").get("pid") == worker.pid for k in client.scan_iter("ovbatch:worker:*")
        ):
            assert worker.poll() is None and time.time() < deadline, (home.cwd / "worker.log").read_text()[-3000:]
            time.sleep(0.3)
        home("keys", "rotate")
        assert "no retired key to prune" in home("keys", "prune", "--yes").stdout
        out = home("benchmark", "tiny", "--niter", "4", "--out", str(home.cwd / "out"), "--wait").stdout
        assert "1 done" in out and "0 failed" in out, out + (home.cwd / "worker.log").read_text()[-3000:]
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


def test_prune_keeps_a_key_that_queued_job_messages_are_signed_with(home: Home, tiny: Path, redis_url: str) -> None:
    """A batch queued before the rotation waits for a worker with messages signed with the old key:
    removing it would leave those jobs unrunnable."""
    home("models", "import", str(tiny), "--name", "tiny")
    import redis

    home.env["OVBATCH_BROKER_URL"] = redis_url
    # a worker's advertisement, so the benchmark is accepted; none takes the job, which stays queued
    presence = {"hostname": "away@host", "device": "CPU", "queue": "ovbatch.CPU", "started_s": 0, "seen_s": 0}
    redis.Redis.from_url(redis_url).set("ovbatch:worker:away@host", json.dumps(presence), ex=60)
    queued = home("benchmark", "tiny", "--niter", "4", "--out", str(home.cwd / "out")).stdout
    batch_id = queued.split("batch ", 1)[1].split(":", 1)[0]
    old = home.ring()["active"]
    home("keys", "rotate")
    kept = home("keys", "prune", "--older-than", "0s", "--yes", ok=False).stderr
    assert f"{old}: batch {batch_id} is still open: its queued job messages are signed with it" in kept, kept
    assert old in home.ring()["keys"]


def test_a_batch_queued_in_the_rotations_second_counts_as_queued_before_it(tmp_path: Path, redis_url: str) -> None:
    """The keyring stamps a retirement to the second; a batch queued just before the rotation, in the
    same second, is later than the truncated stamp and must still hold the old key."""
    from datetime import UTC, datetime

    import redis

    from cli.keys import _open_batches_before
    from ovbatch.batches import RedisBatchStore
    from ovbatch.settings import Settings

    client = redis.Redis.from_url(redis_url)
    RedisBatchStore(client).create("b-same-second", {}, {"j1": {"status": "queued"}})
    second = int(time.time())
    client.zadd("ovbatch:batches", {"b-same-second": second + 0.9})  # queued at .9 of the rotation's second
    settings = Settings.from_env({"OVBATCH_BROKER_URL": redis_url}, cwd=tmp_path)
    stamp = datetime.fromtimestamp(second, UTC)  # what `keys rotate` wrote for that second
    assert _open_batches_before(settings, stamp) == ["b-same-second"], "a batch of the rotation's second was missed"
