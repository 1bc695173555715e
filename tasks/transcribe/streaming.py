"""Streamed audio: bounded buffers over an iterable of blocks, and cutting a stream into pieces.

Nothing here holds more than about one window of audio plus one input block, so memory does not
grow with the length of a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ovbatch.errors import InputError
from ovbatch.tasks.transcribe.types import SAMPLE_RATE


def as_mono_f32(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim != 1:
        raise InputError(f"audio blocks must be 1-D mono float32 at 16 kHz, got shape {block.shape}")
    return block.astype(np.float32, copy=False)


class AudioStream:
    """A forward-only view of a stream: ``window(start)`` reads as far as needed, forgets before ``start``."""

    def __init__(self, blocks: Iterable[np.ndarray], window: int) -> None:
        self._blocks = iter(blocks)
        self._window = window
        self._buf = np.zeros(0, dtype=np.float32)
        self._start = 0  # absolute sample index of _buf[0]
        self.ended = False

    @property
    def end(self) -> int:
        """Samples read so far (the total once ``ended``)."""
        return self._start + len(self._buf)

    def window(self, start: int) -> np.ndarray:
        """``audio[start : start + window]`` (shorter only at the end of the stream)."""
        if start < self._start:
            raise ValueError(f"stream already dropped sample {start} (kept from {self._start})")
        self._buf = self._buf[start - self._start :] if start < self.end else np.zeros(0, np.float32)
        self._start = max(start, self._start)
        pending = [self._buf]
        have = len(self._buf)
        while have < self._window and not self.ended:
            block = next(self._blocks, None)
            if block is None:
                self.ended = True
                break
            block = as_mono_f32(block)
            pending.append(block)
            have += len(block)
        if len(pending) > 1:
            self._buf = np.concatenate(pending)
        if self._start < start:  # the stream skipped ahead past what was buffered
            self._buf = self._buf[start - self._start :]
            self._start = start
        return self._buf[: self._window]


def _smoothed_energy(audio: np.ndarray, hop: int, width: int) -> np.ndarray:
    n = len(audio) // hop
    power = (audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1)
    return np.convolve(power, np.ones(width) / width, mode="same")


QUIET_WITHIN_DB = 6.0  # a pause is as quiet as the quietest 0.2 s of the span, give or take this ...
QUIET_BELOW_DB = 40.0  # ... or this far below the span's loud level (speech over digital silence)


def quiet_cut(
    audio: np.ndarray, lo: int, hi: int, within_db: float = QUIET_WITHIN_DB, below_db: float = QUIET_BELOW_DB
) -> int:
    """A sample in ``[lo, hi]`` in the latest pause of ``audio``: the middle of the last run of 0.2 s
    stretches within ``within_db`` of the quietest one or ``below_db`` under the loud level (the 95th
    percentile) of the span: a pause between words, ideally.

    The latest pause, not the quietest: a piece is then close to a whole 30 s window, so a file
    takes fewer windows, and each window carries more context. On the long files of
    ``benchmarks.transcribe_bench`` the quietest point cut 702 s into 33 pieces (21 s on average),
    the latest pause into 26 (27 s); without timestamps that was 1.10x faster in process and 132
    word errors of 1448 against 153 (``benchmarks.window_ends``; RESULTS.md, "Pieces cut at the
    latest pause").
    """
    hop = SAMPLE_RATE // 100
    energy = _smoothed_energy(audio[:hi], hop, 20)
    first = lo // hop
    if len(energy) <= first:
        return hi
    span = energy[first:]
    quiet = span <= max(span.min() * 10 ** (within_db / 10), np.percentile(span, 95) * 10 ** (-below_db / 10))
    end = len(span) - int(np.argmax(quiet[::-1]))  # one past the last quiet frame
    start = end - int(np.argmin(quiet[end - 1 :: -1])) if not quiet[:end].all() else 0
    return (first + (start + end - 1) // 2) * hop


def pieces(blocks: Iterable[np.ndarray], max_len: int, min_len: int) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream into pieces of at most ``max_len`` samples at quiet points: ``(offset, audio)``."""
    buf = np.zeros(0, dtype=np.float32)
    offset = 0
    pending: list[np.ndarray] = []
    have = 0
    for block in blocks:
        block = as_mono_f32(block)
        pending.append(block)
        have += len(block)
        if have <= max_len:
            continue
        buf = np.concatenate([buf, *pending]) if pending else buf
        pending, have = [], 0
        while len(buf) > max_len:
            cut = quiet_cut(buf, min_len, max_len)
            yield offset, buf[:cut].copy()
            offset += cut
            buf = buf[cut:]
        have = len(buf)
        pending = [buf]
        buf = np.zeros(0, dtype=np.float32)
    rest = np.concatenate([buf, *pending]) if pending else buf
    if len(rest):
        yield offset, rest


def level_range_db(audio: np.ndarray) -> float:
    """Spread (95th - 5th percentile, in dB) of the 20 ms frame levels of ``audio``.

    Speech rises and falls by tens of dB from syllable to pause; digital silence, hum and steady
    noise stay within a few dB. Used beside Whisper's own no-speech probability.
    """
    hop = SAMPLE_RATE // 50
    n = len(audio) // hop
    if n < 2:
        return 0.0
    power = (audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1)
    level = 10 * np.log10(power + 1e-10)
    return float(np.percentile(level, 95) - np.percentile(level, 5))
