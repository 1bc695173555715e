"""Forged, altered, replayed and out-of-root job messages against a live worker (fault suite).

A real batch is queued before any worker runs, so its real message can be copied off the queue;
then variants of it go on the queue beside it: unsigned, every payload field altered under the real
signature, signed by another keyring, signed for another task, expired, dated in the future, and,
once the real job is done, the real message again (a replay). Two jobs signed with the real keyring
name paths outside the worker's OVBATCH_ALLOWED_ROOTS (an input, an output folder). Executed means:
a job ran (its record changed, or anything was written outside the roots).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

from ovbatch.batches import RedisBatchStore
from ovbatch.crypto import signing
from ovbatch.crypto.keyring import Keyring
from ovbatch.jobs import record

TASK = "ovbatch.transcribe"
QUEUE = "ovbatch.CPU"


def with_args(raw: bytes, args: list[Any]) -> bytes:
    message = json.loads(raw)
    body = json.loads(base64.b64decode(message["body"]))
    body[0] = args
    message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    message["properties"]["delivery_tag"] = str(uuid.uuid4())
    return json.dumps(message).encode()


def run_forged(fleet: Any, work: Path) -> dict[str, Any]:
    allowed = work / "allowed"
    outside = work.parent / f"{work.name}-outside"
    (allowed / "in").mkdir(parents=True)
    outside.mkdir(exist_ok=True)
    fleet.env["OVBATCH_ALLOWED_ROOTS"] = allowed.as_uri()
    clip = Path(__file__).resolve().parents[1] / "examples" / "audio" / "quilter.wav"
    (allowed / "in" / "quilter.wav").write_bytes(clip.read_bytes())
    (outside / "secret.wav").write_bytes(clip.read_bytes())
    client = fleet.client()
    store = RedisBatchStore(client)
    real = fleet.submit(allowed / "in", allowed / "out")
    raw = next(m for m in client.lrange(QUEUE, 0, -1) if f'"id": "{real}.' in m.decode())
    payload, auth = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
    ring = Keyring.load(Path(fleet.env["OVBATCH_KEYRING"]))
    intruder = Keyring(work / "intruder.json")
    intruder.add_new_key()
    stolen = (outside / "stolen").as_uri() + "/"
    variants: dict[str, list[Any]] = {
        "unsigned": [payload, None],
        "signature of another keyring": [{**payload, "out_url": stolen}, signing.sign(intruder, TASK, payload)],
        "signed for another task": [payload, signing.sign(ring, "ovbatch.txt2img", payload)],
        "expired": [payload, signing.sign(ring, TASK, payload, now=time.time() - 40 * 86400)],
        "dated in the future": [payload, signing.sign(ring, TASK, payload, now=time.time() + 86400)],
        "malformed signature": [payload, {"kid": ring.active, "ts": "now", "nonce": 1, "mac": None}],
    }
    for field, value in (
        ("out_url", stolen),
        ("input_url", (outside / "secret.wav").as_uri()),
        ("max_audio_duration_s", None),
        ("max_audio_duration_s", 1e9),
        ("model", "whisper-base@9"),
        ("relpath", "../../escape.wav"),
        ("job_id", "0" * 32),
        ("formats", ["txt"]),
        ("display", "x"),
    ):
        variants[f"{field} altered"] = [{**payload, field: value}, auth]
    # jobs a key holder signed, naming paths outside the roots (a misconfigured or careless client)
    outside_jobs = {
        "input outside the roots": {
            **payload,
            "batch_id": "fault-roots",
            "relpath": "secret.wav",
            "job_id": "1" * 32,
            "input_url": (outside / "secret.wav").as_uri(),
        },
        "output outside the roots": {**payload, "batch_id": "fault-roots", "job_id": "2" * 32, "out_url": stolen},
    }
    mine = {
        spec["job_id"]: record(None, "queued", job_id=spec["job_id"], display=k) for k, spec in outside_jobs.items()
    }
    store.create("fault-roots", {"kind": "transcribe"}, mine, {s["job_id"]: s for s in outside_jobs.values()})
    for spec in outside_jobs.values():
        client.lpush(QUEUE, with_args(raw, [spec, signing.sign(ring, TASK, spec)]))
    for args in variants.values():
        client.lpush(QUEUE, with_args(raw, args))
    before = {k: v for k, v in store.jobs(real).items()}
    worker = fleet.start_worker()
    fleet.wait_advertised(worker)
    deadline = time.time() + 600
    while time.time() < deadline:
        s, r = store.summary(real) or {}, store.summary("fault-roots") or {}
        if s.get("ended_s") and r.get("ended_s"):
            break
        time.sleep(1)
    real_record = next(iter(store.jobs(real).values()))
    written = (allowed / "out" / "quilter.txt").stat().st_mtime_ns
    client.lpush(QUEUE, raw)  # the replay, after the job is done
    variants["replay after the job finished"] = [payload, auth]
    time.sleep(15)
    logs = "".join(p.read_text(errors="replace") for p in work.glob("worker-*.log"))
    roots = store.jobs("fault-roots")
    executed = []
    if any(p.exists() for p in (outside / "stolen", work / "escape.wav")) or (allowed / "escape.wav").exists():
        executed.append("something was written outside the roots")
    if (allowed / "out" / "quilter.txt").stat().st_mtime_ns != written:
        executed.append("the replay rewrote the outputs")
    final = next(iter(store.jobs(real).values()))
    if final.get("attempts") != 1 or final["status"] != "done" or len(before) != 1:
        executed.append(f"the real job's record: {final}")
    for rec in roots.values():
        if rec["status"] != "failed" or "outside the storage roots" not in (rec.get("error") or ""):
            executed.append(f"{rec['display']}: {rec['status']} {rec.get('error')}")
    dropped = logs.count(" dropped: ") + logs.count("message dropped")
    return {
        "messages": len(variants) + len(outside_jobs),
        "kinds": sorted([*variants, *outside_jobs]),
        "executed": len(executed),
        "executed_details": executed,
        "dropped_in_worker_log": dropped,
        "real_job": real_record["status"],
        "worker_alive": worker.poll() is None,
    }
