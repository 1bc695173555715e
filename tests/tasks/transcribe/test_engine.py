"""The Whisper engine: its pure parts (rules, segments, streaming) and the real Whisper base on speech."""

from __future__ import annotations

import difflib
import itertools
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ovbatch.tasks.transcribe.decoding import DecodeResult
from ovbatch.tasks.transcribe.engine import StreamRequest, WhisperEngine, best_attempt
from ovbatch.tasks.transcribe.rules import LogitRules, RowHistory
from ovbatch.tasks.transcribe.segments import split_window
from ovbatch.tasks.transcribe.stats import EngineStats
from ovbatch.tasks.transcribe.streaming import AudioStream, level_range_db, pieces, quiet_cut
from ovbatch.tasks.transcribe.tokens import SpecialTokens
from ovbatch.tasks.transcribe.types import TranscribeOptions, Transcript

TB = 50364  # <|0.00|> in the multilingual Whisper vocabulary
GEN = (
    '{"eos_token_id": 50257, "decoder_start_token_id": 50258, "prev_sot_token_id": 50361,'
    ' "no_timestamps_token_id": 50363, "task_to_id": {"transcribe": 50359, "translate": 50358},'
    ' "lang_to_id": {"<|en|>": 50259, "<|de|>": 50261}, "suppress_tokens": [1, 2],'
    ' "begin_suppress_tokens": [220, 50257], "max_initial_timestamp_index": 50, "max_length": 448}'
)
TOK = '{"added_tokens": [{"id": 50362, "content": "<|nocaptions|>"}, {"id": 50360, "content": "<|startoflm|>"}]}'
VOCAB = 51865


@pytest.fixture
def specials() -> SpecialTokens:
    return SpecialTokens.from_json(GEN, TOK)


# --- special tokens and logit rules ---------------------------------------------------------------


def test_special_tokens_and_prompt(specials: SpecialTokens) -> None:
    assert (specials.timestamp_begin, specials.no_speech, specials.eot) == (TB, 50362, 50257)
    assert specials.prompt("de", "translate") == [50258, 50261, 50358]
    assert specials.prompt("en", "transcribe", timestamps=False) == [50258, 50259, 50359, 50363]
    assert {50258, 50359, 50358, 50362, 1, 2} <= set(specials.all_suppressed())


def _apply(specials: SpecialTokens, sampled: list[int]) -> np.ndarray:
    history = RowHistory(1)
    for token in sampled:
        history.push(np.array([token]), TB)
    logits = np.zeros((1, VOCAB), dtype=np.float32)
    logits[0, 500] = 5.0  # a likely text token, so timestamps are not forced by probability
    return LogitRules(specials, VOCAB).apply(logits, history)[0]


def test_first_token_is_an_early_timestamp(specials: SpecialTokens) -> None:
    row = _apply(specials, [])
    allowed = np.flatnonzero(np.isfinite(row))
    assert allowed.min() == TB and allowed.max() == TB + 50, "first token must be <|0.00|>..<|1.00|>"


def test_timestamps_come_in_pairs_and_never_go_back(specials: SpecialTokens) -> None:
    after_open = _apply(specials, [TB + 10, 500, 600])
    assert np.isinf(after_open[TB + 10]) and np.isfinite(after_open[TB + 11]), "timestamps must increase"
    after_single = _apply(specials, [TB + 10, 500, TB + 20])
    assert np.isinf(after_single[:50257]).all(), "after a segment's end timestamp only a timestamp or eot"
    assert np.isfinite(after_single[TB + 20]) and np.isinf(after_single[TB + 19])
    after_pair = _apply(specials, [TB + 10, 500, TB + 20, TB + 20])
    assert np.isinf(after_pair[TB:]).all(), "after a timestamp pair comes text"
    assert np.isinf(after_open[[1, 2, 50258, 50363]]).all(), "suppressed tokens must stay suppressed"


def test_timestamps_are_forced_when_more_probable_than_any_text(specials: SpecialTokens) -> None:
    history = RowHistory(1)
    history.push(np.array([TB]), TB)
    history.push(np.array([500]), TB)
    logits = np.zeros((1, VOCAB), dtype=np.float32)
    logits[0, TB:] = 3.0  # 1500 timestamp tokens at e^3 each outweigh any one text token
    row = LogitRules(specials, VOCAB).apply(logits, history)[0]
    assert np.isinf(row[:TB]).all()


def test_a_plain_row_gets_text_only_and_its_first_text_step_is_begin_suppressed(specials: SpecialTokens) -> None:
    history = RowHistory(2, plain=np.array([True, False]))
    logits = np.zeros((2, VOCAB), dtype=np.float32)
    logits[:, 500] = 5.0
    first = LogitRules(specials, VOCAB).apply(logits, history)
    assert np.isinf(first[0, specials.no_timestamps :]).all(), "a plain row's first token must not be a timestamp"
    assert np.isinf(first[0, [220, specials.eot, 1, 2]]).all(), "begin_suppress (space, eot) and suppress"
    assert np.isfinite(first[0, 500]), "text is allowed first on a plain row"
    assert np.flatnonzero(np.isfinite(first[1])).min() == TB, "the timestamped row still opens on a timestamp"
    history.push(np.array([500, TB]), TB)
    history.push(np.array([600, 500]), TB)
    logits = np.zeros((2, VOCAB), dtype=np.float32)
    logits[:, TB:] = 3.0  # timestamps more probable than text: forced on a timestamped row, never on a plain one
    later = LogitRules(specials, VOCAB).apply(logits, history)
    assert np.isinf(later[0, specials.no_timestamps :]).all(), "a plain row must never get a timestamp"
    assert np.isfinite(later[0, 220]) and np.isfinite(later[0, specials.eot]), "space and eot come back after step 1"
    assert np.isinf(later[1, :TB]).all(), "the timestamped row keeps its rules beside a plain one"


