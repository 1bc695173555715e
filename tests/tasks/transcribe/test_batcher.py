"""Batching across jobs with the real engine: same transcripts as one at a time, bad audio fails alone."""

from __future__ import annotations

import difflib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ovbatch.errors import InputError
from ovbatch.settings import Settings
from ovbatch.tasks.transcribe import audio
from ovbatch.tasks.transcribe.batcher import Batcher
from ovbatch.tasks.transcribe.types import TranscribeOptions
from ovbatch.workers.main import build_embedded_context
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
CLIPS = [REPO / "examples" / "audio" / n for n in ("quilter.wav", "archive.flac", "subtitles.ogg")]


def test_batched_jobs_match_one_at_a_time_and_bad_audio_fails_alone(
    whisper_home: dict[str, str], tmp_path: Path
) -> None:
    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
    assert isinstance(batcher, Batcher)
    engine = batcher.engine
    options = TranscribeOptions(language="en")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio\n" * 50)
    paths = [CLIPS[0], bad, CLIPS[1], CLIPS[2]]

    def batched() -> list[Any]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(batcher.transcribe, audio.iter_blocks(p, p.name), options) for p in paths]
        results = [f.exception() or f.result() for f in futures]
        assert isinstance(results[1], InputError) and "bad.wav" in str(results[1])
        return [r.text for r in (results[0], results[2], results[3])]

    packing = engine.config
    engine.config = replace(packing, pack_max_s=0)  # each file its own window: batching changes no text
    try:
        alone = [engine.transcribe(audio.iter_blocks(p, p.name), options).text for p in CLIPS]
        assert batched() == alone
    finally:
        engine.config = packing

    # packed (the default: the three short clips share a window; Whisper hears some words otherwise
    # there), each job still gets its own file's words, closer to its file's text alone than to any other
    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a.lower().split(), b.lower().split()).ratio()

    for i, got in enumerate(batched()):
        closest = max(range(len(alone)), key=lambda j: ratio(got, alone[j]))
        assert closest == i and ratio(got, alone[i]) > 0.5, f"packed, job {i} got {got!r}; alone: {alone}"
    other = batcher.transcribe(audio.iter_blocks(CLIPS[0], "q"), TranscribeOptions(language="en", task="translate"))
    assert "Quilter" in other.text


def test_retiring_waits_for_queued_work_then_refuses(whisper_home: dict[str, str]) -> None:
    from ovbatch.errors import ModelRetired

    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
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


def test_a_short_file_arriving_during_a_long_one_is_not_held_behind_it(whisper_home: dict[str, str]) -> None:
    from dataclasses import replace

    import numpy as np

    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
    # two rows per step (a worker has 8): the long file alone would fill every row for many steps
    batcher.engine.config = replace(batcher.engine.config, batch_size=2)
    options = TranscribeOptions(language="en")
    quilter = np.concatenate(list(audio.iter_blocks(CLIPS[0], "q")))
    minutes = np.tile(np.concatenate([quilter, np.zeros(8000, np.float32)]), 40)  # about 4.5 minutes
    alone = batcher.engine.transcribe([quilter], TranscribeOptions(language="fr", task="translate")).text
    long_alone = batcher.engine.transcribe([minutes], options).text
    with ThreadPoolExecutor(max_workers=2) as pool:
        t0 = time.perf_counter()
        long = pool.submit(batcher.transcribe, [minutes], options)
        time.sleep(0.5)  # the long file is being decoded when the short one arrives
        assert not long.done()
        short = pool.submit(batcher.transcribe, [quilter], TranscribeOptions(language="fr", task="translate"))
        short_text = short.result().text
        short_s = time.perf_counter() - t0
        assert not long.done(), "the short file should be done while the long one is still being decoded"
        long_text = long.result().text
        long_s = time.perf_counter() - t0
    assert short_text == alone, "joining a running engine call must not change a file's text"
    assert long_text == long_alone, "a file joined by another mid-call must keep its text"
    assert short_s < long_s / 2, f"short file took {short_s:.1f} s of the long file's {long_s:.1f} s"


def test_word_timestamps_count_the_aligner_in_the_model_cache(whisper_home: dict[str, str]) -> None:
    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
    before = ctx.cache.total_bytes()
    batcher.transcribe(audio.iter_blocks(CLIPS[0], "q"), TranscribeOptions(language="en"))
    assert ctx.cache.total_bytes() == before, "no word timestamps asked: no aligner, no more memory"
    for _ in range(2):
        words = batcher.transcribe(
            audio.iter_blocks(CLIPS[0], "q"), TranscribeOptions(language="en", word_timestamps=True)
        )
        assert words.segments[0].words, "word timestamps were asked for"
    decoder = batcher.engine._keepalive.buffers["openvino_decoder_model.bin"].nbytes
    assert ctx.cache.total_bytes() == before + decoder, "the aligner is counted once, when it compiles"


def test_a_bad_option_fails_its_own_job_not_the_files_sharing_the_engine(whisper_home: dict[str, str]) -> None:
    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
    with ThreadPoolExecutor(max_workers=2) as pool:
        good = pool.submit(batcher.transcribe, audio.iter_blocks(CLIPS[0], "q"), TranscribeOptions(language="en"))
        bad = pool.submit(batcher.transcribe, audio.iter_blocks(CLIPS[1], "a"), TranscribeOptions(language="xx"))
        error = bad.exception()
        assert isinstance(error, InputError) and "language 'xx'" in str(error), error
        assert "Quilter is the apostle" in good.result().text


def test_a_stopped_file_leaves_at_the_next_step_and_the_others_go_on(whisper_home: dict[str, str]) -> None:
    """A job's stop check (cancel, time limit, shutdown) is asked before every step: the file stops
    with that error even while every one of its windows is already in the engine, and a file
    sharing the engine keeps its text."""
    from dataclasses import replace

    import numpy as np

    from ovbatch.errors import JobCancelled

    ctx = build_embedded_context(Settings.from_env(whisper_home), "CPU")
    batcher = ctx.engine("transcribe", "whisper-base@1", "CPU")
    batcher.engine.config = replace(batcher.engine.config, batch_size=2)  # more steps than the check needs
    options = TranscribeOptions(language="en")
    quilter = np.concatenate(list(audio.iter_blocks(CLIPS[0], "q")))
    minutes = np.tile(np.concatenate([quilter, np.zeros(8000, np.float32)]), 40)  # one block: no pulls to check at
    alone = batcher.engine.transcribe([quilter], options).text
    asked: list[float] = []

    def check() -> None:
        asked.append(time.perf_counter())
        if len(asked) >= 3:
            raise JobCancelled("long.wav: batch cancelled while this file was being transcribed")

    with ThreadPoolExecutor(max_workers=2) as pool:
        long = pool.submit(batcher.transcribe, [minutes], options, check)
        short = pool.submit(batcher.transcribe, [quilter], options)
        with pytest.raises(JobCancelled, match="long.wav: batch cancelled"):
            long.result(timeout=300)
        stopped = time.perf_counter()
        assert short.result(timeout=300).text == alone
    assert len(asked) == 3 and stopped - asked[-1] < 5, "the file must stop right after its check says so"
