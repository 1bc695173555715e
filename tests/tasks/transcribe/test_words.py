"""Word timestamps: the timing maths against openai-whisper's, the aligner against transformers, and
word times against faster-whisper on the real Whisper base."""

from __future__ import annotations

import difflib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovbatch.tasks.transcribe.engine import DECODER, WhisperEngine
from ovbatch.tasks.transcribe.formats import render
from ovbatch.tasks.transcribe.spec import TranscribeJob, job_id_for
from ovbatch.tasks.transcribe.types import Segment, TranscribeOptions, Transcript, Word
from ovbatch.tasks.transcribe.words import (
    SegmentSpan,
    TokenBytes,
    WordTiming,
    dtw,
    median_filter,
    segment_words,
)
from tests.conftest import CACHE, cache_lock

# --- the timing maths -----------------------------------------------------------------------------


def openai_dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai-whisper's ``dtw_cpu`` + ``backtrace``, loop for loop."""
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf)
    trace = -np.ones((n + 1, m + 1))
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = n, m
    trace[0, :], trace[:, 0] = 2, 1
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = (i - 1, j - 1) if trace[i, j] == 0 else (i - 1, j) if trace[i, j] == 1 else (i, j - 1)
    out = np.array(path[::-1]).T
    return out[0], out[1]


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (6, 40), (25, 300)])
def test_dtw_takes_openai_whispers_path(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(sum(shape)).standard_normal(shape)
    got, want = dtw(x), openai_dtw(x)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_median_filter_reflects_at_the_edges() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 20)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (0, 0), (3, 3)], mode="reflect")  # torch's "reflect": edge not repeated
    want = np.stack([np.median(padded[..., k : k + 7], axis=-1) for k in range(20)], axis=-1)
    assert np.array_equal(median_filter(x, 7), want)
    assert np.array_equal(median_filter(x[..., :3], 7), x[..., :3]), "too short to filter: unchanged"


