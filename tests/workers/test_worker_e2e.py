"""Real Redis, real worker processes, the real Whisper base: the queue end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ovbatch.process import die_with_parent
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
EXAMPLES = REPO / "examples" / "audio"


@pytest.fixture
def env(redis_url: str, whisper_home: dict[str, str], tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    # short visibility timeout so a killed worker's job comes back within the test
    return {
        **base,
        **whisper_home,
        "OVBATCH_BROKER_URL": redis_url,
        "OVBATCH_VISIBILITY_TIMEOUT_S": "20",
        "OVBATCH_JOB_TIME_LIMIT_S": "15",
    }


def cli(env: dict[str, str], *args: str, ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([OVBATCH, *args], env=env, capture_output=True, text=True, timeout=timeout)
    where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, where
    assert (done.returncode == 0) == ok, where
    return done


class Workers:
    def __init__(self, env: dict[str, str], tmp_path: Path):
        self.env, self.tmp, self.procs = env, tmp_path, []

    def start(self, device: str = "CPU", name: str = "w", kinds: str | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        command = [OVBATCH, "worker", "--device", device, "--name", name, *(["--kinds", kinds] if kinds else [])]
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.procs.append(proc)
        client = redis.Redis.from_url(self.env["OVBATCH_BROKER_URL"])
        deadline = time.time() + 120
        while time.time() < deadline:
            if any(
                json.loads(client.get(k) or b"{}").get("pid") == proc.pid for k in client.scan_iter("ovbatch:worker:*")
            ):
                return proc
            assert proc.poll() is None, f"worker exited early: {self.log_of(len(self.procs) - 1)}"
            time.sleep(0.3)
        raise AssertionError("worker did not advertise itself within 120 s")

    def log_of(self, i: int, tail: int = 3000) -> str:
        return next(iter(sorted(self.tmp.glob(f"worker-*-{i}.log")))).read_text()[-tail:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(env, tmp_path)
    yield w
    w.stop()


def status(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    return json.loads(cli(env, "status", batch_id, "--json").stdout)


def batch_id_of(output: str) -> str:
    return output.split("batch ", 1)[1].split(":", 1)[0]


def wait_for(env: dict[str, str], batch_id: str, predicate: Any, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        s = status(env, batch_id)
        if predicate(s):
            return s
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} did not reach the expected state: {s['summary']}")


def test_worker_refuses_a_device_openvino_does_not_list(env: dict[str, str]) -> None:
    err = cli(env, "worker", "--device", "GPU", ok=False).stderr
    assert "device 'GPU' is not available" in err and "available: CPU" in err


def test_transcribe_through_redis_and_a_worker(env: dict[str, str], workers: Workers, tmp_path: Path) -> None:
    workers.start()
    out = tmp_path / "out"
    archive = tmp_path / "archive" / "calls" / "2024"
    archive.mkdir(parents=True)
    for clip in EXAMPLES.glob("*.*"):
        if clip.suffix != ".md" and clip.suffix != ".sh":
            (archive / clip.name).write_bytes(clip.read_bytes())
    done = cli(
        env,
        "transcribe",
        str(tmp_path / "archive"),
        "--model",
        "whisper-base",
        "--device",
        "CPU",
        "--out",
        str(out),
        "--wait",
    )
    bid = batch_id_of(done.stdout)
    s = status(env, bid)
    assert s["summary"]["done"] == 3 and s["summary"]["failed"] == 0, s
    for stem in ("quilter", "archive", "subtitles"):
        for fmt in ("txt", "srt", "vtt", "json"):
            assert (out / "calls" / "2024" / f"{stem}.{fmt}").is_file(), f"missing {stem}.{fmt}"
    text = (out / "calls" / "2024" / "quilter.txt").read_text()
    assert "Quilter is the apostle of the middle classes" in text, text
    meta = json.loads((out / "calls" / "2024" / "quilter.json").read_text())
    assert meta["model"] == "whisper-base@1" and meta["audio_duration_s"] > 5
    report = json.loads((out / f"batch-{bid}.json").read_text())
    assert len(report["inputs"]) == 3 and {r["status"] for r in report["inputs"]} == {"done"}
    listing = cli(env, "workers").stdout
    assert "whisper-base@1@CPU" in listing and "jobs done 3" in listing, listing
    # the same batch again: nothing is transcribed twice
    again = cli(env, "transcribe", str(tmp_path / "archive"), "--model", "whisper-base", "--out", str(out))
    assert "0 queued on CPU, 3 already done" in again.stdout, again.stdout


def test_gpu_jobs_wait_for_a_gpu_worker(env: dict[str, str], workers: Workers, tmp_path: Path) -> None:
    workers.start("CPU")
    done = cli(
        env,
        "transcribe",
        str(EXAMPLES / "quilter.wav"),
        "--model",
        "whisper-base",
        "--device",
        "GPU",
        "--out",
        str(tmp_path / "out"),
    )
    bid = batch_id_of(done.stdout)
    time.sleep(8)
    s = status(env, bid)["summary"]
    assert (s["queued"], s["running"], s["done"]) == (1, 0, 0), f"a CPU worker touched a GPU job: {s}"
    client = redis.Redis.from_url(env["OVBATCH_BROKER_URL"])
    assert client.llen("ovbatch.GPU") == 1, "the job should wait in the GPU queue"
    assert "jobs done 0" in cli(env, "workers").stdout


def long_clip(path: Path, seconds: int = 60) -> Path:
    text = " ".join(["The quick brown fox jumps over the lazy dog while the archive keeps on recording."] * 20)
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(path), "trim", "0", str(seconds)], check=True)
    return path


def test_sigkilled_worker_job_is_redelivered_and_written_once(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    """With the default visibility timeout (hours), the job runs again within about a minute: the
    live worker sees that no live worker holds it (workers/redeliver.py)."""
    env.update(OVBATCH_VISIBILITY_TIMEOUT_S="21600", OVBATCH_JOB_TIME_LIMIT_S="600")
    first = workers.start(name="doomed")
    workers.start(name="rescuer")  # already polling when the other dies, as on a fleet
    clip = long_clip(tmp_path / "long.wav")
    out = tmp_path / "out"
    client = redis.Redis.from_url(env["OVBATCH_BROKER_URL"])
    bid = batch_id_of(cli(env, "transcribe", str(clip), "--model", "whisper-base", "--out", str(out)).stdout)
    s = wait_for(env, bid, lambda s: s["summary"]["running"] == 1, 120)
    holder = next(iter(s["jobs"].values()))["worker"]
    victim = first if holder.startswith("doomed") else workers.procs[1]
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.time()
    victim.wait()
    assert not list(out.glob("long.*")), "the killed worker should not have finished"
    s = wait_for(
        env, bid, lambda s: next(iter(s["jobs"].values())).get("worker") != holder or s["summary"]["ended_s"], 120
    )
    again = time.time() - killed
    assert again < 75, f"the killed worker's job ran again after {again:.0f} s: about a minute at most"
    assert client.hlen("unacked") <= 1
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 300)
    assert s["summary"]["done"] == 1, s
    record = next(iter(s["jobs"].values()))
    assert record["worker"] != holder and record["status"] == "done", record
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        ["long.txt", "long.srt", "long.vtt", "long.json", f"batch-{bid}.json"]
    )
    assert len(list((out / ".ovbatch" / "jobs").iterdir())) == 1


def test_s3_prefix_and_zip_in_s3_out_through_a_worker(
    env: dict[str, str], workers: Workers, tmp_path: Path, s3_endpoint: str
) -> None:
    import zipfile

    import boto3

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(creds, OVBATCH_S3_ENDPOINT_URL=s3_endpoint)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="calls")
    s3.put_object(Bucket="calls", Key="2024/march/quilter.wav", Body=(EXAMPLES / "quilter.wav").read_bytes())
    s3.put_object(Bucket="calls", Key="2024/notes.txt", Body=b"not audio, not picked up from a prefix")
    with zipfile.ZipFile(tmp_path / "talks.zip", "w") as zf:
        zf.write(EXAMPLES / "subtitles.ogg", "day1/subtitles.ogg")
    workers.start()
    done = cli(
        env,
        "transcribe",
        "s3://calls/2024/",
        str(tmp_path / "talks.zip"),
        "--model",
        "whisper-base",
        "--out",
        "s3://calls/transcripts/",
        "--wait",
    )
    bid = batch_id_of(done.stdout)
    s = status(env, bid)["summary"]
    assert (s["done"], s["failed"]) == (2, 0), s
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="calls", Prefix="transcripts/")["Contents"]}
    assert {
        "transcripts/march/quilter.srt",
        "transcripts/talks.zip/day1/subtitles.vtt",
        f"transcripts/batch-{bid}.json",
    } <= keys, keys
    text = s3.get_object(Bucket="calls", Key="transcripts/march/quilter.txt")["Body"].read().decode()
    assert "Quilter is the apostle" in text


def very_long_clip(path: Path, minutes: int = 20) -> Path:
    """Minutes of speech (a minute of espeak-ng tiled): far longer than the limits under test allow."""
    import numpy as np
    import soundfile as sf

    minute, rate = sf.read(str(long_clip(path.with_name("minute.wav"))), dtype="float32")
    sf.write(str(path), np.tile(minute, minutes), rate)
    return path


def test_a_job_over_its_time_limit_fails_alone_and_may_be_retried(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    # Celery's own limit does nothing in a threads pool. The limit counts each job's wall time, and a
    # short file sharing the engine's steps with a long one may wait for the step under way and then
    # take one of its own (8 windows each: about 17 s on 2 AVX2 cores in f32, more on a loaded CI
    # VM, where 35 s once stopped quilter.wav too): 70 s lets quilter.wav end, while an hour of audio
    # takes minutes even on an AMX CPU (f32, 25-30x real time on 2 cores)
    env["OVBATCH_VISIBILITY_TIMEOUT_S"] = "160"
    env["OVBATCH_JOB_TIME_LIMIT_S"] = "70"
    workers.start()
    src = tmp_path / "in"
    src.mkdir()
    (tmp_path / "make").mkdir()
    very_long_clip(tmp_path / "make" / "hours.wav", minutes=60).rename(src / "hours.wav")  # its helpers stay out
    (src / "quilter.wav").write_bytes((EXAMPLES / "quilter.wav").read_bytes())
    out = tmp_path / "out"
    t0 = time.time()
    bid = batch_id_of(cli(env, "transcribe", str(src), "--model", "whisper-base", "--out", str(out)).stdout)
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 300)
    took = time.time() - t0
    jobs = {r["display"].rsplit("/", 1)[-1]: r for r in s["jobs"].values()}
    assert jobs["quilter.wav"]["status"] == "done", f"the short file must end within the limit: {jobs}"
    long = jobs["hours.wav"]
    assert long["status"] == "failed" and long["retryable"], long
    assert "hours.wav: stopped after the job time limit of 70 s (OVBATCH_JOB_TIME_LIMIT_S)" in long["error"], long
    assert not list(out.glob("hours.*")), "a job stopped by its time limit must write no outputs"
    # an hour of audio takes about 5 minutes here; the limit stopped it within a second of 70 s
    assert took < 150, f"the batch took {took:.0f} s: the time limit did not stop the long job"


def test_cancel_stops_a_running_job_within_seconds(env: dict[str, str], workers: Workers, tmp_path: Path) -> None:
    env["OVBATCH_JOB_TIME_LIMIT_S"] = "19"  # below the fixture's visibility timeout; cancel must come first
    workers.start()
    # the model is compiled by a first batch: the figure below is cancel latency, not compile time
    warm = batch_id_of(
        cli(
            env, "transcribe", str(EXAMPLES / "quilter.wav"), "--model", "whisper-base", "--out", str(tmp_path / "warm")
        ).stdout
    )
    wait_for(env, warm, lambda s: s["summary"]["ended_s"] is not None, 300)
    clip = very_long_clip(tmp_path / "hours.wav")
    out = tmp_path / "out"
    bid = batch_id_of(cli(env, "transcribe", str(clip), "--model", "whisper-base", "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["running"] == 1, 120)
    t0 = time.time()
    assert "running files stop within seconds" in cli(env, "cancel", bid).stdout
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 120)
    took = time.time() - t0
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "cancelled", record
    assert "batch cancelled while this file was being transcribed" in record["error"], record
    assert took < 15, f"the running job went on for {took:.0f} s after cancel (checks every 5 s)"
    assert not list(out.glob("hours.*")), "a cancelled job must write no outputs"


def test_sigterm_puts_a_running_job_back_in_its_queue_at_once(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    # a visibility timeout far beyond the test: only the worker's own requeue can bring the job back;
    # no grace: the running job must stop at once (the graceful case is the test below)
    env.update(OVBATCH_VISIBILITY_TIMEOUT_S="3600", OVBATCH_JOB_TIME_LIMIT_S="600", OVBATCH_STOP_GRACE_S="1")
    first = workers.start(name="leaving")
    clip = very_long_clip(tmp_path / "hours.wav", minutes=3)  # long enough to be mid-way when the signal comes
    out = tmp_path / "out"
    bid = batch_id_of(cli(env, "transcribe", str(clip), "--model", "whisper-base", "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["running"] == 1, 120)
    t0 = time.time()
    first.terminate()
    first.wait(timeout=60)
    took = time.time() - t0
    assert took < 20, f"the worker took {took:.0f} s to stop: its running job should end at its next block"
    s = status(env, bid)
    assert (s["summary"]["queued"], s["summary"]["running"], s["summary"]["failed"]) == (1, 0, 0), s["summary"]
    client = redis.Redis.from_url(env["OVBATCH_BROKER_URL"])
    assert client.llen("ovbatch.CPU") == 1, "the stopped job's message should be back in its queue"
    assert not list(out.glob("hours.*")), "a stopped job must write no outputs"
    workers.start(name="next")
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 300)
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "done" and record["worker"].startswith("next"), record
    assert (out / "hours.txt").is_file()


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    """Scale-in: the leaving worker takes no new job and finishes the one it runs, instead of sending
    it back to start from zero elsewhere (a long file could loop for ever while workers come and go)."""
    env.update(OVBATCH_VISIBILITY_TIMEOUT_S="3600", OVBATCH_JOB_TIME_LIMIT_S="600", OVBATCH_STOP_GRACE_S="300")
    leaving = workers.start(name="leaving")
    out = tmp_path / "out"
    first = long_clip(tmp_path / "first.wav", seconds=60)
    bid = batch_id_of(cli(env, "transcribe", str(first), "--model", "whisper-base", "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["running"] == 1, 120)
    leaving.terminate()
    later = tmp_path / "later"
    later.mkdir()
    (later / "second.wav").write_bytes(first.read_bytes())
    bid2 = batch_id_of(cli(env, "transcribe", str(later), "--model", "whisper-base", "--out", str(out / "2")).stdout)
    leaving.wait(timeout=300)
    s = status(env, bid)
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "done" and record["worker"].startswith("leaving") and record["attempts"] == 1, record
    assert (out / "first.txt").is_file()
    s2 = status(env, bid2)["summary"]
    assert (s2["queued"], s2["running"], s2["done"]) == (1, 0, 0), f"a stopping worker takes no new job: {s2}"


def test_benchmark_runs_through_a_worker_alone_and_compare_reads_the_batch(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    """Whisper base's encoder measured on a worker that runs 8 jobs at once: the two runs never
    overlap (a benchmark has its worker to itself), and `compare` reads the batch from Redis."""
    proc = workers.start()
    limits = Path(f"/proc/{proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], f"a worker holding keys may write core dumps: {core}"
    out = tmp_path / "bench"
    args = ["benchmark", "whisper-base", "--part", "encoder", "--shape", "[1,80,3000]", "--niter", "4"]
    missing = cli(env, "benchmark", "whisper-base", "--part", "encoder", "--out", str(out), ok=False)
    assert "input_features [?,80,3000] are dynamic" in missing.stderr, missing.stderr
    done = cli(env, *args, "--repeat", "2", "--out", str(out), "--wait")
    bid = batch_id_of(done.stdout)
    runs = sorted((json.loads(p.read_text()) for p in out.glob(f"{bid}-*.json")), key=lambda r: float(r["started_s"]))
    assert len(runs) == 2 and all(r["status"] == "done" for r in runs), done.stdout
    assert runs[0]["ended_s"] <= runs[1]["started_s"], "two benchmark runs overlapped on one worker"
    assert runs[0]["part"] == "openvino_encoder_model.xml" and runs[0]["inputs"]["input_features"]["shape"] == [
        1,
        80,
        3000,
    ]
    assert "pid" in runs[0]["machine"]["worker"] and runs[0]["iterations"] >= 4
    compared = cli(env, "benchmark", "compare", bid, "--out", str(tmp_path / "cmp")).stdout
    assert "1.00x" in compared and (tmp_path / "cmp" / "latency.png").is_file(), compared


def _message_with(raw: bytes, args: list[Any]) -> bytes:
    """A copy of a queued Celery message with other task arguments (and its own delivery tag)."""
    import base64
    import uuid

    message = json.loads(raw)
    body = json.loads(base64.b64decode(message["body"]))
    body[0] = args
    message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    message["properties"]["delivery_tag"] = str(uuid.uuid4())
    return json.dumps(message).encode()


def test_forged_altered_replayed_and_out_of_root_jobs_run_nothing(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    from ovbatch.crypto import signing
    from ovbatch.crypto.keyring import Keyring

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "in").mkdir(parents=True), outside.mkdir()
    env["OVBATCH_ALLOWED_ROOTS"] = allowed.as_uri()
    clip = EXAMPLES / "quilter.wav"
    (allowed / "in" / "quilter.wav").write_bytes(clip.read_bytes())
    # queued before any worker runs, so the real message can be copied from the queue (local inputs
    # are uploaded by the client, which may read them: an input outside the roots is test_runtime.py's)
    a = batch_id_of(
        cli(env, "transcribe", str(allowed / "in"), "--model", "whisper-base", "--out", str(allowed / "out")).stdout
    )
    c = batch_id_of(
        cli(env, "transcribe", str(allowed / "in"), "--model", "whisper-base", "--out", str(outside / "o")).stdout
    )
    client = redis.Redis.from_url(env["OVBATCH_BROKER_URL"])
    raw = next(m for m in client.lrange("ovbatch.CPU", 0, -1) if f'"id": "{a}.' in m.decode())
    payload, auth = json.loads(__import__("base64").b64decode(json.loads(raw)["body"]))[0]
    stolen = (outside / "stolen").as_uri() + "/"
    intruder = Keyring(tmp_path / "intruder.json")
    intruder.add_new_key()
    forged = {
        "unsigned": [payload, None],
        "altered": [{**payload, "out_url": stolen}, auth],
        "limit off": [{**payload, "max_audio_duration_s": 1e9}, auth],
        "other key": [{**payload, "out_url": stolen}, signing.sign(intruder, "ovbatch.transcribe", payload)],
        "other task": [payload, signing.sign(Keyring.load(Path(env["OVBATCH_KEYRING"])), "ovbatch.txt2img", payload)],
    }
    for args in forged.values():
        client.lpush("ovbatch.CPU", _message_with(raw, args))
    worker = workers.start()
    for bid in (a, c):
        wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 300)
    done = status(env, a)
    record = next(iter(done["jobs"].values()))
    assert record["status"] == "done" and record["attempts"] == 1, record
    bad_out = next(iter(status(env, c)["jobs"].values()))
    assert bad_out["status"] == "failed" and not bad_out["retryable"], bad_out
    assert "output folder" in bad_out["error"] and "outside the storage roots this worker allows" in bad_out["error"]
    assert not (outside / "stolen").exists() and not (outside / "o").exists(), (
        "nothing may be written outside the roots"
    )
    # a replay of the real message, word for word, after its job finished: dropped, nothing rewritten
    written = (allowed / "out" / "quilter.txt").stat().st_mtime_ns
    client.lpush("ovbatch.CPU", raw)
    deadline = time.time() + 60
    while "already done: message dropped" not in workers.log_of(0) and time.time() < deadline:
        time.sleep(0.5)
    log = workers.log_of(0, tail=1 << 20)
    assert "already done: message dropped" in log, log[-3000:]
    assert log.count("dropped: ") >= len(forged), f"each forged message is dropped with its reason:\n{log}"
    assert (allowed / "out" / "quilter.txt").stat().st_mtime_ns == written
    assert next(iter(status(env, a)["jobs"].values()))["attempts"] == 1
    assert worker.poll() is None, "the worker must survive every refused message"


class OwnRedis:
    """A Redis server of the test's own, to restart at will (the machine's Redis serves other tests)."""

    def __init__(self, folder: Path, persistent: bool):
        from tests.conftest import free_port

        self.folder, self.persistent, self.port = folder, persistent, free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.folder),
        ]
        self.proc = subprocess.Popen(
            [*command, *durability], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the test's Redis did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("persistent", [True, False], ids=["with-aof", "without-persistence"])
def test_redis_restarted_mid_batch_loses_no_job(
    env: dict[str, str], workers: Workers, tmp_path: Path, persistent: bool
) -> None:
    """Redis killed and started again while a worker runs a batch. With an append-only file, the batch
    ends with every job done once; without persistence the batch record is gone: `--wait`/`watch` say
    so, and the same command submitted again finishes the rest (what was written is skipped)."""
    server = OwnRedis(tmp_path / "redis", persistent)
    server.start()
    env.update(OVBATCH_BROKER_URL=server.url, OVBATCH_VISIBILITY_TIMEOUT_S="3600", OVBATCH_JOB_TIME_LIMIT_S="600")
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(6):
        (archive / f"clip{i}.wav").write_bytes((EXAMPLES / "quilter.wav").read_bytes())
    out = tmp_path / "out"
    try:
        workers.start()
        submit = ("transcribe", str(archive), "--model", "whisper-base", "--out", str(out))
        bid = batch_id_of(cli(env, *submit).stdout)
        wait_for(env, bid, lambda s: s["summary"]["running"] >= 1, 120)
        server.kill()
        time.sleep(3)
        server.start()
        if persistent:
            s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 400)
            assert s["summary"]["done"] == 6 and s["summary"]["failed"] == 0, s["summary"]
        else:
            gone = cli(env, "watch", bid, ok=False).stderr
            assert "is not known to this Redis" in gone and "submit the same command again" in gone, gone
            time.sleep(20)  # what was running when Redis went away finishes and writes its outputs
            again = status(env, batch_id_of(cli(env, *submit, "--wait").stdout))["summary"]
            assert again["done"] + again["skipped"] == 6 and again["failed"] == 0, again
        assert len(list(out.glob("clip*.txt"))) == 6, sorted(p.name for p in out.iterdir())
        assert len(list((out / ".ovbatch" / "jobs").iterdir())) == 6, "each job is written once"
        assert all(p.poll() is None for p in workers.procs), "the worker must ride out the restart"
    finally:
        workers.stop()
        server.kill()