def test_text_may_not_end_on_a_segment_opened_before_the_sound_ends(specials: SpecialTokens) -> None:
    """The engine holds <|endoftext|> until ``eot_from``: Whisper opens a last segment and stops."""

    rules = LogitRules(specials, VOCAB)

    def apply(sampled: list[int], eot_from: int, eot_logit: float = 9.0) -> np.ndarray:
        history = RowHistory(1, eot_from=np.array([eot_from]))
        for token in sampled:
            history.push(np.array([token]), TB)
        logits = np.zeros((1, VOCAB), dtype=np.float32)
        logits[0, specials.eot] = eot_logit
        return rules.apply(logits, history)[0]

    opened = [TB, 500, TB + 1200, TB + 1200]  # a segment ended at 24 s, the next opened at 24 s
    assert np.isinf(apply(opened, eot_from=1400)[specials.eot]), "sound goes on to 28 s: the text must go on"
    assert rules.stopped.tolist() == [True] and rules.eot_logits.tolist() == [9.0], "Whisper's own choice is kept"
    apply(opened, eot_from=1400, eot_logit=-1.0)
    assert rules.stopped.tolist() == [False], "eot was not the likeliest token: the hold changed nothing"
    assert np.isfinite(apply(opened, eot_from=1400)[500]), "text is what may come next"
    assert np.isfinite(apply(opened, eot_from=1200)[specials.eot]), "the last segment opens at the hold: it may end"
    assert np.isfinite(apply(opened, eot_from=0)[specials.eot]), "eot_from 0: never held"
    closed = [TB, 500, TB + 1200]  # a segment closed at 24 s: Whisper says no speech follows
    assert np.isfinite(apply(closed, eot_from=1400)[specials.eot]), "a closed last segment may end the text"
    assert np.isfinite(apply([TB], eot_from=1400)[specials.eot]), "a first timestamp alone is no opened segment"


@pytest.mark.slow
@pytest.mark.real_model
def test_what_the_hold_added_is_kept_only_if_probable(engine: WhisperEngine) -> None:
    """A held text that Whisper finds improbable ends where Whisper ended it (``_settle``)."""
    held = DecodeResult([TB, 11, 12, TB + 50, TB + 50, 13, 14, TB + 90], -6.0, 0.1, 0.0, 5, -1.0, -0.5)
    assert held.held_avg_logprob == pytest.approx(-5.0 / 4), "added: 3 tokens and the final eot"
    assert held.unheld().tokens == [TB, 11, 12, TB + 50, TB + 50] and held.unheld().sum_logprob == -1.5
    assert held.unheld().held_at == -1 and DecodeResult([1], -1.0, 0.0, 0.0).unheld().tokens == [1]
    probable = replace(held, sum_logprob=-2.0)  # added -1.0 over 4: -0.25 on average
    before = engine.stats.copy()
    settled = engine._settle([held, probable, DecodeResult([1], -1.0, 0.0, 0.0)])
    counted = engine.stats.since(before)
    assert [r.tokens for r in settled] == [held.tokens[:5], probable.tokens, [1]], "improbable text not cut back"
    assert (counted.held, counted.unheld) == (2, 1), f"held/unheld counted {counted.held}/{counted.unheld}"


def test_history_counts_only_the_rows_that_sampled() -> None:
    history = RowHistory(2)
    history.push(np.array([50363, TB + 3]), TB, rows=np.array([False, True]))  # row 0 was fed its prompt
    assert history.n_sampled.tolist() == [0, 1] and history.max_ts.tolist() == [-1, TB + 3]
    assert history.last_ts.tolist() == [False, True]


# --- windows -> segments --------------------------------------------------------------------------


def test_window_with_complete_segments_is_consumed_whole() -> None:
    tokens = [TB, 11, 12, TB + 100, TB + 100, 13, TB + 200]
    got = split_window(tokens, TB, offset_s=30.0, window_frames=3000)
    assert [(s.start_s, s.end_s, s.tokens) for s in got.segments] == [
        (30.0, 32.0, [TB, 11, 12, TB + 100]),
        (32.0, 34.0, [TB + 100, 13, TB + 200]),
    ]
    assert got.advance_frames == 3000


def test_window_with_a_cut_off_segment_seeks_to_the_last_pair() -> None:
    tokens = [TB, 11, TB + 100, TB + 100, 13, 14]
    got = split_window(tokens, TB, offset_s=0.0, window_frames=3000)
    assert len(got.segments) == 1 and got.advance_frames == 200, "next window must start at 2.00 s"


def test_window_without_pairs_is_one_segment() -> None:
    got = split_window([TB, 11, 12], TB, offset_s=5.0, window_frames=1000)
    assert [(s.start_s, s.end_s) for s in got.segments] == [(5.0, 15.0)] and got.advance_frames == 1000


def test_when_every_temperature_fails_the_most_probable_fluent_attempt_wins() -> None:
    def attempt(sum_logprob: float, temperature: float) -> DecodeResult:
        return DecodeResult([1, 2, 3], sum_logprob, 0.1, temperature)

    attempts = [
        (attempt(-8.0, 0.0), "la la la la la la la la la la la la"),
        (attempt(-5.0, 0.2), "a b"),
        (attempt(-6.0, 0.4), "c d"),
    ]
    assert best_attempt(attempts, 2.4).temperature == 0.2
    assert best_attempt(attempts[:1], 2.4).temperature == 0.0, "with no fluent attempt, the most probable one"


