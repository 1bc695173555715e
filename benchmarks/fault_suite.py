"""The fault suite's long run: faults injected into a real fleet, and what it lost, duplicated or got wrong.

    python -m benchmarks.fault_suite kills      [--files 200 --kills 20 --workers 2]
    python -m benchmarks.fault_suite redis      [--files 200 --restarts 5 --workers 2]
    python -m benchmarks.fault_suite mutations  [--count 10000]
    python -m benchmarks.fault_suite forged
    python -m benchmarks.fault_suite all        # every one above, with their defaults
    (bad inputs: python -m benchmarks.bad_inputs; scale: python -m benchmarks.scale)

Each scenario runs real parts: a Redis server of its own (append-only file, fsync every second: what
docker-compose.yml runs), `ovbatch worker` processes on the real Whisper base, the `ovbatch` CLI,
an encrypted file:// registry. It prints one row per scenario and writes them as JSON to --json
(default .cache/fault-suite/results.json); benchmarks/RESULTS.md quotes them.

What the columns mean:
* lost: inputs whose job did not end done with its four outputs;
* duplicated: jobs that ran to completion more than once (workers log each completed run; a rerun
  that found the outputs already there is not one), or an input with more than one output set;
* wrong: transcripts that differ from the same clip's transcript in an undisturbed run;
* rerun within: for each SIGKILL, the time until every job the dead worker held was running
  again on another worker (or done).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from ovbatch.process import die_with_parent

REPO = Path(__file__).resolve().parents[1]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
WORK = REPO / ".cache" / "fault-suite"
FORMATS = ("txt", "srt", "vtt", "json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A Redis of the suite's own, killed and restarted at will, with its append-only file."""

    def __init__(self, folder: Path, fsync: str = "everysec"):
        self.folder, self.fsync, self.port = folder, fsync, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", self.fsync],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.1)
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the suite's Redis did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Fleet:
    """A home (keyring, registry with Whisper base), a Redis, and worker processes."""

    def __init__(self, work: Path):
        self.work = work
        self.home = prepare_home()
        self.redis = RedisServer(work / "redis")
        self.redis.start()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
        self.env.update(
            OVBATCH_BROKER_URL=self.redis.url,
            OVBATCH_STORAGE_URL=(self.home / "storage").as_uri(),
            OVBATCH_KEYRING=str(self.home / "keyring.json"),
            OVBATCH_ALLOWED_ROOTS=work.as_uri(),
            OVBATCH_STOP_GRACE_S="5",
        )
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=10)

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = open(self.work / f"worker-{self.started:02d}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [OVBATCH, "worker", "--device", "CPU", "--name", f"w{self.started:02d}"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        self.procs[proc.pid] = proc
        return proc

    def wait_advertised(self, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                client = self.client()
                for key in client.scan_iter("ovbatch:worker:*"):
                    if json.loads(client.get(key) or b"{}").get("pid") == proc.pid:
                        return
            except redis.RedisError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"worker {proc.pid} exited early")
            time.sleep(0.3)
        raise RuntimeError("worker did not advertise itself")

    def proc_of(self, hostname: str) -> subprocess.Popen[bytes] | None:
        match = re.search(r"-(\d+)@", hostname)
        return self.procs.get(int(match.group(1))) if match else None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([OVBATCH, *args], env=self.env, capture_output=True, text=True, timeout=1800)
        if check and done.returncode != 0:
            raise RuntimeError(f"ovbatch {' '.join(args)}: {done.stderr[-2000:]}")
        return done

    def submit(self, inputs: Path, out: Path) -> str:
        done = self.cli("transcribe", str(inputs), "--model", "whisper-base", "--out", str(out))
        return done.stdout.split("batch ", 1)[1].split(":", 1)[0]

    def records(self, batch_id: str) -> dict[str, dict[str, Any]]:
        from ovbatch.batches import RedisBatchStore

        return RedisBatchStore(self.client()).jobs(batch_id)

    def summary(self, batch_id: str) -> dict[str, Any] | None:
        from ovbatch.batches import RedisBatchStore

        return RedisBatchStore(self.client()).summary(batch_id)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.redis.kill()

    def completed_runs(self) -> Counter[str]:
        """Completed (not reused) runs per job id, from every worker's log."""
        runs: Counter[str] = Counter()
        for log in self.work.glob("worker-*.log"):
            for m in re.finditer(r"job ([0-9a-f]{32}) \(.*?\) done(?! \(its outputs)", log.read_text(errors="replace")):
                runs[m.group(1)] += 1
        return runs


def prepare_home() -> Path:
    """Keyring and a registry holding the real Whisper base, made once and kept in .cache/."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.samples import fetch_whisper_base
    from ovbatch.storage.file import FileStore

    home = WORK / "home"
    if (home / "ready").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    ring = Keyring(home / "keyring.json")
    ring.add_new_key()
    ring.save()
    ct2 = fetch_whisper_base(REPO / ".cache" / "models" / "whisper-base-ct2")
    Registry(FileStore(home / "storage"), ring).import_folder(ct2, "whisper-base")
    (home / "ready").write_text("")
    return home


def clip_set(files: int) -> tuple[Path, dict[str, str]]:
    """``files`` clips (copies of the 36 espeak-ng sentences, one name each) and each one's source."""
    from benchmarks.speech import make_clips

    sources = WORK / "speech"
    if not (sources / "references.json").exists():
        make_clips(sources)
    names = sorted(p.name for p in sources.glob("*.wav"))
    folder = WORK / f"inputs-{files}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    origin = {}
    for i in range(files):
        src = names[i % len(names)]
        name = f"clip{i:04d}.wav"
        shutil.copyfile(sources / src, folder / name)
        origin[Path(name).stem] = src
    return folder, origin


def reference_texts(origin: dict[str, str]) -> dict[str, str]:
    """The transcript of each source clip in an undisturbed run (kept in .cache/ once made)."""
    path = WORK / "reference-texts.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = sorted(set(origin.values()) - set(known))
    if missing:
        work = WORK / "reference"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        inputs = work / "in"
        inputs.mkdir()
        for name in missing:
            shutil.copyfile(WORK / "speech" / name, inputs / name)
        fleet = Fleet(work)
        try:
            fleet.wait_advertised(fleet.start_worker())
            fleet.cli("transcribe", str(inputs), "--model", "whisper-base", "--out", str(work / "out"), "--wait")
            for name in missing:
                known[name] = (work / "out" / Path(name).with_suffix(".txt")).read_text()
        finally:
            fleet.stop()
        path.write_text(json.dumps(known, indent=1))
    return known


def outcome(fleet: Fleet, batch_id: str, out: Path, origin: dict[str, str]) -> dict[str, Any]:
    """Lost, duplicated and wrong, as the module docstring defines them."""
    refs = reference_texts(origin)
    s = fleet.summary(batch_id) or {}
    lost = duplicated = wrong = 0
    for stem, src in origin.items():
        outputs = sorted(out.glob(f"{stem}.*"))
        if [p.suffix[1:] for p in outputs] != sorted(FORMATS):
            if len(outputs) > len(FORMATS):
                duplicated += 1
            else:
                lost += 1
            continue
        if (out / f"{stem}.txt").read_text() != refs[src]:
            wrong += 1
    runs = fleet.completed_runs()
    duplicated += sum(1 for n in runs.values() if n > 1)
    return {
        "files": len(origin),
        "done": s.get("done"),
        "failed": s.get("failed"),
        "batch_ended": bool(s.get("ended_s")),
        "lost": lost,
        "duplicated": duplicated,
        "wrong": wrong,
        "extra_outputs": sorted(
            p.name for p in out.iterdir() if p.is_file() and p.stem not in origin and not p.name.startswith("batch-")
        ),
    }


def wait_end(fleet: Fleet, batch_id: str, timeout_s: float, tick: Any = None) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        try:
            s = fleet.summary(batch_id)
        except redis.RedisError:
            s = None
        if s and s.get("ended_s"):
            return time.time() - t0
        if tick is not None:
            tick()
        time.sleep(1)
    raise RuntimeError(f"batch {batch_id} did not end within {timeout_s:.0f} s")


def scenario_kills(files: int, kills: int, workers: int, seed: int) -> dict[str, Any]:
    """SIGKILL a worker that runs jobs, at random moments; a supervisor starts a new one at once."""
    work = WORK / "kills"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inputs, origin = clip_set(files)
    fleet = Fleet(work)
    rng = random.Random(seed)
    reruns: list[float] = []
    pending: list[tuple[float, str, set[str]]] = []  # (kill time, dead worker, jobs it held)
    try:
        for proc in [fleet.start_worker() for _ in range(workers)]:
            fleet.wait_advertised(proc)
        out = work / "out"
        bid = fleet.submit(inputs, out)
        # the user waits with `watch`, which mends what it can (lost messages)
        watcher = subprocess.Popen([OVBATCH, "watch", bid], env=fleet.env, stdout=subprocess.DEVNULL,
                                   stderr=open(work / "watch.log", "wb"))  # fmt: skip  # noqa: SIM115
        t0 = time.time()
        done_kills = 0
        next_kill = t0 + rng.uniform(5, 20)

        def tick() -> None:
            nonlocal done_kills, next_kill
            records = fleet.records(bid)
            for entry in list(pending):
                killed_at, dead, held = entry
                back = {
                    j for j in held
                    if records[j]["status"] in ("done", "failed", "cancelled")
                    or (records[j]["status"] == "running" and records[j].get("worker") != dead)
                }  # fmt: skip
                if back == held:
                    reruns.append(time.time() - killed_at)
                    pending.remove(entry)
            if done_kills >= kills or time.time() < next_kill:
                return
            running = [r for r in records.values() if r["status"] == "running"]
            live = [r for r in running if (p := fleet.proc_of(r.get("worker", ""))) and p.poll() is None]
            if not live:
                return
            victim = rng.choice(live)["worker"]
            held = {r["job_id"] for r in running if r.get("worker") == victim}
            proc = fleet.proc_of(victim)
            assert proc is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            pending.append((time.time(), victim, held))
            fleet.start_worker()  # the supervisor's restart
            done_kills += 1
            next_kill = time.time() + rng.uniform(5, 20)

        took = wait_end(fleet, bid, 7200, tick)
        while pending and time.time() - pending[0][0] < 300:
            tick()
            time.sleep(1)
        watcher.wait(timeout=60)
        result = outcome(fleet, bid, out, origin)
        result.update(
            scenario="SIGKILL workers",
            faults=done_kills,
            workers=workers,
            took_s=round(took, 1),
            rerun_max_s=round(max(reruns), 1) if reruns else None,
            rerun_median_s=round(sorted(reruns)[len(reruns) // 2], 1) if reruns else None,
            rerun_s=sorted(round(r, 1) for r in reruns),
            kills_not_rerun=len(pending),
        )
        return result
    finally:
        fleet.stop()


def scenario_redis(files: int, restarts: int, workers: int, seed: int) -> dict[str, Any]:
    """SIGKILL Redis at random moments and start it again from its append-only file."""
    work = WORK / "redis-restarts"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inputs, origin = clip_set(files)
    fleet = Fleet(work)
    rng = random.Random(seed)
    try:
        for proc in [fleet.start_worker() for _ in range(workers)]:
            fleet.wait_advertised(proc)
        out = work / "out"
        bid = fleet.submit(inputs, out)
        watcher = subprocess.Popen([OVBATCH, "watch", bid], env=fleet.env, stdout=subprocess.DEVNULL,
                                   stderr=open(work / "watch.log", "wb"))  # fmt: skip  # noqa: SIM115
        t0 = time.time()
        done = 0
        while done < restarts:
            time.sleep(rng.uniform(5, 15))
            s = fleet.summary(bid)
            if s and s.get("ended_s"):
                break
            fleet.redis.kill()
            time.sleep(rng.uniform(1, 5))
            fleet.redis.start()
            done += 1
        wait_end(fleet, bid, 7200)
        watcher.wait(timeout=120)
        result = outcome(fleet, bid, out, origin)
        alive = sum(1 for p in fleet.procs.values() if p.poll() is None)
        result.update(
            scenario="Redis SIGKILLed and restarted (AOF, fsync every second)",
            faults=done,
            workers=workers,
            workers_alive_after=alive,
            took_s=round(time.time() - t0, 1),
        )
        return result
    finally:
        fleet.stop()


def scenario_mutations(count: int, seed: int) -> dict[str, Any]:
    """Random mutations of a version's encrypted objects and manifest: each must be refused, with an
    error that names the model (benchmarks/mutations.py)."""
    from benchmarks.mutations import run_mutations

    return {"scenario": "mutated encrypted objects and manifests", **run_mutations(WORK / "mutations", count, seed)}


def scenario_forged() -> dict[str, Any]:
    """Forged, altered, replayed and out-of-root messages against a live worker: none may run."""
    from benchmarks.forged import run_forged

    work = WORK / "forged"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fleet = Fleet(work)
    try:
        return {"scenario": "forged, altered, replayed and out-of-root jobs", **run_forged(fleet, work)}
    finally:
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["kills", "redis", "mutations", "forged", "all"])
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=WORK / "results.json")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = ["kills", "redis", "mutations", "forged"] if args.scenario == "all" else [args.scenario]
    for name in chosen:
        if name == "kills":
            row = scenario_kills(args.files or 200, args.kills, args.workers, args.seed)
        elif name == "redis":
            row = scenario_redis(args.files or 200, args.restarts, args.workers, args.seed)
        elif name == "mutations":
            row = scenario_mutations(args.count, args.seed)
        else:
            row = scenario_forged()
        row["command"] = "python -m benchmarks.fault_suite " + " ".join(sys.argv[1:])
        print(json.dumps(row), flush=True)
        rows.append(row)
    known = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps(known + rows, indent=1))


if __name__ == "__main__":
    main()
