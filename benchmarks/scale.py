"""How far one Redis and the CLI go: queue overhead, submission rate, Redis memory per queued job.

    python -m benchmarks.scale [--noop 10000 --workers 8] [--inputs 100000]

* queue overhead: ``--noop`` no-op tasks (``ovbatch.noop``: a round trip through Redis and a worker,
  nothing else) sent to ``--workers`` real ``ovbatch worker`` processes; jobs per second end to end;
* submission: ``ovbatch transcribe`` of ``--inputs`` small distinct files (no worker running): listing,
  hashing, content-addressed upload, batch record and one signed message each; inputs per second;
* Redis memory per queued job: ``used_memory`` before and after that submission, divided by the jobs.

It uses a Redis server of its own (no persistence) and the fault suite's home (keyring, registry
with Whisper base). docs/SCALE.md turns the figures into a plan for 1,000,000 files on 100 workers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.fault_suite import OVBATCH, WORK, Fleet


def queue_overhead(fleet: Fleet, count: int, workers: int) -> dict[str, Any]:
    from ovbatch.settings import Settings
    from ovbatch.workers.app import make_app

    procs = [fleet.start_worker() for _ in range(workers)]
    for proc in procs:
        fleet.wait_advertised(proc)
    app = make_app(Settings.from_env({"OVBATCH_BROKER_URL": fleet.redis.url}))
    t0 = time.time()
    results = [app.send_task("ovbatch.noop", args=[{"i": i}], queue="ovbatch.CPU") for i in range(count)]
    sent = time.time() - t0
    for r in results:
        r.get(timeout=600)
    total = time.time() - t0
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=120)
    return {
        "noop_jobs": count,
        "workers": workers,
        "threads_per_worker": 8,
        "send_rate_per_s": round(count / sent),
        "end_to_end_jobs_per_s": round(count / total),
        "total_s": round(total, 1),
    }


def submission(fleet: Fleet, inputs: int) -> dict[str, Any]:
    folder = WORK / f"scale-inputs-{inputs}"
    if not folder.exists():
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(inputs):
            sub = tmp / f"{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir(parents=True)
            (sub / f"f{i:06d}.wav").write_bytes(b"RIFF" + i.to_bytes(8, "little") * 16)
        tmp.rename(folder)
    client = redis.Redis.from_url(fleet.redis.url)
    client.flushdb()
    before = int(client.info("memory")["used_memory"])
    out = WORK / "scale-out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    done = subprocess.run(
        [OVBATCH, "transcribe", str(folder), "--model", "whisper-base", "--out", str(out)],
        env=fleet.env, capture_output=True, text=True, timeout=7200,
    )  # fmt: skip
    took = time.time() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    after = int(client.info("memory")["used_memory"])
    queued = client.llen("ovbatch.CPU")
    keys = {
        k.decode().split(":")[-1] if b":batch:" in k else k.decode(): client.memory_usage(k)
        for k in client.scan_iter(count=1000)
    }
    return {
        "inputs": inputs,
        "submit_s": round(took, 1),
        "inputs_per_s": round(inputs / took),
        "queued": queued,
        "redis_bytes_per_queued_job": round((after - before) / max(queued, 1)),
        "redis_bytes_by_key": {k: v for k, v in sorted(keys.items(), key=lambda kv: -(kv[1] or 0))[:6]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=100000)
    parser.add_argument("--json", type=Path, default=WORK / "scale.json")
    args = parser.parse_args()
    work = WORK / "scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fleet = Fleet(work)
    try:
        row: dict[str, Any] = {"command": "python -m benchmarks.scale " + " ".join(sys.argv[1:])}
        if args.noop:
            row["queue"] = queue_overhead(fleet, args.noop, args.workers)
            print(json.dumps(row["queue"]), flush=True)
        if args.inputs:
            row["submission"] = submission(fleet, args.inputs)
            print(json.dumps(row["submission"]), flush=True)
        args.json.write_text(json.dumps(row, indent=1))
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()