# --- streaming ------------------------------------------------------------------------------------


def _blocks(audio: np.ndarray, sizes: Iterator[int]) -> Iterator[np.ndarray]:
    i = 0
    while i < len(audio):
        n = next(sizes)
        yield audio[i : i + n]
        i += n


def test_audio_stream_windows_equal_slices_whatever_the_blocks() -> None:
    audio = np.arange(100_000, dtype=np.float32)
    stream = AudioStream(_blocks(audio, itertools.cycle([7, 1000, 33_333, 1])), window=30_000)
    for start in (0, 5, 29_999, 60_000, 99_990, 100_000):
        assert np.array_equal(stream.window(start), audio[start : start + 30_000]), f"window at {start}"
    assert stream.ended and stream.end == 100_000


def test_pieces_cut_at_pauses_cover_the_stream_and_read_lazily() -> None:
    rng = np.random.default_rng(0)
    speech = (0.3 * rng.standard_normal(16000 * 100)).astype(np.float32)
    speech[16000 * 25 : 16000 * 26] = 0.0  # a pause inside the first 30 s
    got = list(pieces(_blocks(speech, itertools.repeat(4000)), 16000 * 30, 16000 * 20))
    offsets = [o for o, _ in got]
    assert np.array_equal(np.concatenate([a for _, a in got]), speech), "pieces must tile the stream"
    assert all(len(a) <= 16000 * 30 for _, a in got)
    assert 16000 * 25 <= offsets[1] <= 16000 * 26, f"first cut should fall in the pause, not at {offsets[1]}"

    endless = (np.full(4000, 0.1, dtype=np.float32) for _ in itertools.count())
    assert len(list(itertools.islice(pieces(endless, 16000 * 30, 16000 * 20), 3))) == 3


def test_a_piece_ends_in_the_middle_of_the_latest_pause_as_quiet_as_the_quietest() -> None:
    rng = np.random.default_rng(1)
    sr = 16000
    speech = (0.3 * rng.standard_normal(sr * 30)).astype(np.float32)
    speech[sr * 22 : sr * 23] = 0.0  # the quietest pause, early
    speech[sr * 26 : sr * 27] = 0.001 * rng.standard_normal(sr).astype(np.float32)  # -60 dB: as quiet
    speech[int(sr * 28.5) : sr * 29] = 0.1 * rng.standard_normal(sr // 2).astype(np.float32)  # a dip only
    cut = quiet_cut(speech, sr * 20, sr * 30)
    assert sr * 26.3 <= cut <= sr * 26.7, f"cut at {cut / sr:.2f} s: the middle of the pause at 26-27 s was expected"
    only_silence = quiet_cut(speech, sr * 20, sr * 30, within_db=0.0, below_db=80.0)
    assert sr * 22 <= only_silence <= sr * 23, "within 0 dB and 80 dB under speech only the silent pause is quiet"
    speech[sr * 26 : sr * 27] = 0.3 * rng.standard_normal(sr).astype(np.float32)  # speech again
    assert sr * 22 <= quiet_cut(speech, sr * 20, sr * 30) <= sr * 23, "a dip 10 dB over the quietest is no pause"
    silence = np.zeros(sr * 30, np.float32)
    assert sr * 20 <= quiet_cut(silence, sr * 20, sr * 30) <= sr * 30


def test_level_range_tells_steady_sound_from_speech_like_bursts() -> None:
    rng = np.random.default_rng(0)
    assert level_range_db(np.zeros(16000 * 5, dtype=np.float32)) < 1
    assert level_range_db((0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)) < 3
    gate = np.repeat(np.arange(20) % 2, 4000)  # 0.25 s on, 0.25 s off
    bursts = (0.1 * rng.standard_normal(16000 * 5) * gate).astype(np.float32)
    assert level_range_db(bursts) > 20


# --- the real Whisper base ------------------------------------------------------------------------

GERMAN = "Guten Tag, ich heiße Anna und ich wohne in Berlin. Heute ist das Wetter sehr schön."
QUILTER = "Mister Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "The weather today is cloudy with a chance of rain in the afternoon.",
    "Please remember to bring your passport and your ticket to the airport.",
    "Our team finished the project two weeks ahead of schedule.",
    "The train to the city leaves from platform four every hour.",
    "He planted tomatoes, carrots and beans in the garden behind the house.",
    "The museum has a large collection of paintings from the nineteenth century.",
    "We should meet again next week to discuss the budget for the new year.",
    "The children played football in the park until the sun went down.",
    "Scientists discovered a new species of frog in the rain forest.",
    "Learning a new language takes patience, practice and time.",
    "The old bridge over the river was repaired last spring.",
    "My sister works as a nurse at the hospital near the station.",
    "The concert was cancelled because of the heavy storm.",
    "Remember to turn off the lights when you leave the room.",
    "The mountain road is closed during the winter months.",
]


def speak(path: Path, text: str, voice: str = "en-us", pad_s: float = 0.0) -> np.ndarray:
    import soundfile as sf

    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are needed: `make test` installs them with apt")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(path), "pad", "0", str(pad_s)], check=True)
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return np.asarray(audio, dtype=np.float32)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def similarity(got: str, want: str) -> float:
    return difflib.SequenceMatcher(None, words(got), words(want), autojunk=False).ratio()


