"""Word timestamps from cross-attention, as openai-whisper's ``timing.py`` does it.

For one decoded window: the alignment heads' attention weights over the window's frames
(``alignment.py``), renormalised over the frames that hold audio, z-scored per head along the
tokens, median filtered along time (width 7), averaged over heads; dynamic time warping through
``-weights`` from the first text token to ``<|endoftext|>`` gives each token the frame (20 ms) where
the path first reaches it. Tokens are grouped into words (a new word at a leading space or at
punctuation; per UTF-8 character for languages written without spaces), a word lasts from its
first token's frame to the next word's, and its probability is the mean of its tokens'. Then
openai-whisper's fixes: words at sentence ends and after pauses no longer than twice the median
word, punctuation merged into its neighbour, the segment's own timestamps preferred where the first
or last word is too long. Three choices of ours: punctuation is merged within a segment only, so a
segment's words always concatenate to its text; word times are clamped into their segment, whose
times stay what the decoder gave (so srt and vtt do not change with word timestamps); and pauses
of 0.1 s or more (``QUIET_DB`` below the window's loud frames) are trimmed off a word's
ends, because DTW lets the first word after a pause start in the silence.

Measured with whisper base on espeak-ng speech (checked in tests/tasks/transcribe/test_words.py):
against faster-whisper's ``word_timestamps=True`` on the same weights, mean |start| and |end|
differences of 0.003 s over 349 words of the 36 clips (the DTW step is 0.02 s), 0.023 s and 0.012 s
over the 138 words of the test's files (faster-whisper, which seeks to the last word, cuts a 45 s
file into other windows); on that file of 12 sentences the sentence starts are 0.02 s from the
truth on average (faster-whisper: 0.10 s); after 3 s of silence the next word starts within 0.02 s
of the sound (0.6 s early without the trimming).
Cost on 2 threads (benchmarks/engines_bench.py, batched): +16 % wall time on two 6-minute files, +7 % on
the 36 clips. A development run measured 0.15 s per minute of audio on the long files (+19 %), 0.37 s on the 36
clips (+13 %).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, replace

import numpy as np

from ovbatch.tasks.transcribe.types import Word

FRAMES_PER_S = 50  # encoder output frames (and DTW steps) per second: 1500 per 30 s window
MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
QUIET_DB = 40.0  # a 20 ms frame this far below the window's loud frames (95th percentile) is a pause
MIN_PAUSE_FRAMES = 5  # only pauses of 0.1 s or more are trimmed off words
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


@dataclass
class WordTiming:
    text: str
    tokens: list[int]
    start_s: float
    end_s: float
    probability: float


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable stand-in character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


class TokenBytes:
    """The bytes of each text token, from ``tokenizer.json`` (a byte-level BPE vocabulary)."""

    def __init__(self, tokenizer_json: str) -> None:
        model = json.loads(tokenizer_json)["model"]
        decoder = _byte_decoder()
        self._bytes = {int(i): bytes(decoder[c] for c in token) for token, i in model["vocab"].items()}

    def text(self, tokens: list[int]) -> str:
        return b"".join(self._bytes[t] for t in tokens).decode("utf-8", errors="replace")

    def split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Tokens grouped so that each group decodes to whole characters."""
        full = self.text(tokens)
        words: list[str] = []
        groups: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for token in tokens:
            current.append(token)
            decoded = self.text(current)
            bad = decoded.find("\ufffd")
            if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
                words.append(decoded)
                groups.append(current)
                current = []
                offset += len(decoded)
        if current:
            words.append(self.text(current))
            groups.append(current)
        return words, groups

    def split_words(self, tokens: list[int], language: str) -> tuple[list[str], list[list[int]]]:
        subwords, groups = self.split_on_unicode(tokens)
        if language in NO_SPACE_LANGUAGES:
            return subwords, groups
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, group in zip(subwords, groups, strict=True):
            if subword.startswith(" ") or subword.strip() in string.punctuation or not words:
                words.append(subword)
                word_tokens.append(list(group))
            else:
                words[-1] += subword
                word_tokens[-1].extend(group)
        return words, word_tokens


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window along the last axis, edges reflected (as openai-whisper)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.partition(windows, pad, axis=-1)[..., pad]


def dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through ``x`` (tokens x frames): its token and frame indices.

    openai-whisper's recurrence, one row at a time: along a row ``c[j] = x[j] + min(a[j], c[j-1])``
    with ``a`` from the row above, which is ``S[j] + min over k <= j of (a[k] - S[k-1])`` for the
    running sum ``S`` of ``x``, a cumulative minimum. (On an exact tie of the diagonal and upward
    costs openai-whisper steps left even when that is dearer; with real-valued costs that never
    happens.)
    """
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf)
    cost[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), 2, dtype=np.int8)
    for i in range(1, n + 1):
        diagonal, up = cost[i - 1, :-1], cost[i - 1, 1:]
        best_above = np.minimum(diagonal, up)
        sums = np.cumsum(x[i - 1].astype(np.float64))
        before = np.concatenate(([0.0], sums[:-1]))
        cost[i, 1:] = sums + np.minimum.accumulate(best_above - before)
        left = cost[i, :-1]
        trace[i, 1:] = np.where((diagonal < up) & (diagonal < left), 0, np.where((up < diagonal) & (up < left), 1, 2))
    trace[0, :] = 2
    trace[:, 0] = 1
    path = []
    i, j = n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    indices = np.array(path[::-1]).T
    return indices[0], indices[1]


def token_frames(weights: np.ndarray, prompt_len: int, n_text: int, num_frames: int) -> np.ndarray:
    """The frame where each text token (and ``<|endoftext|>``) starts.

    ``weights``: one window's ``(heads, tokens, 1500)`` over prompt, ``<|notimestamps|>``, text and
    ``<|endoftext|>``; ``num_frames``: the window's mel frames (two per encoder frame).
    """
    w = weights[:, :, : max(1, num_frames // 2)]
    w = w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-30)  # softmax over the audio frames only
    std, mean = w.std(axis=-2, keepdims=True), w.mean(axis=-2, keepdims=True)  # over all tokens
    rows = slice(prompt_len, prompt_len + n_text + 1)  # the filter runs along time: other rows are not needed
    w = (w[:, rows] - mean) / np.where(std > 0, std, 1.0)
    # one head at a time: a model without alignment heads uses every upper-layer head (hundreds)
    matrix = np.mean([median_filter(head, MEDIAN_FILTER_WIDTH) for head in w], axis=0)
    text_indices, time_indices = dtw(-matrix)
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    return time_indices[jumps]


def find_alignment(
    frames: np.ndarray, token_probs: np.ndarray, words: list[str], word_tokens: list[list[int]]
) -> list[WordTiming]:
    """Words timed (seconds from the window start) by the frames of ``token_frames``."""
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens]), (1, 0))
    times = frames / FRAMES_PER_S
    return [
        WordTiming(word, tokens, float(times[a]), float(times[b]), float(np.mean(token_probs[a:b])))
        for word, tokens, a, b in zip(words, word_tokens, bounds[:-1], bounds[1:], strict=True)
    ]


def limit_long_words(alignment: list[WordTiming]) -> tuple[float, float]:
    """Words at sentence ends at most twice the median word; returns (median, max) durations."""
    durations = np.array([w.end_s - w.start_s for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        for i in range(1, len(alignment)):
            word = alignment[i]
            if word.end_s - word.start_s > longest:
                if word.text in SENTENCE_END_MARKS:
                    word.end_s = word.start_s + longest
                elif alignment[i - 1].text in SENTENCE_END_MARKS:
                    word.start_s = word.end_s - longest
    return median, longest


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """openai-whisper's rule: opening marks join the next word, closing marks the previous one."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.text.startswith(" ") and previous.text.strip() in prepended:
            following.text = previous.text + following.text
            following.tokens = previous.tokens + following.tokens
            previous.text, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.text.endswith(" ") and following.text in appended:
            previous.text = previous.text + following.text
            previous.tokens = previous.tokens + following.tokens
            following.text, following.tokens = "", []
        else:
            i = j
        j += 1


