"""Batching across jobs with the real engine: same transcripts as one at a time, bad audio fails alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ovbatch.errors import InputError
from ovbatch.settings import Settings
from ovbatch.tasks.transcribe import audio
from ovbatch.tasks.transcribe.types import TranscribeOptions
from ovbatch.workers.batcher import Batcher
from ovbatch.workers.main import build_embedded_context
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
CLIPS = [REPO / "examples" / "audio" / n for n in ("quilter.wav", "archive.flac", "subtitles.ogg")]


def test_batched_jobs_match_one_at_a_time_and_bad_audio_fails_alone(
    whisper_home: dict[str, str], tmp_path: Path
) -> None:
    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine_for("whisper-base@1", "CPU")
    assert isinstance(batcher, Batcher)
    engine = batcher.engine
    options = TranscribeOptions(language="en")
    alone = [engine.transcribe(audio.iter_blocks(p, p.name), options).text for p in CLIPS]
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio\n" * 50)
    paths = [CLIPS[0], bad, CLIPS[1], CLIPS[2]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(batcher.transcribe, audio.iter_blocks(p, p.name), options) for p in paths]
    results = [f.exception() or f.result() for f in futures]
    assert isinstance(results[1], InputError) and "bad.wav" in str(results[1])
    assert [r.text for r in (results[0], results[2], results[3])] == alone  # type: ignore[union-attr]
    other = batcher.transcribe(audio.iter_blocks(CLIPS[0], "q"), TranscribeOptions(language="en", task="translate"))
    assert "Quilter" in other.text


def test_retiring_waits_for_queued_work_then_refuses(whisper_home: dict[str, str]) -> None:
    from ovbatch.workers.batcher import ModelRetired

    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine_for("whisper-base@1", "CPU")
    options = TranscribeOptions(language="en")
    wiped = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(batcher.transcribe, audio.iter_blocks(CLIPS[0], "q"), options)
        time.sleep(0.01)
        batcher.retire(then=lambda: wiped.append(True))
        # had the weights been wiped under the running group, this text would be garbage
        assert "Quilter is the apostle" in running.result().text, "a retired model finishes what it was given"
    deadline = time.time() + 30
    while not wiped and time.time() < deadline:
        time.sleep(0.05)
    assert wiped == [True], "the wipe must run once the queued work is done"
    with pytest.raises(ModelRetired):
        batcher.transcribe(audio.iter_blocks(CLIPS[0], "q"), options)