@pytest.fixture(scope="module")
def engine(whisper_home: dict[str, str]) -> WhisperEngine:
    """The engine as a worker builds it: decrypted into memory from an encrypted registry."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import load_and_compile
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    store = FileStore(Path(whisper_home["OVBATCH_STORAGE_URL"].removeprefix("file://")))
    registry = Registry(store, Keyring.load(Path(whisper_home["OVBATCH_KEYRING"])))
    version, compiled = load_and_compile(registry, ModelRef.parse("whisper-base"), make_core(), "CPU")
    return WhisperEngine.from_loaded(version, compiled)  # the engine keeps ``version`` (weights) alive


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    d = tmp_path_factory.mktemp("speech")
    out = {"quilter": speak(d / "q.wav", QUILTER)}
    out["german"] = speak(d / "de.wav", GERMAN, voice="de")
    parts = [speak(d / f"s{i}.wav", s, voice, 0.4) for i, (s, voice) in enumerate(_long_script())]
    out["long"] = np.concatenate(parts)
    return out


def _long_script() -> list[tuple[str, str]]:
    return [(s, "en-us") for s in SENTENCES] + [(s, "en-gb") for s in SENTENCES]


@pytest.mark.slow
@pytest.mark.real_model
def test_quilter_clip_transcribes_exactly(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    got = engine.transcribe([clips["quilter"]], TranscribeOptions(language="en"))
    want = " Mr. Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
    assert got.text == want.strip(), f"Quilter clip came out as {got.text!r}"
    assert got.language == "en" and len(got.segments) == 1
    seg = got.segments[0]
    assert 0.0 <= seg.start_s < 0.5 and 4.0 < seg.end_s <= got.duration_s + 1e-6, f"segment times {seg}"


@pytest.mark.slow
@pytest.mark.real_model
def test_language_is_detected(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    english = engine.transcribe([clips["quilter"]], TranscribeOptions())
    german = engine.transcribe([clips["german"]], TranscribeOptions())
    assert english.language == "en", f"English speech detected as {english.language!r}"
    assert german.language not in ("", "en"), f"German speech detected as {german.language!r}: {german.text!r}"
    assert similarity(english.text, "Mr. Quilter is the apostle of the middle classes") > 0.6


@pytest.mark.slow
@pytest.mark.real_model
def test_translate_gives_english_text(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    got = engine.transcribe([clips["german"]], TranscribeOptions(language="de", task="translate"))
    german = engine.transcribe([clips["german"]], TranscribeOptions(language="de"))
    assert got.text and got.text != german.text, f"translation {got.text!r}, transcription {german.text!r}"
    english = {"good", "day", "today", "weather", "berlin", "i", "am", "is", "the", "very"}
    assert len(english & set(words(got.text))) >= 2, f"translation has no English in it: {got.text!r}"


def _script_wer(text: str) -> float:
    """Word error rate of ``text`` against the long clip's script. A word error rate, not difflib's
    ratio: the script says its 16 sentences twice, and difflib's longest-block matching once paired
    one half with the other and scored a 7.7 %-WER text 0.47."""
    import jiwer

    return float(jiwer.wer(" ".join(words(" ".join(s for s, _ in _long_script()))), " ".join(words(text))))


def _check_timeline(got: Transcript) -> None:
    starts = [s.start_s for s in got.segments]
    assert starts == sorted(starts), f"segment starts go back: {starts}"
    for s in got.segments:
        assert 0.0 <= s.start_s <= s.end_s <= got.duration_s + 1e-6, f"segment out of range: {s}"


@pytest.mark.slow
@pytest.mark.real_model
def test_two_minute_file_streamed_in_odd_blocks(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    audio = clips["long"]
    assert len(audio) > 16000 * 110, f"the long clip is only {len(audio) / 16000:.0f} s"
    got = engine.transcribe(_blocks(audio, itertools.cycle([1234, 16000, 77777])), TranscribeOptions(language="en"))
    assert got.duration_s == pytest.approx(len(audio) / 16000)
    _check_timeline(got)
    assert len(got.segments) >= 20, f"only {len(got.segments)} segments for {len(_long_script())} sentences"
    assert got.segments[-1].end_s > got.duration_s - 10, f"the last segment ends at {got.segments[-1].end_s}"
    error = _script_wer(got.text)
    assert error < 0.15, f"word error rate {error:.1%} against the script; got {got.text!r}"
    whole = engine.transcribe([audio], TranscribeOptions(language="en"))
    assert whole.text == got.text, "block sizes changed the transcript"


@pytest.mark.slow
@pytest.mark.real_model
def test_a_long_file_without_timestamps_is_one_segment_per_piece_in_fewer_steps(
    engine: WhisperEngine, clips: dict[str, np.ndarray]
) -> None:
    audio = clips["long"]
    before = engine.stats.copy()
    timed = engine.transcribe([audio], TranscribeOptions(language="en"))
    with_ts = engine.stats.since(before)
    before = engine.stats.copy()
    blocks = _blocks(audio, itertools.cycle([4321, 16000]))
    plain = engine.transcribe(blocks, TranscribeOptions(language="en", timestamps=False))
    without = engine.stats.since(before)
    _check_timeline(plain)
    cuts = list(pieces(iter([audio]), 30 * 16000, 20 * 16000))
    assert len(plain.segments) == len(cuts), f"{len(plain.segments)} segments for {len(cuts)} pieces"
    for seg, (offset, piece) in zip(plain.segments, cuts, strict=True):
        start, end = offset / 16000, (offset + len(piece)) / 16000
        assert start <= seg.start_s < seg.end_s <= end + 0.02, f"segment {seg} outside its piece {start}-{end} s"
        assert seg.end_s - seg.start_s > 0.5 * (end - start), f"segment {seg} covers little of its piece"
    error = _script_wer(plain.text)
    assert error < 0.15, f"word error rate {error:.1%} without timestamps; got {plain.text!r}"
    assert without.windows == len(cuts), f"each piece is decoded whole, once: {without}"
    assert without.steps < with_ts.steps, f"no fewer decoder steps without timestamps: {without} vs {with_ts}"
    assert without.tokens < with_ts.tokens, f"no fewer tokens without timestamps: {without} vs {with_ts}"
    assert len(timed.segments) > len(plain.segments)


@pytest.mark.slow
@pytest.mark.real_model
def test_a_timestamped_long_file_takes_one_window_per_piece(
    engine: WhisperEngine, clips: dict[str, np.ndarray]
) -> None:
    """Pieces end in a pause, so each is decoded whole: the text is held (``hold_eot_s``) where
    Whisper would open the piece's last sentence and stop, leaving it to a window of its own."""
    audio = clips["long"]
    cuts = list(pieces(iter([audio]), 30 * 16000, 20 * 16000))
    before = engine.stats.copy()
    held = engine.transcribe([audio], TranscribeOptions(language="en"))
    stats = engine.stats.since(before)
    _check_timeline(held)
    assert stats.windows == len(cuts), f"{stats.windows} windows for {len(cuts)} pieces: a piece was not decoded whole"
    assert stats.fallbacks == 0, f"a window fell back to sampling: {stats}"
    assert stats.held >= 1 and stats.unheld == 0, f"the hold should have kept a piece's text going: {stats}"
    error = _script_wer(held.text)
    assert error < 0.12, f"word error rate {error:.1%} with timestamps; got {held.text!r}"
    for (offset, piece), next_offset in zip(cuts, [o for o, _ in cuts[1:]] + [len(audio)], strict=True):
        inside = [s for s in held.segments if offset / 16000 <= s.start_s < next_offset / 16000]
        assert inside, f"no segment in the piece at {offset / 16000:.1f} s"
        assert inside[-1].end_s > (offset + len(piece)) / 16000 - 3.0, f"the piece at {offset / 16000:.1f} s ends early"


