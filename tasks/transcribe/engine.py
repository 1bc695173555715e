"""Whisper transcription on OpenVINO models compiled in memory (no model file is ever written).

``WhisperEngine`` cuts audio into 30 s windows, encodes them in batches, decodes them greedily in
lockstep on the stateful decoder (several windows per decoder call), falls back to sampling at
higher temperatures when a window's text is repetitive or improbable, drops windows that are
silence, and turns timestamp tokens into segments. Long files are streamed: cut in the latest pause
before 30 s (``streaming.quiet_cut``) into pieces, each decoded with openai-whisper's seeking rules
(and ``hold_eot_s``), so memory stays bounded by about ``batch_size`` windows plus one piece per
open file, whatever the length. A file whose options say ``timestamps=False`` has each piece decoded whole as text after
``<|notimestamps|>`` (one segment per piece, timed by its audible span), in the same decoder calls
as windows with timestamps (``decoding.py`` takes prompts of both lengths).
``serve`` takes files as they arrive and gives each its transcript as soon as it is done, so a
worker's batcher never holds a short file behind a long one. Short whole files whose language is
given are packed several to a window (``packing.py``, ``EngineConfig.pack_max_s``): one encoder
window and one decoder row for what took one per clip, and Whisper, which hears a lone short clip
worse than speech with context, made fewer errors on held-out clips that way (benchmarks/RESULTS.md).
A packed file's text therefore depends on which files shared its window; ``pack_max_s=0``
(``OVBATCH_WHISPER_PACK_S=0``) decodes every file alone.

Precision: the compiled models are used as given. With ``careful`` models (the same encoder and
decoder compiled in f32, ``precision.py``) the fast ones (bf16) decode every window first, and a
window whose greedy text is improbable (average log-probability below ``recheck_logprob``) or
would fall back to sampling is encoded and decoded again, from scratch, by the careful ones: bf16's
lost words were a few low-confidence windows whose early tokens flipped, so f32's accuracy costs
f32's time on those windows only (benchmarks/RESULTS.md, "bf16 first, f32 where it doubts").
Doubted windows wait (their tracks hold still; other files take their rows) until a batch of them
has gathered, nothing else is left to decode, or ``recheck_wait_steps`` fast steps have passed: a
decoder call over one window costs about half of one over eight (benchmarks/decoder_rows.py).

Word timestamps (``TranscribeOptions.word_timestamps``): after a batch of windows is decoded, one
teacher-forced pass of the aligner (``alignment.py``, compiled on first use) over each window's
text gives the alignment heads' cross-attention, which ``words.py`` turns into timed words; seeking
and segments stay exactly as without them. Not done: conditioning on the previous window's text
(windows of a batch must share one prompt length), beam search. An engine is not thread-safe: it
reuses one infer request per model.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from ovbatch.tasks.transcribe.alignment import Aligner, compile_aligner, default_alignment_heads
from ovbatch.tasks.transcribe.decoding import DecodeResult, WindowDecoder
from ovbatch.tasks.transcribe.features import FeatureConfig, LogMel
from ovbatch.tasks.transcribe.packing import Member, doubtful, pack_audio, quiet, split_segments
from ovbatch.tasks.transcribe.segments import RawSegment, WindowResult, compression_ratio, split_window
from ovbatch.tasks.transcribe.stats import EngineStats
from ovbatch.tasks.transcribe.streaming import AudioStream, level_range_db, pieces
from ovbatch.tasks.transcribe.tokens import TIME_PRECISION_S, Detokenizer, SpecialTokens
from ovbatch.tasks.transcribe.types import SAMPLE_RATE, Segment, TranscribeOptions, Transcript, Word
from ovbatch.tasks.transcribe.words import (
    SegmentSpan,
    TokenBytes,
    audible_frames,
    find_alignment,
    segment_words,
    token_frames,
)

ENCODER, DECODER, DETOKENIZER = "openvino_encoder_model.xml", "openvino_decoder_model.xml", "openvino_detokenizer.xml"


@dataclass(frozen=True)
class EngineConfig:
    batch_size: int = 8  # windows per encoder / decoder call
    piece_s: float = 30.0  # long audio is cut in the latest pause between min_piece_s and piece_s
    min_piece_s: float = 20.0
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    steady_level_db: float = 10.0  # a window whose level varies less than this is not speech ...
    steady_no_speech: float = 0.5  # ... when Whisper's no-speech probability is above this too
    # pad short windows' log-mel with zeros, as faster-whisper does (transformers pads the audio): on the
    # 36-clip espeak set this gave 27.9 % WER against 29.6 % (benchmarks/RESULTS.md)
    pad_log_mel: bool = True
    seed: int = 0
    aligner_rows: int = 2  # windows per aligner call (word timestamps): each more holds ~45 MB more
    # whole files up to pack_max_s long whose language is given share 30 s windows, pack_gap_s of
    # silence apart (packing.py): one encoder window and one decoder row for several short clips;
    # 0 turns packing off. Measured on held-out clips: benchmarks/RESULTS.md, "Short clips packed".
    pack_max_s: float = 10.0
    pack_gap_s: float = 2.0
    # with careful (f32) models: windows whose greedy text's average log-probability is below this
    # are decoded again by them (set on the 240-clip accuracy set: about one window in six there,
    # fewer on clearer speech; benchmarks/RESULTS.md)
    recheck_logprob: float = -0.8
    # doubted windows wait for a careful batch: until batch_size of them have gathered, nothing
    # else is left to decode, or they have waited this many fast steps (bounds a file's delay)
    recheck_wait_steps: int = 4
    # a timestamped window's text may not end (<|endoftext|>) right after opening a segment more than
    # this before the end of its audible sound (rules.py): Whisper often opens a window's last
    # sentence and stops, which left that sentence to a short window of its own, decoded without its
    # context; pieces end at a pause, so the sentence is whole in the window. What the hold adds
    # stays only if its average log-probability is at least logprob_threshold (``_settle``). 0: never held.
    # Measured: benchmarks/RESULTS.md, "Pieces cut at the latest pause, texts held to the end".
    hold_eot_s: float = 1.5


def best_attempt(attempts: list[tuple[DecodeResult, str]], max_compression_ratio: float) -> DecodeResult:
    """Of attempts that all failed the thresholds: the most probable one that is not repetitive."""
    fluent = [r for r, text in attempts if compression_ratio(text) <= max_compression_ratio]
    return max(fluent or [r for r, _ in attempts], key=lambda r: r.avg_logprob)


@dataclass
class StreamRequest:
    """One file for ``WhisperEngine.serve``: its audio blocks, its options, and where its transcript goes."""

    blocks: Iterable[np.ndarray]
    options: TranscribeOptions
    done: Callable[[Transcript], None]
    # asked before every step: False (or an exception, which ends ``serve``) stops the file at once,
    # its pieces in flight dropped: a cancelled or timed-out job does not wait for its open windows
    go_on: Callable[[], bool] = lambda: True


@dataclass
class _File:
    options: TranscribeOptions
    language: str | None
    go_on: Callable[[], bool] = lambda: True
    segments: list[tuple[int, int, Segment]] = field(default_factory=list)  # (piece, order, segment)
    samples: int = 0
    pieces: Iterator[tuple[int, np.ndarray]] = field(default_factory=lambda: iter(()))
    next_piece: int = 0
    open_tracks: int = 0  # its pieces being decoded now
    exhausted: bool = False  # every piece handed out
    finished: bool = False
    done: Callable[[Transcript], None] = lambda _: None
    held: tuple[int, np.ndarray] | None = None  # its first piece, read while gathering a pack
    members: list[tuple[_File, Member]] = field(default_factory=list)  # a pack: the files in it
    audio: np.ndarray | None = None  # a pack: its audio (its members are cut from it if decoded again)
    alone: bool = False  # never packed (its pack's transcript was doubtful: decoded again alone)


@dataclass
class _Track:
    """One stream being decoded window by window: a piece of a file (or a whole file)."""

    file: _File
    piece: int
    offset: int  # samples from the start of the file
    stream: AudioStream
    seek: int = 0  # mel frames into the stream
    window: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    last_speech_s: float = 0.0  # end of the last segment with words (word timestamps only)

    @property
    def frames(self) -> int:
        return -(-len(self.window) // 160)

    @property
    def offset_s(self) -> float:
        return (self.offset + self.seek * 160) / SAMPLE_RATE


log = logging.getLogger(__name__)

STOP_CHECK_S = 0.5  # how often a running step asks its files whether to stop


class _StepAborted(Exception):
    """A file of the running step must stop now (its job was cancelled, timed out or shut down)."""


class WhisperEngine:
    def __init__(
        self,
        specials: SpecialTokens,
        features: LogMel,
        compiled: dict[str, Any],
        config: EngineConfig | None = None,
        aligner: Aligner | None = None,
        tokenizer_json: str | None = None,
        careful: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.specials = specials
        self.features = features
        self._encoder = compiled[ENCODER].create_infer_request()
        vocab = int(compiled[DECODER].outputs[0].get_partial_shape()[2].get_length())
        self.stats = EngineStats()  # where the time goes (tasks/transcribe/stats.py)
        self.decoder = WindowDecoder(compiled[DECODER], specials, vocab, self.stats)
        # the same encoder and decoder compiled in f32: doubtful windows are decoded again by them
        self._careful_encoder = careful[ENCODER].create_infer_request() if careful else None
        self.careful_decoder = WindowDecoder(careful[DECODER], specials, vocab, self.stats) if careful else None
        self.detokenizer = Detokenizer(compiled[DETOKENIZER], specials.eot, specials.timestamp_begin)
        self.aligner = aligner  # word timestamps need it and the tokenizer's vocabulary
        self._tokenizer_json = tokenizer_json
        self._keepalive: Any = None

    @classmethod
    def from_loaded(
        cls,
        version: Any,
        compiled: dict[str, Any],
        config: EngineConfig | None = None,
        careful: dict[str, Any] | None = None,
    ) -> WhisperEngine:
        """From ``load_and_compile``'s decrypted version (for the JSON files) and compiled models;
        ``careful``: its encoder and decoder compiled in f32 (``precision.compile_careful``)."""
        tokenizer_json, model_config = version.text("tokenizer.json"), json.loads(version.text("config.json"))
        generation = version.text("generation_config.json")
        specials = SpecialTokens.from_json(generation, tokenizer_json)
        features = LogMel(FeatureConfig.from_json(version.text("preprocessor_config.json")))
        if model_config.get("num_mel_bins", 80) != features.config.n_mels:
            raise ValueError("config.json num_mel_bins differs from preprocessor_config.json feature_size")
        heads = json.loads(generation).get("alignment_heads") or default_alignment_heads(
            int(model_config["decoder_layers"]), int(model_config["decoder_attention_heads"])
        )
        # word times at the careful (f32) decoder's precision where there is one: one teacher-forced
        # pass per window costs little beside decoding, and f32 aligns closest (README, Word timestamps)
        aligned_like = (careful or compiled)[DECODER]
        aligner = Aligner(lambda: compile_aligner(version, aligned_like, heads, specials.eot))
        engine = cls(specials, features, compiled, config, aligner, tokenizer_json, careful)
        engine._keepalive = version  # compiled models may read weights straight from its buffers
        return engine

    # public API ---------------------------------------------------------------------------------

    def transcribe(
        self, blocks: Iterable[np.ndarray], options: TranscribeOptions, check: Callable[[], None] | None = None
    ) -> Transcript:
        """Transcribe one streamed file (float32 mono 16 kHz blocks of any size); ``check`` is called
        before every step and may raise to stop (a job's time limit, cancel, shutdown)."""
        return self.transcribe_streams([blocks], options, check)[0]

    def transcribe_many(self, audios: list[np.ndarray], options: TranscribeOptions) -> list[Transcript]:
        """Transcribe several files, their windows batched together."""
        return self.transcribe_streams([[a] for a in audios], options)

    def check_options(self, options: TranscribeOptions) -> None:
        """Raise here, for this file alone, what would otherwise fail a whole decoding step shared with
        other files: a language or task the model does not know, or word timestamps it cannot give
        (the aligner is compiled now, once per engine; a failure to build it is remembered)."""
        self.specials.prompt(options.language or "en", options.task)  # auto: detection picks a known one
        if options.word_timestamps:
            if self.aligner is None:
                raise ValueError("word timestamps need an engine built with from_loaded (it compiles the aligner)")
            self.aligner.ensure()

    def transcribe_streams(
        self, streams: list[Iterable[np.ndarray]], options: TranscribeOptions, check: Callable[[], None] | None = None
    ) -> list[Transcript]:
        self.check_options(options)
        out: list[Transcript | None] = [None] * len(streams)

        def keep(i: int) -> Callable[[Transcript], None]:
            return lambda transcript: out.__setitem__(i, transcript)

        def go_on() -> bool:
            if check is not None:
                check()  # raises to stop: the caller gets the exception
            return True

        handed = [[StreamRequest(blocks, options, keep(i), go_on) for i, blocks in enumerate(streams)]]
        self.serve(lambda idle: handed.pop() if handed else None)  # all at once, then no more
        assert all(t is not None for t in out), "every file ends with a transcript"
        return [t for t in out if t is not None]

    def serve(self, take: Callable[[bool], list[StreamRequest] | None]) -> None:
        """Transcribe files as they arrive, until ``take`` says stop and nothing is left.

        ``take(idle)`` is asked before every step for newly arrived requests (``[]``: none yet;
        ``None``: no more will come); ``idle`` is true when the engine has nothing to decode, so
        ``take`` may block then. Open files take the free rows of each step in turn, one 30 s piece
        at a time: a short file that arrives while a long one is being decoded starts at the next
        step instead of waiting for the long one to end, and each file's ``done`` is called as soon
        as its own last window is decoded. Memory: one window per row plus at most one piece being
        cut per open file.
        """
        rotation: deque[_File] = deque()
        active: list[_Track] = []
        parked: list[_Track] = []  # windows the fast models doubted, waiting for a careful batch
        resumed: list[_Track] = []  # tracks the careful models moved on, waiting for a row
        waited = 0  # fast steps the parked windows have waited
        stopping = False
        size = self.config.batch_size
        while True:
            idle = not active and not rotation and not parked and not resumed
            if idle and stopping:
                return
            new = None if stopping else take(idle)
            if new is None:
                stopping = True
            for request in new or ():
                rotation.append(self._open(request))
            active, parked, resumed = self._drop_stopped(rotation, active, parked, resumed)
            free = size - len(active)  # tracks already under way take free rows before new pieces
            active, resumed = active + resumed[:free], resumed[free:]
            self._fill(active, rotation)
            if parked and (not active or len(parked) >= size or waited >= self.config.recheck_wait_steps):
                batch, parked, waited = parked[:size], parked[size:], 0
                try:
                    self._careful_step(batch)
                except _StepAborted:  # as below: the stopped file leaves at the next drop
                    parked = batch + parked
                    continue
                resumed += self._next_windows(batch)
                continue
            if not active:
                continue
            try:
                doubted = self._step(active)
            except _StepAborted:  # a file said stop mid-step: it leaves, the others redo this step
                continue
            waited += bool(parked)
            parked += doubted
            held = {id(t) for t in doubted}
            active = self._next_windows([t for t in active if id(t) not in held])

    def _next_windows(self, tracks: list[_Track]) -> list[_Track]:
        """Tracks moved on to their next window; a track at the end of its piece leaves (and its
        file ends when that was its last piece)."""
        still = []
        for track in tracks:
            if len(self._load(track)):
                still.append(track)
            else:
                track.file.open_tracks -= 1
                self._finish_if_done(track.file)
        return still

    # scheduling ---------------------------------------------------------------------------------

    def _drop_stopped(self, rotation: deque[_File], *groups: list[_Track]) -> list[list[_Track]]:
        """Files whose ``go_on`` says stop leave now: no new piece, their open windows dropped from
        every group of tracks (being decoded, waiting for the careful models or for a row)."""
        tracks = [t for group in groups for t in group]
        files = {id(t.file): t.file for t in tracks} | {id(f): f for f in rotation}
        stopped = {key for key, file in files.items() if not file.finished and not file.go_on()}
        if not stopped:
            return list(groups)
        for key in stopped:
            file = files[key]
            file.exhausted, file.open_tracks = True, 0
            if file in rotation:
                rotation.remove(file)
            self._finish_if_done(file)
        return [[t for t in group if id(t.file) not in stopped] for group in groups]

    def _open(self, request: StreamRequest) -> _File:
        c = self.config
        file = _File(request.options, request.options.language, go_on=request.go_on, done=request.done)
        max_len, min_len = int(c.piece_s * SAMPLE_RATE), int(c.min_piece_s * SAMPLE_RATE)
        file.pieces = pieces(self._counted(file, request.blocks), max_len, min_len)
        return file

    def _fill(self, active: list[_Track], rotation: deque[_File]) -> None:
        """Free rows go to open files in turn, each giving its next piece; a file whose pieces have
        all been handed out leaves the rotation (and ends at once if none of them had audio)."""
        window = self.features.config.n_samples
        while len(active) < self.config.batch_size and rotation:
            file = rotation.popleft()
            piece = file.held or next(file.pieces, None)
            file.held = None
            if piece is None:
                file.exhausted = True
                self._finish_if_done(file)
                continue
            if self._packable(file, piece):
                members = self._gather(file, piece[1], rotation)
                if len(members) > 1:
                    active.append(self._pack(members, rotation))
                    continue
            offset, audio = piece
            track = _Track(
                file, file.next_piece, offset, AudioStream([audio], window), last_speech_s=offset / SAMPLE_RATE
            )
            file.next_piece += 1
            if len(self._load(track)):
                active.append(track)
                file.open_tracks += 1
            rotation.append(file)

    # packing short files (packing.py) -----------------------------------------------------------

    def _packable(self, file: _File, piece: tuple[int, np.ndarray]) -> bool:
        """A whole file (a first piece shorter than any cut, so the stream ended) short enough to
        share a window, whose language is given (a pack is decoded with one prompt), and not
        silent (``packing.quiet``: it would get no text and make its pack doubtful)."""
        c = self.config
        offset, audio = piece
        return (
            file.next_piece == 0
            and offset == 0
            and file.options.language is not None
            and not file.alone
            and len(audio) <= c.pack_max_s * SAMPLE_RATE
            and len(audio) < c.min_piece_s * SAMPLE_RATE
            and not quiet(audio)
        )

    def _gather(self, first: _File, audio: np.ndarray, rotation: deque[_File]) -> list[tuple[_File, np.ndarray]]:
        """``first`` and the files waiting in ``rotation`` that fit with it in one window (same
        options, packable), taken out of the rotation; a file looked at but left keeps its first
        piece for later (``held``)."""
        room = self.features.config.n_samples
        gap = int(self.config.pack_gap_s * SAMPLE_RATE)
        members = [(first, audio)]
        used = len(audio)
        for other in list(rotation):
            if used + gap >= room:
                break
            if other.next_piece != 0 or other.options != first.options:
                continue
            if other.held is None:
                other.held = next(other.pieces, None)
            if other.held is None or not self._packable(other, other.held):
                continue
            length = len(other.held[1])
            if used + gap + length <= room:
                members.append((other, other.held[1]))
                other.held = None
                rotation.remove(other)
                used += gap + length
        return members

    def _pack(self, members: list[tuple[_File, np.ndarray]], rotation: deque[_File]) -> _Track:
        """One track decoding ``members`` together; they finish when it does, or go back to
        ``rotation`` to be decoded alone (``_unpack``)."""
        audio, places = pack_audio([a for _, a in members], int(self.config.pack_gap_s * SAMPLE_RATE))
        first = members[0][0]
        pack = _File(first.options, first.language, samples=len(audio), exhausted=True, open_tracks=1, audio=audio)
        pack.members = [(file, place) for (file, _), place in zip(members, places, strict=True)]
        for file, _ in members:
            file.next_piece, file.exhausted, file.open_tracks = 1, True, 1
        pack.go_on = lambda: self._pack_goes_on(pack)
        pack.done = lambda transcript: self._unpack(pack, transcript, rotation)
        track = _Track(pack, 0, 0, AudioStream([audio], self.features.config.n_samples))
        self._load(track)
        return track

    def _pack_goes_on(self, pack: _File) -> bool:
        """Members that say stop leave at once (with nothing); the pack goes on while one is left."""
        live = False
        for file, _ in pack.members:
            if file.finished:
                continue
            if file.go_on():
                live = True
            else:
                file.open_tracks = 0
                self._finish_if_done(file)
        return live

    def _unpack(self, pack: _File, transcript: Transcript, rotation: deque[_File]) -> None:
        places = [place for _, place in pack.members]
        parts = split_segments(transcript.segments, places)
        why = doubtful(transcript.segments, places, parts)
        if why is not None:  # its files go back to the rotation, each to be decoded alone
            log.info("a pack of %d files is decoded again, each file alone: %s", len(places), why)
            self.stats.packs_redone += 1
            assert pack.audio is not None
            for file, place in pack.members:
                if not file.finished:
                    file.next_piece, file.exhausted, file.open_tracks, file.alone = 0, False, 0, True
                    file.held = (0, pack.audio[place.start : place.start + place.length])
                    rotation.append(file)
            return
        for (file, _), segments in zip(pack.members, parts, strict=True):
            if file.finished:
                continue
            file.segments = [(0, i, s) for i, s in enumerate(segments)]
            file.open_tracks = 0
            self._finish_if_done(file)

    def _finish_if_done(self, file: _File) -> None:
        """A file is done once it has handed out its last piece and none of them is being decoded."""
        if file.exhausted and file.open_tracks == 0 and not file.finished:
            file.finished = True
            file.done(self._transcript(file))

    @staticmethod
    def _counted(file: _File, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            file.samples += len(block)
            yield block

    @staticmethod
    def _load(track: _Track) -> np.ndarray:
        track.window = track.stream.window(track.seek * 160)
        return track.window

    def _step(self, tracks: list[_Track]) -> list[_Track]:
        """One window of every active track: encode, decode (with fallback), segment, seek. With
        careful models, the tracks whose window the fast ones doubt (``_doubtful``) do not move:
        they are returned, to be decoded again by ``_careful_step``.

        A step can take many seconds (8 windows, temperature fallback); its files' ``go_on`` is
        asked every ``STOP_CHECK_S`` while it runs, and a file that says stop aborts the step
        (``_StepAborted``) before any track has moved: the others redo it without that file."""
        between = self._stop_checks(tracks)
        hidden = self._encode([t.window for t in tracks])
        between()
        self._detect_languages(hidden, tracks)
        prompts = self._prompts(tracks)
        if self.careful_decoder is None:
            self._conclude(hidden, tracks, self._fallbacks(self.decoder, hidden, tracks, prompts, between))
            return []
        rngs = [self._rng_for(t, 0.0) for t in tracks]
        first = self._settle(
            self.decoder.decode(hidden, prompts, [0.0] * len(tracks), rngs, between, self._eots(tracks))
        )
        texts = self.detokenizer.decode_batch([r.tokens for r in first])
        doubted = {
            i for i, (r, text) in enumerate(zip(first, texts, strict=True)) if self._doubtful(tracks[i], r, text)
        }
        sure = [i for i in range(len(tracks)) if i not in doubted]
        if sure:
            self._conclude(hidden[sure], [tracks[i] for i in sure], [first[i] for i in sure])
        self.stats.rechecked += len(doubted)
        return [tracks[i] for i in sorted(doubted)]

    def _careful_step(self, tracks: list[_Track]) -> None:
        """The windows the fast models doubted, encoded and decoded again from greedy on (the whole
        temperature fallback) by the careful models, as many per call as have gathered: a decoder
        call over one window costs about half of one over eight (benchmarks/decoder_rows.py)."""
        assert self.careful_decoder is not None
        between = self._stop_checks(tracks)
        hidden = self._encode([t.window for t in tracks], careful=True)
        between()
        results = self._fallbacks(self.careful_decoder, hidden, tracks, self._prompts(tracks), between)
        self._conclude(hidden, tracks, results)

    def _stop_checks(self, tracks: list[_Track]) -> Callable[[], None]:
        """What a step calls between model calls: every ``STOP_CHECK_S`` it asks the step's files
        whether to go on, and raises ``_StepAborted`` when one says stop."""
        files = list({id(t.file): t.file for t in tracks}.values())
        next_check = [time.monotonic() + STOP_CHECK_S]

        def between() -> None:
            now = time.monotonic()
            if now >= next_check[0]:
                next_check[0] = now + STOP_CHECK_S
                if not all([f.go_on() for f in files]):
                    raise _StepAborted

        return between

    def _prompts(self, tracks: list[_Track]) -> list[list[int]]:
        return [self.specials.prompt(str(t.file.language), t.file.options.task, self._timed(t)) for t in tracks]

    def _settle(self, results: list[DecodeResult]) -> list[DecodeResult]:
        """Where the hold kept a text going, what it added stays only if Whisper found it probable
        (average log-probability at least ``logprob_threshold``): sound that Whisper opened a segment
        on but cannot put in words (music, noise) ends the text where Whisper ended it, and the rest
        of the piece is decoded on its own as before."""
        out = []
        for result in results:
            if result.held_at >= 0:
                self.stats.held += 1
                if result.held_avg_logprob < self.config.logprob_threshold:
                    self.stats.unheld += 1
                    result = result.unheld()
            out.append(result)
        return out

    def _eots(self, tracks: list[_Track]) -> list[int]:
        """Per window: the timestamp (index) before which its text may not end on an opened segment:
        ``hold_eot_s`` before the end of its audible sound (0: never held; plain windows, or
        ``hold_eot_s=0``)."""
        hold = round(self.config.hold_eot_s / TIME_PRECISION_S)
        out = []
        for track in tracks:
            held = hold and self._timed(track)
            audible = np.flatnonzero(audible_frames(track.window)) if held else np.zeros(0, dtype=np.int64)
            out.append(max(0, int(audible[-1]) + 1 - hold) if audible.size else 0)
        return out

    @staticmethod
    def _timed(track: _Track) -> bool:
        """Decoded with timestamp tokens: unless its file asked for none; a pack always is (its
        members' segments are told apart by them)."""
        return track.file.options.timestamps or bool(track.file.members)

    def _conclude(self, hidden: np.ndarray, tracks: list[_Track], results: list[DecodeResult]) -> None:
        """Decoded windows become segments (and timed words, aligned on ``hidden``); tracks seek on."""
        windows = [self._split(track, result) for track, result in zip(tracks, results, strict=True)]
        words = self._words(hidden, tracks, windows)
        for track, window, timed in zip(tracks, windows, words, strict=True):
            self._advance(track, window, timed)

    def _detect_languages(self, hidden: np.ndarray, tracks: list[_Track]) -> None:
        """A file's language is the one detected on its earliest window in the batch (pieces come in
        order, so that is its first window); its other pieces in the batch wait for nothing."""
        first: dict[int, int] = {}
        for i, track in enumerate(tracks):
            if track.file.language is None:
                first.setdefault(id(track.file), i)
        rows = list(first.values())
        if rows:
            for i, language in zip(rows, self.decoder.detect_language(hidden[rows]), strict=True):
                tracks[i].file.language = language

    def _encode(self, windows: list[np.ndarray], careful: bool = False) -> np.ndarray:
        stats = self.stats
        t0 = time.perf_counter()
        mel = self.features.batch(windows, self.config.pad_log_mel)
        t1 = time.perf_counter()
        request = self._careful_encoder if careful else self._encoder
        assert request is not None
        request.infer({0: mel})
        hidden = request.get_output_tensor(0).data.copy()
        stats.features_s += t1 - t0
        stats.encoder_s += time.perf_counter() - t1
        stats.encoder_calls += 1
        stats.windows += len(windows)
        return hidden

    # decoding -----------------------------------------------------------------------------------

    def _doubtful(self, track: _Track, result: DecodeResult, text: str) -> bool:
        """A greedy window the careful models decode again: improbable text, or text that would
        fall back to sampling (so the whole fallback runs as it would in f32); never silence."""
        if self._is_silence(track.window, result):
            return False
        return result.avg_logprob < self.config.recheck_logprob or self._needs_fallback(track.window, result, text)

    def _fallbacks(
        self,
        decoder: WindowDecoder,
        hidden: np.ndarray,
        tracks: list[_Track],
        prompts: list[list[int]],
        between: Callable[[], None],
    ) -> list[DecodeResult]:
        """Greedy first; windows whose text is repetitive or improbable (and not silence) are
        decoded again, together, at each higher temperature in turn. Where every temperature
        fails, the most probable non-repetitive attempt wins (as faster-whisper does)."""
        todo = list(range(len(tracks)))
        eots = self._eots(tracks)
        tried: list[list[tuple[DecodeResult, str]]] = [[] for _ in tracks]
        chosen: list[DecodeResult | None] = [None] * len(tracks)
        for attempt, temperature in enumerate(self.config.temperatures):
            if attempt:
                self.stats.fallbacks += len(todo)
            rngs = [self._rng_for(tracks[i], temperature) for i in todo]
            got = self._settle(
                decoder.decode(
                    hidden[todo],
                    [prompts[i] for i in todo],
                    [temperature] * len(todo),
                    rngs,
                    between,
                    [eots[i] for i in todo],
                )
            )
            texts = self.detokenizer.decode_batch([r.tokens for r in got])
            for i, result, text in zip(todo, got, texts, strict=True):
                tried[i].append((result, text))
                if not self._needs_fallback(tracks[i].window, result, text):
                    chosen[i] = result
            todo = [i for i in todo if chosen[i] is None]
            if not todo:
                break
        limit = self.config.compression_ratio_threshold
        return [r if r is not None else best_attempt(tried[i], limit) for i, r in enumerate(chosen)]

    def _rng_for(self, track: _Track, temperature: float) -> np.random.Generator:
        """Sampling noise fixed by the window (not by what else is in the batch): same audio, same text."""
        return np.random.default_rng([self.config.seed, track.piece, track.seek, round(temperature * 1000)])

    def _needs_fallback(self, window: np.ndarray, result: DecodeResult, text: str) -> bool:
        c = self.config
        if self._is_silence(window, result):
            return False  # skipped, not retried
        return compression_ratio(text) > c.compression_ratio_threshold or result.avg_logprob < c.logprob_threshold

    def _is_silence(self, window: np.ndarray, result: DecodeResult) -> bool:
        """openai-whisper's rule (no-speech token likely and text improbable), or a steady level.

        Whisper base says " you" with confidence over digital silence and thanks viewers over white
        noise; both have a no-speech probability above 0.5 and a level that hardly moves.
        """
        c = self.config
        if result.no_speech_prob > c.no_speech_threshold and result.avg_logprob <= c.logprob_threshold:
            return True
        return result.no_speech_prob > c.steady_no_speech and level_range_db(window) < c.steady_level_db

    def _split(self, track: _Track, result: DecodeResult) -> WindowResult | None:
        """The window's segments, or None for silence (skipped whole)."""
        if self._is_silence(track.window, result) or not result.tokens:
            return None
        if not self._timed(track):  # plain text: one segment over the window's audible span
            audible = np.flatnonzero(audible_frames(track.window)) * TIME_PRECISION_S
            start, end = (audible[0], audible[-1] + TIME_PRECISION_S) if audible.size else (0, track.frames * 0.01)
            return WindowResult([RawSegment(track.offset_s + start, track.offset_s + end, result.tokens)], track.frames)
        return split_window(result.tokens, self.specials.timestamp_begin, track.offset_s, track.frames)

    def _advance(self, track: _Track, window: WindowResult | None, words: list[tuple[Word, ...]] | None) -> None:
        if window is None:
            track.seek += track.frames
            return
        texts = self.detokenizer.decode_batch([s.tokens for s in window.segments])
        for i, (span, text) in enumerate(zip(self._spans(window), texts, strict=True)):
            if text.strip():
                seg = Segment(span.start_s, span.end_s, text, words[i] if words else ())
                track.file.segments.append((track.piece, len(track.file.segments), seg))
        track.seek += window.advance_frames

    def _spans(self, window: WindowResult) -> list[SegmentSpan]:
        eot = self.specials.eot
        return [
            SegmentSpan(round(s.start_s, 3), round(max(s.end_s, s.start_s), 3), sum(t < eot for t in s.tokens))
            for s in window.segments
        ]

    # word timestamps ----------------------------------------------------------------------------

    @cached_property
    def _token_bytes(self) -> TokenBytes:
        if self._tokenizer_json is None:
            raise ValueError("word timestamps need the tokenizer.json the engine was built from")
        return TokenBytes(self._tokenizer_json)

    def _words(
        self, hidden: np.ndarray, tracks: list[_Track], windows: list[WindowResult | None]
    ) -> list[list[tuple[Word, ...]] | None]:
        """Timed words per segment of each window whose file asked for them, ``aligner_rows``
        windows per aligner call."""
        out: list[list[tuple[Word, ...]] | None] = [None] * len(tracks)
        eot = self.specials.eot
        texts = {
            i: [t for s in w.segments for t in s.tokens if t < eot]
            for i, (track, w) in enumerate(zip(tracks, windows, strict=True))
            if w is not None and track.file.options.word_timestamps
        }
        rows = [i for i, text in texts.items() if text]
        if not rows:
            return out
        if self.aligner is None:
            raise ValueError("word timestamps need an engine built with from_loaded (it compiles the aligner)")
        step = self.config.aligner_rows
        for chunk in (rows[k : k + step] for k in range(0, len(rows), step)):
            prompts = [self.specials.prompt(str(tracks[i].file.language), tracks[i].file.options.task) for i in chunk]
            sequences = [[*p, self.specials.no_timestamps, *texts[i], eot] for p, i in zip(prompts, chunk, strict=True)]
            weights, probs = self.aligner.run(hidden[chunk], sequences, eot)
            for k, (i, prompt) in enumerate(zip(chunk, prompts, strict=True)):
                window = windows[i]
                assert window is not None
                own = weights[k][:, : len(sequences[k])]  # without the padding of a shorter row
                out[i] = self._time_words(tracks[i], window, texts[i], len(prompt), own, probs[k])
        return out

    def _time_words(
        self,
        track: _Track,
        window: WindowResult,
        text: list[int],
        n_prompt: int,
        weights: np.ndarray,
        probs: np.ndarray,
    ) -> list[tuple[Word, ...]]:
        frames = token_frames(weights, n_prompt, len(text), track.frames)
        words, word_tokens = self._token_bytes.split_words(text, str(track.file.language))
        alignment = find_alignment(frames, probs[n_prompt : n_prompt + len(text)], words, word_tokens)
        timed, track.last_speech_s = segment_words(
            alignment, self._spans(window), track.offset_s, track.last_speech_s, audible_frames(track.window)
        )
        return timed

    def _transcript(self, file: _File) -> Transcript:
        duration = file.samples / SAMPLE_RATE
        ordered = [s for _, _, s in sorted(file.segments, key=lambda x: (x[0], x[1]))]
        clipped = [_clip(s, duration) for s in ordered]
        return Transcript(language=file.language or "", segments=clipped, duration_s=duration)


def _clip(segment: Segment, duration: float) -> Segment:
    """Times past the end of the audio (the last window's timestamps can overshoot) moved to it."""
    words = tuple(replace(w, start_s=min(w.start_s, duration), end_s=min(w.end_s, duration)) for w in segment.words)
    return replace(segment, start_s=min(segment.start_s, duration), end_s=min(segment.end_s, duration), words=words)
