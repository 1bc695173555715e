"""`ovbatch transcribe` in embedded mode (no Redis), bad inputs, cancel and retry through Redis."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovbatch.process import die_with_parent
from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
EXAMPLES = REPO / "examples" / "audio"


def run(env: dict[str, str], *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([OVBATCH, *args], env=env, capture_output=True, text=True, timeout=600)
    where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, where
    assert done.returncode == rc, where
    return done


@pytest.fixture
def env(whisper_home: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    return {**base, **whisper_home}


def test_embedded_mode_when_redis_is_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    env["OVBATCH_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    out = tmp_path / "out"
    done = run(
        env,
        "transcribe",
        str(EXAMPLES / "quilter.wav"),
        "--model",
        "whisper-base",
        "--out",
        str(out),
        "--format",
        "txt,srt",
    )
    assert "unreachable: running in embedded mode" in done.stderr
    assert "Quilter is the apostle" in (out / "quilter.txt").read_text()
    assert (out / "quilter.srt").read_text().startswith("1\n00:00:00,000 --> ")
    assert not (out / "quilter.json").exists(), "only the formats asked for"


def test_word_timestamps_reach_the_json_output(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(EXAMPLES / "quilter.wav"), "--model", "whisper-base", "--out", str(out), "--local"]
    run(env, "transcribe", *args, "--format", "json,srt", "--word-timestamps")
    doc = json.loads((out / "quilter.json").read_text())
    words = [w for seg in doc["segments"] for w in seg["words"]]
    assert "".join(w["text"] for w in words) == "".join(seg["text"] for seg in doc["segments"])
    assert [w["text"].strip() for w in words[:2]] == ["Mr.", "Quilter"], words[:2]
    assert all(set(w) == {"start_s", "end_s", "text", "probability"} for w in words)
    assert all(a["start_s"] <= b["start_s"] for a, b in itertools.pairwise(words))
    assert (out / "quilter.srt").read_text().startswith("1\n00:00:00,000 --> ")


def test_no_timestamps_gives_one_segment_per_piece_and_refuses_word_timestamps(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [str(EXAMPLES / "quilter.wav"), "--model", "whisper-base", "--out", str(out), "--local"]
    run(env, "transcribe", *args, "--format", "json,srt", "--no-timestamps")
    doc = json.loads((out / "quilter.json").read_text())
    assert len(doc["segments"]) == 1, doc["segments"]
    seg = doc["segments"][0]
    assert "Quilter is the apostle of the middle classes" in seg["text"], seg
    assert 0.0 <= seg["start_s"] < 0.5 and seg["end_s"] > 4.0, f"the segment should span the speech: {seg}"
    assert (out / "quilter.srt").read_text().startswith("1\n00:00:00,"), "srt has its one cue"
    refused = run(env, "transcribe", *args, "--format", "json", "--no-timestamps", "--word-timestamps", rc=2)
    assert "--word-timestamps needs segment timestamps" in refused.stderr, refused.stderr


def test_a_second_batch_with_other_options_never_overwrites_outputs_silently(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Two batches into one --out with other options (or models) would write the same names: the
    second fails at submission, naming the first, unless --overwrite."""
    out = tmp_path / "out"
    first = [
        str(EXAMPLES / "quilter.wav"),
        "--model",
        "whisper-base",
        "--out",
        str(out),
        "--format",
        "txt,json",
        "--local",
    ]
    run(env, "transcribe", *first)
    before = (out / "quilter.json").read_text()
    refused = run(env, "transcribe", *first, "--word-timestamps", rc=1)
    assert "0 done" in refused.stdout and "1 failed" in refused.stdout, refused.stdout
    assert "quilter.txt already holds the output of" in refused.stderr and "--overwrite" in refused.stderr, (
        refused.stderr
    )
    assert (out / "quilter.json").read_text() == before, "nothing may be rewritten"
    replaced = run(env, "transcribe", *first, "--word-timestamps", "--overwrite")
    assert "1 done" in replaced.stdout, replaced.stdout
    assert "words" in json.loads((out / "quilter.json").read_text())["segments"][0]


def test_bad_files_fail_alone_with_their_reasons(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "quilter.wav", src / "good.wav")
    shutil.copy(EXAMPLES / "archive.flac", src / "long.flac")  # 6.9 s: over the 6 s limit below
    (src / "empty.wav").write_bytes(b"")
    (src / "notes.wav").write_text("this is not audio at all\n" * 20)
    good = (EXAMPLES / "subtitles.ogg").read_bytes()
    (src / "truncated.ogg").write_bytes(good[: len(good) // 3] + os.urandom(2000))
    out = tmp_path / "out"
    done = run(
        env,
        "transcribe",
        str(src),
        str(tmp_path / "missing.wav"),
        "--model",
        "whisper-base",
        "--out",
        str(out),
        "--local",
        "--max-duration-s",
        "6",
        rc=1,
    )
    report = json.loads(next(out.glob("batch-*.json")).read_text())
    by_name = {Path(r["display"]).name: r for r in report["inputs"]}
    assert by_name["good.wav"]["status"] == "done"
    assert "Quilter" in (out / "good.txt").read_text()
    reasons = {name: (r["status"], r["error"] or "") for name, r in by_name.items() if name != "good.wav"}
    assert reasons["empty.wav"][0] == "failed" and "empty" in reasons["empty.wav"][1]
    assert reasons["notes.wav"][0] == "failed" and "not an audio file" in reasons["notes.wav"][1]
    assert reasons["long.flac"][0] == "failed" and "6" in reasons["long.flac"][1]
    assert reasons["missing.wav"][0] == "failed"
    truncated = reasons["truncated.ogg"]
    assert truncated[0] in ("failed", "done"), truncated  # a cut ogg may still decode its first part
    for name, (status, error) in reasons.items():
        if status == "failed":
            assert name in error or name in done.stderr, f"the reason for {name} does not name it: {error}"
            assert by_name[name]["retryable"] is False and by_name[name]["attempts"] <= 1


def test_cancel_then_retry_through_redis(env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    env["OVBATCH_BROKER_URL"] = redis_url
    out = tmp_path / "out"
    bid = run(env, "transcribe", str(EXAMPLES), "--model", "whisper-base", "--out", str(out)).stdout
    bid = bid.split("batch ", 1)[1].split(":", 1)[0]
    run(env, "cancel", bid)
    worker = subprocess.Popen(
        [OVBATCH, "worker", "--device", "CPU"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            s = json.loads(run(env, "status", bid, "--json").stdout)["summary"]
            if s["ended_s"]:
                break
            time.sleep(0.5)
        assert s["cancelled"] == 3 and s["done"] == 0, s
        assert "3 file(s) queued again" in run(env, "retry", bid).stdout
        watched = run(env, "watch", bid).stdout  # reattaches from another process
        assert "3 done" in watched, watched
        listing = run(env, "results", bid, "--download", str(tmp_path / "dl")).stdout
        assert "quilter.srt" in listing and (tmp_path / "dl" / "quilter.vtt").is_file()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