def _tune(seconds: float, noise: float = 0.0) -> np.ndarray:
    """A plucked melody (decaying notes, 0.5 s each), with white noise under it if asked."""
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    out = np.zeros_like(t)
    for k, f in enumerate(itertools.islice(itertools.cycle([220, 247, 262, 294, 330, 349, 392]), int(seconds * 2))):
        note = (t >= k * 0.5) & (t < k * 0.5 + 0.5)
        out[note] = (
            0.2
            * np.exp(-3 * (t[note] - k * 0.5))
            * (np.sin(2 * np.pi * f * t[note]) + 0.5 * np.sin(4 * np.pi * f * t[note]))
        )
    out += noise * np.random.default_rng(0).standard_normal(len(t))
    return out.astype(np.float32)


@pytest.mark.slow
@pytest.mark.real_model
def test_music_or_noise_after_the_speech_of_a_window_gets_no_text(
    engine: WhisperEngine, sentences: list[np.ndarray]
) -> None:
    """The hold keeps a text going only where Whisper opened a segment: sound after the last words
    that Whisper does not take for speech is not forced into text."""
    gap = np.zeros(8000, dtype=np.float32)
    speech = np.concatenate([x for s in sentences[:3] for x in (s, gap)])
    end_s = len(speech) / 16000
    noise = (0.05 * np.random.default_rng(1).standard_normal(16000 * 7)).astype(np.float32)
    for name, tail in (("a tune", _tune(7.0)), ("noise", noise), ("a tune in noise", _tune(7.0, 0.05))):
        got = engine.transcribe([np.concatenate([speech, tail])], TranscribeOptions(language="en"))
        late = [s for s in got.segments if s.end_s > end_s + 1.0]
        assert not late, f"{name} after the speech became text: {late}"
        import jiwer

        error = float(jiwer.wer(" ".join(words(" ".join(SENTENCES[:3]))), " ".join(words(got.text))))
        assert error < 0.25, f"speech before {name}: word error rate {error:.0%}, got {got.text!r}"


