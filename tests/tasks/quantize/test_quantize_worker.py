"""A quantization job on a real ``ovbatch worker --kinds quantize`` through Redis: a worker SIGKILLed
mid-job leaves no version, and the job reruns cleanly on the next worker (one new version, once)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.conftest import build_tiny_ir
from tests.workers.test_worker_e2e import Workers, batch_id_of, cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(redis_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Registry, Path, Workers]]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(tmp_path / "storage"), ring)
    registry.import_folder(build_tiny_ir(tmp_path / "src", seed=5, hidden=1024), "wide")
    npz = tmp_path / "npz"
    npz.mkdir()
    rng = np.random.default_rng(1)
    for i in range(300):  # enough calibration for the job to run for seconds, not milliseconds
        np.savez(npz / f"s{i:03d}.npz", x=rng.standard_normal((1, 1024)).astype(np.float32))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env = {
        **base,
        "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "OVBATCH_KEYRING": str(ring.path),
        "OVBATCH_BROKER_URL": redis_url,
        "OVBATCH_VISIBILITY_TIMEOUT_S": "30",  # a killed worker's job comes back within the test
        "OVBATCH_JOB_TIME_LIMIT_S": "25",
    }
    workers = Workers(env, tmp_path)
    yield env, registry, npz, workers
    workers.stop()


def test_a_quantize_worker_killed_mid_job_registers_nothing_and_the_job_reruns_once(
    setup: tuple[dict[str, str], Registry, Path, Workers], tmp_path: Path
) -> None:
    env, registry, npz, workers = setup
    first = workers.start(name="doomed", kinds="quantize")
    out = tmp_path / "reports"
    args = ("quantize", "wide@1", "--recipe", "int8-accuracy", "--calibration", str(npz), "--eval", str(npz))
    bid = batch_id_of(cli(env, *args, "--out", str(out)).stdout)
    s = wait_for(env, bid, lambda s: "quantizing" in (s["summary"].get("stage") or ""), 120)
    assert s["summary"]["running"] == 1, s["summary"]
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert registry.versions("wide") == ["1"], "killed mid-job: nothing may be registered"
    assert not list(out.rglob("*.json")), "killed mid-job: no report yet"
    workers.start(name="next", kinds="quantize")
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 300)
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "done" and record["worker"].startswith("next"), record
    assert registry.versions("wide") == ["1", "2"], "the rerun registers exactly one version"
    lineage = registry.manifest(ModelRef("wide", "2"))["lineage"]
    assert lineage["recipe"] == "int8-accuracy" and lineage["parent"] == "wide@1", lineage
    reports = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json") if ".ovbatch" not in p.parts)
    assert "wide@1/int8-accuracy.json" in reports, reports
    report = json.loads((out / "wide@1" / "int8-accuracy.json").read_text())
    assert report["version"] == "wide@2" and report["gate"]["passed"], report["gate"]