def _tokenizer_json(vocab: list[str]) -> str:
    return json.dumps({"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(vocab)}}})


def test_tokens_split_into_words_at_spaces_punctuation_and_whole_characters() -> None:
    # byte-level BPE spelling: "Ġ" is a space, "Ã" + "©" are the two bytes of "é"
    vocab = ["ĠHello", ",", "Ġw", "orld", ".", "ĠcafÃ", "©", "Ġ(", "x", ")"]
    tb = TokenBytes(_tokenizer_json(vocab))
    assert tb.text([5, 6]) == " café"
    assert tb.split_on_unicode([5, 6, 2]) == ([" café", " w"], [[5, 6], [2]])
    words, tokens = tb.split_words([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "en")
    assert words == [" Hello", ",", " world", ".", " café", " (x", ")"], "as openai-whisper splits them"
    assert tokens == [[0], [1], [2, 3], [4], [5, 6], [7, 8], [9]]
    assert tb.split_words([2, 3], "ja") == ([" w", "orld"], [[2], [3]]), "no spaces: one word per character group"


def _timing(text: str, start: float, end: float, n: int = 1) -> WordTiming:
    return WordTiming(text, list(range(n)), start, end, 0.9)


def test_segment_words_merge_punctuation_stay_in_their_segment_and_skip_pauses() -> None:
    alignment = [  # window times, as DTW gives them: punctuation often takes no time
        _timing(" Hello", 0.0, 0.5),
        _timing(",", 0.5, 0.5),
        _timing(" world", 0.5, 1.0),
        _timing(".", 1.0, 1.0),
        _timing(" (", 1.0, 1.0),
        _timing(" Again", 1.0, 3.4, 2),  # starts in a 1.9 s pause
        _timing(")", 3.4, 3.4),
    ]
    audible = np.ones(250, dtype=bool)
    audible[50:145] = False  # 1.0 s .. 2.9 s from the window start is silent
    segments = [SegmentSpan(10.0, 10.8, 4), SegmentSpan(10.8, 13.4, 4)]
    (first, second), last = segment_words(alignment, segments, 10.0, 10.0, audible)
    assert [w.text for w in first] == [" Hello,", " world."]
    assert [w.text for w in second] == [" ( Again)"], "opening and closing marks join their word"
    assert [(w.start_s, w.end_s) for w in first] == [(10.0, 10.5), (10.5, 10.8)], "cut at the segment's end"
    assert second[0].start_s == pytest.approx(12.9), "the word starts when the sound does, not in the pause"
    assert second[0].end_s == 13.4 and last == 13.4
    assert all(w.probability == pytest.approx(0.9) for w in first + second)


def test_json_has_word_probabilities_and_the_option_changes_the_job_id() -> None:
    words = (Word(0.0, 0.4, " Hi", 0.91234), Word(0.4, 0.9, " there.", 0.5))
    doc = json.loads(render(Transcript("en", [Segment(0.0, 0.9, " Hi there.", words)], 0.9), "json", {}))
    assert doc["segments"][0]["words"][0] == {"start_s": 0.0, "end_s": 0.4, "text": " Hi", "probability": 0.9123}
    plain, timed = TranscribeOptions(), TranscribeOptions(word_timestamps=True)
    ids = {job_id_for("ab" * 32, "m@1", o, ("json",), "file:///out", "a.wav") for o in (plain, timed)}
    assert len(ids) == 2
    job = TranscribeJob(
        batch_id="b",
        job_id="j",
        input_url="registry:x",
        input_sha256="ab" * 32,
        display="a.wav",
        relpath="a.wav",
        model="m@1",
        device="CPU",
        out_url="file:///o",
        options=timed,
    )
    assert TranscribeJob.from_json(json.loads(json.dumps(job.to_json()))).options.word_timestamps


# --- the real Whisper base ------------------------------------------------------------------------

SPEECH = CACHE / "speech"


@pytest.fixture(scope="module")
def loaded(whisper_home: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """The decrypted version and compiled models, as a worker holds them."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import load_and_compile
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    store = FileStore(Path(whisper_home["OVBATCH_STORAGE_URL"].removeprefix("file://")))
    registry = Registry(store, Keyring.load(Path(whisper_home["OVBATCH_KEYRING"])))
    return load_and_compile(registry, ModelRef.parse("whisper-base"), make_core(), "CPU")


@pytest.fixture(scope="module")
def engine(loaded: tuple[Any, dict[str, Any]]) -> WhisperEngine:
    return WhisperEngine.from_loaded(*loaded)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    import soundfile as sf

    from benchmarks.speech import make_clips

    with cache_lock("speech"):
        names = sorted(make_clips(SPEECH))
    return {name: np.asarray(sf.read(SPEECH / name, dtype="float32")[0]) for name in names}


def _pick(clips: dict[str, np.ndarray], *indices: int) -> list[np.ndarray]:
    names = sorted(clips)
    return [clips[names[i]] for i in indices]


def _check_words(got: Transcript) -> None:
    previous = 0.0
    for seg in got.segments:
        assert seg.words, f"segment without words: {seg}"
        assert "".join(w.text for w in seg.words) == seg.text, f"words {seg.words} do not spell {seg.text!r}"
        for w in seg.words:
            assert seg.start_s <= w.start_s <= w.end_s <= seg.end_s, f"{w} outside {seg.start_s}..{seg.end_s}"
            assert w.start_s >= previous, f"{w} starts before the word before it ({previous})"
            assert w.probability is not None and 0.0 <= w.probability <= 1.0
            previous = w.start_s


@pytest.mark.slow
@pytest.mark.real_model
def test_aligner_weights_equal_transformers_cross_attentions(
    loaded: tuple[Any, dict[str, Any]],
    engine: WhisperEngine,
    clips: dict[str, np.ndarray],
    whisper_base_ct2: Path,
    tmp_path: Path,
) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration

    from ovbatch.registry.ct2 import rebuild_hf_whisper
    from ovbatch.tasks.transcribe.alignment import Aligner, compile_aligner, head_order

    version, compiled = loaded
    hidden = engine._encode(_pick(clips, 0, 13))
    prompt = engine.specials.prompt("en", "transcribe")
    results = engine.decoder.decode(hidden, [prompt] * 2, [0.0, 0.0], [np.random.default_rng(0)] * 2)
    eot = engine.specials.eot
    sequences = [[*prompt, engine.specials.no_timestamps, *(t for t in r.tokens if t < eot), eot] for r in results]

    rebuild_hf_whisper(whisper_base_ct2, tmp_path / "hf")
    hf = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    alignment_heads = json.loads(version.text("generation_config.json"))["alignment_heads"]
    want_weights, want_probs = [], []
    for row, seq in enumerate(sequences):
        with torch.inference_mode():
            out = hf(
                encoder_outputs=(torch.from_numpy(hidden[row : row + 1]),),
                decoder_input_ids=torch.tensor([seq]),
                output_attentions=True,
            )
        want_weights.append(
            np.stack([out.cross_attentions[lyr][0, h].numpy() for lyr, h in head_order(alignment_heads)])
        )
        text_probs = torch.softmax(out.logits[0, :-1, :eot], dim=-1).numpy()
        targets = np.minimum(seq[1:], eot - 1)  # the prompt's special tokens: some text token, as ours
        want_probs.append(text_probs[np.arange(len(seq) - 1), targets][: len(seq) - 2])  # up to the last text token

    f32 = Aligner(lambda: compile_aligner(version, compiled[DECODER], alignment_heads, eot, precision="f32"))
    assert engine.aligner is not None
    # measured: f32 within 3e-6 (probabilities 2e-5); the CPU's default bf16 within 0.015, mean 1e-5
    for label, aligner, atol in (("f32", f32, 1e-4), ("default precision", engine.aligner, 0.05)):
        weights, probs = aligner.run(hidden, sequences, eot)
        worst = max(float(np.abs(weights[r, :, : len(s)] - want_weights[r]).max()) for r, s in enumerate(sequences))
        print(f"\naligner ({label}) against transformers' cross-attentions: max |difference| {worst:.1e}")
        for row, seq in enumerate(sequences):
            got = weights[row, :, : len(seq)]
            np.testing.assert_allclose(got, want_weights[row], atol=atol, err_msg=f"row {row}: weights differ")
            assert np.abs(got - want_weights[row]).mean() < atol / 100
            np.testing.assert_allclose(probs[row, : len(seq) - 2], want_probs[row], atol=atol)


def _key(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


@pytest.mark.slow
@pytest.mark.real_model
def test_word_times_agree_with_faster_whisper(
    engine: WhisperEngine, clips: dict[str, np.ndarray], whisper_base_ct2: Path
) -> None:
    from faster_whisper import WhisperModel

    short = _pick(clips, 0, 7, 15, 22, 29)
    gap = np.zeros(8000, dtype=np.float32)
    sentences = _pick(clips, *range(1, 13))
    long = np.concatenate([x for clip in sentences for x in (clip, gap)])  # 45 s: two windows
    audios = [*short, long]
    options = TranscribeOptions(language="en", word_timestamps=True)
    # each clip alone, as faster-whisper hears it (packed, the texts differ: test_packed_word_times...)
    packing, engine.config = engine.config, replace(engine.config, pack_max_s=0)
    try:
        got = engine.transcribe_many(audios, options)
    finally:
        engine.config = packing
    fw = WhisperModel(str(whisper_base_ct2), device="cpu", compute_type="float32", cpu_threads=2)
    starts, ends, total = [], [], 0
    for audio, ours in zip(audios, got, strict=True):
        _check_words(ours)
        mine = [w for s in ours.segments for w in s.words]
        theirs = [w for s in fw.transcribe(audio, beam_size=1, language="en", word_timestamps=True)[0] for w in s.words]
        total += len(mine)
        keys = [_key(m.text) for m in mine], [_key(t.word) for t in theirs]
        for a, b, size in difflib.SequenceMatcher(None, *keys, autojunk=False).get_matching_blocks():
            starts += [abs(mine[a + k].start_s - theirs[b + k].start) for k in range(size)]
            ends += [abs(mine[a + k].end_s - theirs[b + k].end) for k in range(size)]
    assert len(starts) >= 0.8 * total, f"only {len(starts)} of {total} words found in faster-whisper's transcripts"
    # measured: 0.023 s and 0.012 s (0.003 s on the 36 short clips alone; the DTW step is 0.02 s). The
    # same method on the same weights differs where bf16 moves an attention peak, where a pause is
    # trimmed off a word or a word is kept inside its segment, and where faster-whisper, which seeks
    # to the last word, cuts the long file into other windows
    mean_start, mean_end = float(np.mean(starts)), float(np.mean(ends))
    figures = f"{len(starts)} words, mean |start| {mean_start:.3f} s, |end| {mean_end:.3f} s"
    print(f"\nword times against faster-whisper: {figures}, max {max(starts + ends):.2f} s")
    assert mean_start <= 0.05 and mean_end <= 0.05 and max(starts + ends) <= 0.5, figures

    # where those differ, ours are the closer to the truth: sentence starts in the long file
    # (measured mean error 0.02 s; faster-whisper's 0.10 s)
    bounds = np.cumsum([0] + [len(c) + len(gap) for c in sentences[:-1]])
    truth = [(b + int(np.argmax(np.abs(c) > 0.02))) / 16000 for b, c in zip(bounds, sentences, strict=True)]
    words = [w for s in got[-1].segments for w in s.words]
    errors = [next(w.start_s for w in words if w.end_s > t + 0.05) - t for t in truth]
    size = np.abs(errors)
    print(f"sentence starts in the 45 s file: mean |error| {size.mean():.3f} s, max {size.max():.3f} s")
    assert np.mean(np.abs(errors)) <= 0.06 and max(np.abs(errors)) <= 0.15, f"sentence start errors {errors}"


@pytest.mark.slow
@pytest.mark.real_model
def test_packed_word_times_are_each_files_own(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    """Short clips packed into one window: each file's words start when its speech does, in its own
    time, and end inside it."""
    short = _pick(clips, 0, 7, 15, 22, 29)
    got = engine.transcribe_many(short, TranscribeOptions(language="en", word_timestamps=True))
    assert engine.config.pack_max_s > 0 and all(len(c) < engine.config.pack_max_s * 16000 for c in short)
    errors = []
    for i, (audio, transcript) in enumerate(zip(short, got, strict=True)):
        _check_words(transcript)
        words = [w for s in transcript.segments for w in s.words]
        assert words, f"clip {i} lost its words in the pack"
        assert words[-1].end_s <= len(audio) / 16000 + 1e-6, f"clip {i}: a word ends after the clip: {words[-1]}"
        errors.append(words[0].start_s - int(np.argmax(np.abs(audio) > 0.02)) / 16000)
    assert max(np.abs(errors)) <= 0.15, f"first word start - speech onset per clip: {errors}"


@pytest.mark.slow
@pytest.mark.real_model
def test_first_word_after_a_pause_starts_when_the_speech_does(
    engine: WhisperEngine, clips: dict[str, np.ndarray]
) -> None:
    pairs = [_pick(clips, 0, 7), _pick(clips, 5, 30), _pick(clips, 1, 12)]
    silence = np.zeros(3 * 16000, dtype=np.float32)
    audios = [np.concatenate([a, silence, b]) for a, b in pairs]
    got = engine.transcribe_many(audios, TranscribeOptions(language="en", word_timestamps=True))
    for (a, b), transcript in zip(pairs, got, strict=True):
        _check_words(transcript)
        resumes_s = (len(a) + len(silence) + int(np.argmax(np.abs(b) > 0.02))) / 16000
        words = [w for s in transcript.segments for w in s.words]
        first = next(w for w in words if w.end_s > len(a) / 16000 + 1.0)
        # without trimming pauses off words, one of these started 0.6 s early (faster-whisper too)
        print(f"\nfirst word after 3 s of silence: {first.start_s - resumes_s:+.3f} s from the sound")
        assert resumes_s - 0.1 <= first.start_s <= resumes_s + 0.3, f"{first} for speech resuming at {resumes_s:.2f}"
        before = [w for w in words if w.end_s <= resumes_s]
        assert before and before[-1].end_s <= len(a) / 16000 + 0.1, f"{before[-1:]} runs into the silence"


@pytest.mark.slow
@pytest.mark.real_model
def test_without_word_timestamps_nothing_changes_and_no_aligner_is_compiled(
    loaded: tuple[Any, dict[str, Any]], clips: dict[str, np.ndarray]
) -> None:
    fresh = WhisperEngine.from_loaded(*loaded)
    assert fresh.aligner is not None and DECODER in loaded[1]
    audios = _pick(clips, 3, 18)
    plain = fresh.transcribe_many(audios, TranscribeOptions(language="en"))
    assert not fresh.aligner.compiled and fresh.aligner.calls == 0
    assert all(not s.words for t in plain for s in t.segments)
    timed = fresh.transcribe_many(audios, TranscribeOptions(language="en", word_timestamps=True))
    assert fresh.aligner.compiled and fresh.aligner.calls == 1, "one aligner call for the batch"
    strip = [[(s.start_s, s.end_s, s.text) for s in t.segments] for t in timed]
    assert strip == [[(s.start_s, s.end_s, s.text) for s in t.segments] for t in plain]


def test_an_aligner_that_cannot_be_built_fails_fast_and_is_not_rebuilt() -> None:
    from ovbatch.tasks.transcribe.alignment import Aligner

    builds = []

    def build() -> None:
        builds.append(1)
        raise RuntimeError("no cross-attention ops in this decoder")

    aligner = Aligner(build)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="no cross-attention"):
            aligner.ensure()
    assert builds == [1] and not aligner.compiled