@pytest.mark.slow
@pytest.mark.real_model
def test_rows_with_and_without_timestamps_share_a_decoder_call(
    engine: WhisperEngine, clips: dict[str, np.ndarray], sentences: list[np.ndarray]
) -> None:
    """The decoder takes prompts of both lengths in one call: each row decodes as it would alone."""
    hidden = engine._encode([clips["quilter"], sentences[0]])
    timed, plain = engine.specials.prompt("en", "transcribe"), engine.specials.prompt("en", "transcribe", False)
    rng = [np.random.default_rng(0)] * 2
    alone = [engine.decoder.decode(hidden[[i]], [p], [0.0], rng[:1])[0] for i, p in ((0, plain), (1, timed))]
    mixed = engine.decoder.decode(hidden, [plain, timed], [0.0, 0.0], rng)
    assert [r.tokens for r in mixed] == [r.tokens for r in alone], "a row decodes otherwise beside the other kind"
    assert max(mixed[0].tokens) < engine.specials.eot, "the plain row got a special or timestamp token"
    assert mixed[1].tokens[0] >= engine.specials.timestamp_begin, "the timestamped row opens on a timestamp"
    text = engine.detokenizer.decode(mixed[0].tokens)
    assert text.strip() == "Mr. Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
    assert mixed[0].avg_logprob == pytest.approx(alone[0].avg_logprob, abs=0.05)

    done: dict[int, Transcript] = {}  # and through serve: a plain long file beside a pack of short ones

    def keep(i: int) -> Callable[[Transcript], None]:
        return lambda transcript: done.__setitem__(i, transcript)

    files = [(clips["long"], TranscribeOptions(language="en", timestamps=False))]
    files += [(a, TranscribeOptions(language="en")) for a in sentences[:3]]
    handed = [[StreamRequest([a], options, keep(i)) for i, (a, options) in enumerate(files)]]
    before = engine.stats.copy()
    engine.serve(lambda idle: handed.pop() if handed else None)
    assert engine.stats.since(before).windows <= 6, "the three short files were not packed beside the long one"
    error = _script_wer(done[0].text)
    assert len(done[0].segments) >= 4 and error < 0.15, f"the plain long file: {error:.1%}, {done[0].text!r}"
    for i in (1, 2, 3):
        assert similarity(done[i].text, SENTENCES[i - 1]) > 0.5, f"packed file {i} got {done[i].text!r}"
        assert len(done[i].segments) == 1 and done[i].segments[0].end_s > 1.0, f"file {i}: {done[i].segments}"


@pytest.mark.slow
@pytest.mark.real_model
def test_silence_and_noise_give_empty_transcripts(engine: WhisperEngine) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "silence": np.zeros(16000 * 40, dtype=np.float32),
        "white noise": (0.1 * rng.standard_normal(16000 * 40)).astype(np.float32),
        "quiet white noise": (0.01 * rng.standard_normal(16000 * 10)).astype(np.float32),
    }
    for name, audio in cases.items():
        for options in (TranscribeOptions(), TranscribeOptions(language="en")):
            got = engine.transcribe([audio], options)
            assert got.text == "" and got.segments == [], f"{name} ({options.language}) gave {got.text!r}"


@pytest.mark.slow
@pytest.mark.real_model
def test_transcribe_many_matches_one_by_one(engine: WhisperEngine, clips: dict[str, np.ndarray]) -> None:
    audios = [clips["quilter"], np.zeros(16000 * 3, dtype=np.float32), clips["german"]]
    options = TranscribeOptions()
    many = engine.transcribe_many(audios, options)
    single = [engine.transcribe([a], options) for a in audios]
    assert [t.text for t in many] == [t.text for t in single]
    assert [t.language for t in many] == [t.language for t in single]
    assert many[1].text == ""


