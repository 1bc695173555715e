"""Does a worker's memory grow with the jobs it runs? RSS of one real worker after every 36 jobs.

    .venv/bin/python -m benchmarks.worker_rss [--rounds 14]

The same deployment in miniature as transcribe_bench (Redis, one worker pinned to 2 cores, the
encrypted registry, real Whisper base); each round submits the 36 espeak-ng clips as a new batch
(new output folder, so nothing is skipped). A leak grows round after round; warm-up (the first
batches allocate OpenVINO's buffers for each batch shape) levels off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import redis

from benchmarks.speech import make_clips
from benchmarks.transcribe_bench import OUT, SPEECH, Ovbatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    redis.Redis.from_url(args.redis_url).flushdb()
    clips = [SPEECH / n for n in make_clips(SPEECH)]
    work = Path(tempfile.mkdtemp(prefix="ovbatch-rss-"))
    ov = Ovbatch(work, args.redis_url)
    series = []
    try:
        ov.start_worker()
        ov.run(clips[:1])
        series.append({"jobs": 1, "rss_mib": round(ov.rss_kib() / 1024, 1)})
        for i in range(args.rounds):
            ov.run(clips)
            series.append({"jobs": 1 + len(clips) * (i + 1), "rss_mib": round(ov.rss_kib() / 1024, 1)})
            print(json.dumps(series[-1]), flush=True)
    finally:
        ov.stop()
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "worker_rss.json").write_text(json.dumps(series, indent=2))


if __name__ == "__main__":
    main()