def audible_frames(audio: np.ndarray) -> np.ndarray:
    """Per 20 ms frame of ``audio``: louder than ``QUIET_DB`` below the window's loud frames?"""
    hop = 16000 // FRAMES_PER_S
    n = -(-len(audio) // hop)
    frames = np.zeros(n * hop, dtype=np.float64)
    frames[: len(audio)] = audio
    level = 10 * np.log10((frames.reshape(n, hop) ** 2).mean(axis=1) + 1e-10)
    return np.asarray(level > np.percentile(level, 95) - QUIET_DB) if n else np.zeros(0, dtype=bool)


def trim_pauses(word: WordTiming, audible: np.ndarray, offset_s: float) -> None:
    """Keep a word to its own sound: DTW lets the first word after a pause start up to half a second
    early, in the silence, sometimes with the last frames of the word before. The word's audible
    frames are split at pauses of ``MIN_PAUSE_FRAMES`` or more; the longest run (the later one on a
    tie) is the word, and a pause of that length at either end is cut off."""
    a = min(max(round((word.start_s - offset_s) * FRAMES_PER_S), 0), len(audible))
    b = min(max(round((word.end_s - offset_s) * FRAMES_PER_S), a), len(audible))
    loud = np.flatnonzero(audible[a:b])
    if not len(loud):
        return
    runs = np.split(loud, np.flatnonzero(np.diff(loud) > MIN_PAUSE_FRAMES) + 1)
    best = max(reversed(runs), key=len)
    lo, hi = int(best[0]), int(best[-1]) + 1
    if lo >= MIN_PAUSE_FRAMES or best is not runs[0]:
        word.start_s = offset_s + (a + lo) / FRAMES_PER_S
    if (b - a) - hi >= MIN_PAUSE_FRAMES or best is not runs[-1]:
        word.end_s = offset_s + (a + hi) / FRAMES_PER_S


@dataclass(frozen=True)
class SegmentSpan:
    start_s: float  # file-absolute, as the segment has it
    end_s: float
    n_text_tokens: int


def segment_words(
    alignment: list[WordTiming],
    segments: list[SegmentSpan],
    offset_s: float,
    last_speech_s: float,
    audible: np.ndarray,
) -> tuple[list[tuple[Word, ...]], float]:
    """The window's timed words cut into its segments (file-absolute times), openai-whisper's
    fixes applied and pauses trimmed (``audible``: the window's ``audible_frames``); returns them
    and the new end of the last speech."""
    median, longest = limit_long_words(alignment)
    out: list[tuple[Word, ...]] = []
    index = 0
    for segment in segments:
        own: list[WordTiming] = []
        taken = 0
        while index < len(alignment) and taken < segment.n_text_tokens:
            own.append(alignment[index])
            taken += len(alignment[index].tokens)
            index += 1
        merge_punctuations(own, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
        words = [replace(w, start_s=w.start_s + offset_s, end_s=w.end_s + offset_s) for w in own if w.text]
        if words:
            _fix_edges(words, segment, median, longest, last_speech_s)
            last_speech_s = segment.end_s
        for word in words:  # last: the edge rules above can move a start back into the pause
            trim_pauses(word, audible, offset_s)
        out.append(tuple(_clamped(words, segment)))
    return out, last_speech_s


def _fix_edges(words: list[WordTiming], segment: SegmentSpan, median: float, longest: float, last: float) -> None:
    first = words[0]
    too_long = first.end_s - first.start_s > longest
    if first.end_s - last > median * 4 and (
        too_long or (len(words) > 1 and words[1].end_s - first.start_s > longest * 2)
    ):
        if len(words) > 1 and words[1].end_s - words[1].start_s > longest:
            boundary = max(words[1].end_s / 2, words[1].end_s - longest)
            first.end_s = words[1].start_s = boundary
        first.start_s = max(0.0, first.end_s - longest)
    if segment.start_s < first.end_s and segment.start_s - 0.5 > first.start_s:
        first.start_s = max(0.0, min(first.end_s - median, segment.start_s))
    final = words[-1]
    if segment.end_s > final.start_s and segment.end_s + 0.5 < final.end_s:
        final.end_s = max(final.start_s + median, segment.end_s)


def _clamped(words: list[WordTiming], segment: SegmentSpan) -> list[Word]:
    out = []
    floor = segment.start_s
    for w in words:
        start = min(max(w.start_s, floor), segment.end_s)
        end = min(max(w.end_s, start), segment.end_s)
        out.append(Word(round(start, 3), round(end, 3), w.text, round(w.probability, 4)))
        floor = start
    return out