def _peak_mb_streaming_silence(engine: WhisperEngine, minutes: int) -> float:
    import tracemalloc

    blocks = (np.zeros(16000, dtype=np.float32) for _ in range(60 * minutes))  # one second at a time
    tracemalloc.start()
    try:
        got = engine.transcribe(blocks, TranscribeOptions(language="en"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.duration_s == 60 * minutes and got.text == ""
    return peak / 1e6


@pytest.mark.slow
@pytest.mark.real_model
def test_memory_does_not_grow_with_the_length_of_a_stream(engine: WhisperEngine) -> None:
    short, long = _peak_mb_streaming_silence(engine, 6), _peak_mb_streaming_silence(engine, 18)
    assert long < short + 5, (
        f"peak Python memory {short:.0f} MB for 6 min of audio (a full batch), {long:.0f} MB for 18 min"
    )


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    d = tmp_path_factory.mktemp("sentences")
    return [speak(d / f"p{i}.wav", s, ("en-us", "en-gb")[i % 2], 0.3) for i, s in enumerate(SENTENCES[:6])]


@pytest.mark.slow
@pytest.mark.real_model
def test_short_files_share_windows_and_each_gets_its_own_text(
    engine: WhisperEngine, sentences: list[np.ndarray]
) -> None:
    for options in (TranscribeOptions(language="en"), TranscribeOptions(language="en", word_timestamps=True)):
        before = engine.stats.copy()
        got = engine.transcribe_many(sentences, options)
        windows = engine.stats.since(before).windows
        assert windows <= 2, f"{len(sentences)} short files took {windows} windows: they were not packed"
        for i, (transcript, audio) in enumerate(zip(got, sentences, strict=True)):
            score = similarity(transcript.text, SENTENCES[i])
            assert score > 0.8, f"file {i} ({options}) got {transcript.text!r} for {SENTENCES[i]!r}"
            assert transcript.duration_s == pytest.approx(len(audio) / 16000)
            _check_timeline(transcript)
            for seg in transcript.segments:
                for w in seg.words:
                    assert 0.0 <= w.start_s <= w.end_s <= transcript.duration_s + 1e-6, f"file {i}: word {w}"
            if options.word_timestamps:
                assert all(seg.words for seg in transcript.segments), f"file {i} lost its words in the pack"


@pytest.mark.slow
@pytest.mark.real_model
def test_packing_needs_a_given_language_and_can_be_turned_off(
    engine: WhisperEngine, sentences: list[np.ndarray], clips: dict[str, np.ndarray]
) -> None:
    before = engine.stats.copy()
    detected = engine.transcribe_many([clips["german"], *sentences[:2]], TranscribeOptions())
    assert engine.stats.since(before).windows == 3, "files whose language is detected are decoded alone"
    assert detected[0].language == "de" and [t.language for t in detected[1:]] == ["en", "en"]
    config = engine.config
    engine.config = replace(config, pack_max_s=0)
    try:
        before = engine.stats.copy()
        alone = engine.transcribe_many(sentences[:3], TranscribeOptions(language="en"))
        assert engine.stats.since(before).windows == 3, "pack_max_s=0 decodes every file alone"
    finally:
        engine.config = config
    for i, transcript in enumerate(alone):  # alone, Whisper base hears these clips worse than packed
        assert similarity(transcript.text, SENTENCES[i]) > 0.4, f"file {i} alone got {transcript.text!r}"


def _counted(engine: WhisperEngine, files: list[np.ndarray]) -> tuple[list[Transcript], EngineStats]:
    """The files' transcripts (English) and what decoding them cost the engine."""
    before = engine.stats.copy()
    got = engine.transcribe_many(files, TranscribeOptions(language="en"))
    return got, engine.stats.since(before)


def _heard(got: list[Transcript], sentence_of: dict[int, int]) -> None:
    for i, s in sentence_of.items():
        assert similarity(got[i].text, SENTENCES[s]) > 0.4, f"file {i} got {got[i].text!r} for {SENTENCES[s]!r}"


@pytest.mark.slow
@pytest.mark.real_model
def test_a_doubtful_pack_is_decoded_again_each_file_alone(engine: WhisperEngine, sentences: list[np.ndarray]) -> None:
    """A file of noise in a pack gets no text, so the pack's split cannot be trusted (packing.doubtful):
    its files are decoded again one by one, and each still gets its own text."""
    noise = (np.random.default_rng(0).standard_normal(3 * 16000) * 0.02).astype(np.float32)  # peaks -30 dBFS
    got, stats = _counted(engine, [sentences[0], noise, sentences[1]])
    assert stats.packs_redone == 1, f"the pack with a noise file should be redone once, got {stats}"
    assert stats.windows == 1 + 3, f"one pack window, then one window per file alone; got {stats.windows}"
    assert got[1].text == "", f"the noise file got {got[1].text!r}"
    _heard(got, {0: 0, 2: 1})


@pytest.mark.slow
@pytest.mark.real_model
def test_a_silent_file_is_decoded_alone_and_costs_its_neighbours_no_second_decode(
    engine: WhisperEngine, sentences: list[np.ndarray]
) -> None:
    """Digital silence, or a noise floor under -40 dBFS (packing.quiet), is never packed: packed it
    would leave a file without text and send the whole pack to be decoded again."""
    floor = (np.random.default_rng(1).standard_normal(3 * 16000) * 0.001).astype(np.float32)
    got, stats = _counted(engine, [sentences[0], np.zeros(3 * 16000, dtype=np.float32), sentences[1], floor])
    assert stats.packs_redone == 0, f"no pack should need a second decode, got {stats}"
    assert stats.windows == 1 + 2, f"the two sentences share a window, each quiet file has one; got {stats}"
    assert got[1].text == got[3].text == "", f"the quiet files got {got[1].text!r} and {got[3].text!r}"
    _heard(got, {0: 0, 2: 1})


@pytest.mark.slow
@pytest.mark.real_model
def test_a_packed_file_that_stops_leaves_alone_and_the_others_finish(
    engine: WhisperEngine, sentences: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """File 1 says stop on its second ask, which must come while its pack is being decoded: a step
    asks its files every ``STOP_CHECK_S``, and on a fast CPU the whole pack (4 sentences, one window)
    decodes in under the default 0.5 s, so the file would finish with its text before being asked
    again. Asked between every model call here, the stop lands mid-step on any CPU."""
    from ovbatch.tasks.transcribe import engine as engine_module

    monkeypatch.setattr(engine_module, "STOP_CHECK_S", 0.0)
    done: dict[int, Transcript] = {}
    asked = [0]

    def stop_soon() -> bool:
        asked[0] += 1
        return asked[0] < 2  # goes on when first asked, then stops

    def keep(i: int) -> Callable[[Transcript], None]:
        return lambda transcript: done.__setitem__(i, transcript)

    options = TranscribeOptions(language="en")
    requests = [
        StreamRequest([a], options, keep(i), stop_soon if i == 1 else (lambda: True))
        for i, a in enumerate(sentences[:4])
    ]
    handed = [requests]
    engine.serve(lambda idle: handed.pop() if handed else None)
    assert sorted(done) == [0, 1, 2, 3], f"every file gets its done call, got {sorted(done)}"
    assert done[1].text == "", f"the stopped file got text: {done[1].text!r}"
    for i in (0, 2, 3):
        assert similarity(done[i].text, SENTENCES[i]) > 0.5, f"file {i} got {done[i].text!r}"


@pytest.mark.slow
@pytest.mark.real_model
def test_empty_streams_and_bad_input(engine: WhisperEngine) -> None:
    from ovbatch.errors import InputError

    empty = engine.transcribe([], TranscribeOptions(language="en"))
    assert (empty.text, empty.duration_s, empty.language) == ("", 0.0, "en")
    assert engine.transcribe_many([], TranscribeOptions()) == []
    with pytest.raises(InputError, match="1-D mono"):
        engine.transcribe([np.zeros((10, 2), dtype=np.float32)], TranscribeOptions())
    with pytest.raises(InputError, match="language 'xx'"):
        engine.transcribe([np.zeros(16000, dtype=np.float32)], TranscribeOptions(language="xx"))


@pytest.mark.slow
@pytest.mark.real_model
def test_windows_the_fast_models_doubt_are_decoded_again_by_the_careful_ones(
    engine: WhisperEngine, sentences: list[np.ndarray]
) -> None:
    """``recheck``: with careful (f32) copies of the encoder and decoder, a doubted window gets
    exactly the text f32 alone gives it, and an undoubted one the fast models' text."""
    from ovbatch.ov import make_core
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, EngineConfig
    from ovbatch.tasks.transcribe.precision import compile_careful

    core, version = make_core(), engine._keepalive
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}

    def compiled(config: dict[str, str]) -> dict[str, object]:
        return {
            role: core.compile_model(version.read_model(core, role), "CPU", config)
            for role in (ENCODER, DECODER, DETOKENIZER)
        }

    fast, careful = compiled({}), compile_careful(version, core, "CPU", f32)
    files = sentences[:4]

    def run(
        models: dict[str, object], threshold: float, careful: dict[str, object] | None
    ) -> tuple[list[str], EngineStats]:
        checking = WhisperEngine.from_loaded(
            version, models, EngineConfig(pack_max_s=0, recheck_logprob=threshold), careful
        )
        got = checking.transcribe_many(files, TranscribeOptions(language="en"))
        return [t.text for t in got], checking.stats

    alone_f32, _ = run(compiled(f32), -1.0, None)
    alone_fast, _ = run(fast, -1.0, None)
    every, stats = run(fast, float("inf"), careful)
    assert stats.rechecked == len(files), f"every window is doubted at an infinite threshold: {stats}"
    assert every == alone_f32, "a doubted window must get the careful (f32) models' own text"
    none, stats = run(fast, float("-inf"), careful)
    assert stats.rechecked == 0, f"no window is doubted below any log-probability: {stats}"
    assert none == alone_fast, "an undoubted window keeps the fast models' text"
    clear, stats = run(fast, EngineConfig().recheck_logprob, careful)
    assert stats.rechecked < len(files), f"the default threshold doubted every clear sentence: {stats}"
    for i, text in enumerate(clear):
        assert similarity(text, SENTENCES[i]) > 0.4, f"file {i} got {text!r}"


@pytest.mark.slow
@pytest.mark.real_model
def test_doubted_windows_wait_to_share_a_careful_batch_and_a_file_stopped_while_waiting_leaves(
    engine: WhisperEngine, sentences: list[np.ndarray]
) -> None:
    """Doubted windows are not decoded again step by step: they wait (at most ``recheck_wait_steps``
    fast steps) until a batch of them has gathered or nothing else is left, as one careful call
    over several windows costs far less than several over one. A file that stops while its window
    waits leaves with nothing; the others finish. The doubt rule is fixed here (every even file)
    so that the schedule is known; what is scheduled is the real models' work."""
    from ovbatch.ov import make_core
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, EngineConfig
    from ovbatch.tasks.transcribe.precision import compile_careful

    core, version = make_core(), engine._keepalive
    fast = {role: core.compile_model(version.read_model(core, role), "CPU") for role in (ENCODER, DECODER, DETOKENIZER)}
    careful = compile_careful(version, core, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    files = sentences[:6]

    def run(wait: int, stops: int | None = None) -> tuple[dict[int, Transcript], list[list[int]], EngineStats]:
        done: dict[int, Transcript] = {}
        parked: set[int] = set()
        checks = [lambda i=i: not (i == stops and i in parked) for i in range(len(files))]
        which = {id(check): i for i, check in enumerate(checks)}
        batches: list[list[int]] = []

        class Scheduled(WhisperEngine):
            def _doubtful(self, track, result, text):  # type: ignore[no-untyped-def]
                i = which[id(track.file.go_on)]
                if i % 2 == 0:
                    parked.add(i)
                return i % 2 == 0

            def _careful_step(self, tracks):  # type: ignore[no-untyped-def]
                batches.append(sorted(which[id(t.file.go_on)] for t in tracks))
                super()._careful_step(tracks)

        config = EngineConfig(pack_max_s=0, batch_size=2, recheck_wait_steps=wait)
        scheduled = Scheduled.from_loaded(version, fast, config, careful)
        options = TranscribeOptions(language="en")
        handed = [
            [StreamRequest([a], options, lambda t, i=i: done.__setitem__(i, t), checks[i]) for i, a in enumerate(files)]
        ]
        scheduled.serve(lambda idle: handed.pop() if handed else None)
        return done, batches, scheduled.stats

    done, batches, stats = run(wait=0)
    assert batches == [[0], [2], [4]], f"without waiting each step's doubted window goes alone: {batches}"
    assert stats.encoder_calls == 6, f"3 fast and 3 careful encoder calls expected: {stats}"
    alone = {i: t.text for i, t in done.items()}
    done, batches, stats = run(wait=10)
    assert batches == [[0, 2], [4]], f"doubted windows of two steps should share a careful call: {batches}"
    assert stats.encoder_calls == 5 and stats.rechecked == 3, f"3 fast and 2 careful encoder calls: {stats}"
    assert {i: t.text for i, t in done.items()} == alone, "waiting must not change any text"
    for i, text in alone.items():
        assert similarity(text, SENTENCES[i]) > 0.4, f"file {i} got {text!r}"
    done, batches, _ = run(wait=10, stops=2)
    assert batches == [[0, 4]], f"file 2 stopped while waiting: only 0 and 4 are decoded again: {batches}"
    assert sorted(done) == list(range(6)) and done[2].text == "", f"file 2 leaves with nothing: {done.get(2)}"
    assert all(done[i].text == alone[i] for i in (0, 1, 3, 4, 5)), "the other files finish as before"
