"""A batch that cannot end says why, or is mended: open jobs whose messages a Redis crash lost are
found (no message in any queue or unacked, no lock) and queued again, signed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import click
import pytest
import redis

from ovbatch import kinds
from ovbatch.batches import RedisBatchStore
from ovbatch.cli.batch import lost_in, stall_check
from ovbatch.crypto import signing
from ovbatch.crypto.keyring import Keyring
from ovbatch.jobs import record
from ovbatch.settings import Settings
from tests.test_kinds import image_message


def batch_with_open_jobs(store: RedisBatchStore, n: int) -> list[str]:
    ids = [f"j{i}" for i in range(n)]
    specs = {j: image_message(batch_id="b", job_id=j) for j in ids}
    store.create("b", {"kind": "txt2img"}, {j: record(None, "queued", job_id=j, display=j) for j in ids}, specs)
    return ids


def test_lost_jobs_are_found_and_queued_again_signed(tmp_path: Path, redis_url: str, keyring: Keyring) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisBatchStore(client)
    kind = kinds.get("txt2img")
    ids = batch_with_open_jobs(store, 3)
    client.set("ovbatch:lock:j0", "w@host")  # running somewhere: not lost
    settings = Settings.from_env({"OVBATCH_BROKER_URL": redis_url, "OVBATCH_KEYRING": str(keyring.path)})
    assert lost_in(store, "b", kind) == ids[1:]
    stall_check(settings, store, "b", kind)(store.summary("b") or {})
    queued = [json.loads(m) for m in client.lrange("ovbatch.CPU", 0, -1)]
    assert sorted(m["headers"]["id"] for m in queued) == ["b.j1", "b.j2"]
    for m in queued:  # each one a message a worker accepts
        payload, auth = json.loads(base64.b64decode(m["body"]))[0]
        signing.verify(keyring, "ovbatch.txt2img", payload, auth, max_age_s=60)
    assert lost_in(store, "b", kind) == [], "queued messages are not lost"


def test_without_the_keyring_it_says_how_to_mend_the_batch(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisBatchStore(client)
    batch_with_open_jobs(store, 1)
    settings = Settings.from_env({"OVBATCH_BROKER_URL": redis_url, "OVBATCH_KEYRING": str(tmp_path / "none.json")})
    with pytest.raises(click.ClickException, match=r"batch b cannot end: 1 open job\(s\) have no message in Redis"):
        stall_check(settings, store, "b", kinds.get("txt2img"))(store.summary("b") or {})
