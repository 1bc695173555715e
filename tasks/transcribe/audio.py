"""Decode audio to 16 kHz mono float32, streamed block by block.

libsndfile (through soundfile) reads wav, flac, ogg/vorbis/opus, mp3, aiff, au, caf and more. Other
containers (m4a, aac, wma, webm, mp4, mkv) need the optional PyAV package, imported only when
libsndfile cannot read a file. Resampling is scipy's polyphase filter applied with overlap, so the
streamed output equals ``resample_poly`` over the whole signal while memory stays one block, however
long the file.

Every failure for a given file is a ``BadAudioError`` that names it: a bad input is never retried.
"""

from __future__ import annotations

import codecs
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, gcd
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from ovbatch.errors import BadAudioError
from ovbatch.tasks.transcribe.types import SAMPLE_RATE

# A stream that cannot seek is copied into memory first, but only up to this size.
MAX_SPOOL_BYTES = 64 << 20
# What a header may claim (a crafted one asked for a 320 GiB resampling filter): real audio is 8 kHz
# telephony to 768 kHz studio masters, up to 64 channels (Ambisonics, multitrack)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, MAX_CHANNELS = 1_000, 768_000, 64
MAX_READ_BYTES = 64 << 20  # one read of interleaved samples, whatever the rate and channels
# rates whose ratio to 16 kHz needs larger terms than this are resampled at the nearest ratio that
# does not (off by under 0.001 %: 44101 Hz is read as 44100 Hz), so the filter stays small
MAX_RATIO_TERM = 1000
# Float PCM is nominally within +-1. A sample this many times over full scale is garbage, not loud audio
# (past ~1e16 the power spectrum overflows float32 and the model sees infinities), so the file fails.
MAX_SAMPLE_MAGNITUDE = 1e4
# libsndfile's frame count when the header does not say (a FLAC written as a stream): the length is
# unknown, not huge, so the duration limit is checked while decoding
_UNKNOWN_FRAMES = (1 << 63) - 1
_HEAD_BYTES = 512

Source = str | os.PathLike[str] | BinaryIO
_Opened = str | BinaryIO  # a path, or a seekable stream positioned at 0

# Containers libsndfile does not read; PyAV (FFmpeg) does.
_AV_EXTENSIONS = {
    ".m4a": "M4A",
    ".mp4": "MP4",
    ".aac": "AAC",
    ".wma": "WMA",
    ".webm": "WebM",
    ".mkv": "Matroska",
}
_NON_AUDIO_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"\x7fELF": "an executable",
}


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float  # NaN where the header does not say
    sample_rate: int
    channels: int
    format: str  # libsndfile's major format ("WAV", "FLAC", "OGG", "MP3") or FFmpeg's container name


def probe(source: Source, name: str) -> AudioInfo:
    """Duration, rate, channels and format from the header, without decoding the audio."""
    src = _prepare(source, name)
    try:
        snd = _open_soundfile(src)
    except sf.LibsndfileError as exc:
        return _av_probe(_pyav_or_explain(src, name, exc), src, name)
    with snd:
        return _info(snd, name)


def iter_blocks(
    source: Source, name: str, block_s: float = 30.0, max_duration_s: float | None = None
) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of ``block_s`` seconds (the last one shorter).

    ``source`` is a path or a binary stream (read from its start). Raises ``BadAudioError`` naming
    ``name`` for an empty, corrupt, non-audio or too-long file; the duration limit is checked
    against the header before decoding and again while decoding.
    """
    if block_s <= 0:
        raise ValueError(f"block_s must be positive, not {block_s}")
    block_samples = max(1, round(block_s * SAMPLE_RATE))
    src = _prepare(source, name)
    try:
        snd = _open_soundfile(src)
    except sf.LibsndfileError as exc:
        pyav = _pyav_or_explain(src, name, exc)
        yield from _rebuffer(_av_decode(pyav, src, name, max_duration_s), block_samples)
        return
    with snd:
        _check_duration(_info(snd, name).duration_s, name, max_duration_s)
        yield from _rebuffer(_sf_decode(snd, name, block_s, max_duration_s), block_samples)


def load(source: Source, name: str, max_duration_s: float | None = None) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array: for short files only."""
    blocks = list(iter_blocks(source, name, max_duration_s=max_duration_s))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


# --- opening -----------------------------------------------------------------------------------


def _prepare(source: Source, name: str) -> _Opened:
    """A path that exists and is not empty, or a seekable non-empty stream rewound to its start."""
    if isinstance(source, str | os.PathLike):
        return _check_path(Path(source), name)
    stream = source if _is_seekable(source) else _spool(source, name)
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    if size == 0:
        raise BadAudioError(f"{name}: empty file (0 bytes)")
    return stream


def _check_path(path: Path, name: str) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadAudioError(f"{name}: file not found ({path})") from None
    except OSError as exc:
        raise BadAudioError(f"{name}: cannot read {path}: {exc.strerror}") from exc
    if path.is_dir():
        raise BadAudioError(f"{name}: is a directory, not an audio file")
    if size == 0:
        raise BadAudioError(f"{name}: empty file (0 bytes)")
    return str(path)


def _open_soundfile(src: _Opened) -> sf.SoundFile:
    """libsndfile's reader of ``src`` (a ``LibsndfileError`` if it reads no such format)."""
    snd = sf.SoundFile(src)
    if snd.frames < _UNKNOWN_FRAMES:
        return snd
    snd.close()  # does not close a stream it was given
    if not isinstance(src, str):
        src.seek(0)
    return _LengthUnknown(src)


class _LengthUnknown(sf.SoundFile):
    """A file whose header does not give its length (a FLAC written as a stream), read forwards only:
    soundfile seeks after each read, which libsndfile cannot do at the end of such a file."""

    def seekable(self) -> bool:
        return False


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _spool(stream: BinaryIO, name: str) -> BinaryIO:
    data = stream.read(MAX_SPOOL_BYTES + 1)
    if len(data) > MAX_SPOOL_BYTES:
        raise BadAudioError(
            f"{name}: the stream cannot seek and is over {MAX_SPOOL_BYTES >> 20} MiB, too big to hold in memory; "
            "give a local file or a seekable stream instead"
        )
    return io.BytesIO(data)


def _info(snd: sf.SoundFile, name: str) -> AudioInfo:
    if snd.frames <= 0:
        raise BadAudioError(f"{name}: no audio samples (0 frames)")
    check_header(name, int(snd.samplerate), int(snd.channels))
    duration_s = math.nan if snd.frames >= _UNKNOWN_FRAMES else snd.frames / snd.samplerate
    return AudioInfo(duration_s, int(snd.samplerate), int(snd.channels), str(snd.format))


def check_header(name: str, rate: int, channels: int) -> None:
    """Refuse what a crafted header claims before anything is sized from it."""
    if rate <= 0 or channels <= 0:
        raise BadAudioError(f"{name}: invalid header ({rate} Hz, {channels} channels)")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadAudioError(
            f"{name}: the header claims {rate} Hz; audio between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz is read"
        )
    if channels > MAX_CHANNELS:
        raise BadAudioError(f"{name}: the header claims {channels} channels; at most {MAX_CHANNELS} are read")


def _check_duration(duration_s: float, name: str, max_duration_s: float | None) -> None:
    """Refuse a file over the limit (an unknown duration, NaN, is checked again while decoding)."""
    if max_duration_s is not None and duration_s > max_duration_s:
        raise BadAudioError(f"{name}: {duration_s:.1f} s of audio is over the limit of {max_duration_s:.1f} s")


# --- libsndfile decoding -----------------------------------------------------------------------


def _sf_decode(snd: sf.SoundFile, name: str, block_s: float, max_duration_s: float | None) -> Iterator[np.ndarray]:
    resampler = Resampler(snd.samplerate)
    # a block's worth of frames, but never more than MAX_READ_BYTES of interleaved float32 samples
    frames_per_read = max(1, min(round(block_s * snd.samplerate), MAX_READ_BYTES // (4 * snd.channels)))
    decoded = 0
    while True:
        try:
            data = snd.read(frames_per_read, dtype="float32", always_2d=True)
        except sf.LibsndfileError as exc:
            at_s = decoded / snd.samplerate
            raise BadAudioError(f"{name}: corrupt audio after {at_s:.1f} s ({_reason(exc)})") from exc
        if not len(data):
            break
        mono = data.mean(axis=1, dtype=np.float32)
        check_samples(mono, name, decoded / snd.samplerate, snd.samplerate)
        decoded += len(data)
        _check_duration(decoded / snd.samplerate, name, max_duration_s)
        yield resampler.push(mono)
    yield resampler.flush()


def check_samples(samples: np.ndarray, name: str, start_s: float, rate_hz: int) -> None:
    """Refuse NaN, infinite or absurdly large samples (a corrupt float file) before they reach the model."""
    bad = ~(np.abs(samples) <= MAX_SAMPLE_MAGNITUDE)  # NaN compares false
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    value, at_s = float(samples[first]), start_s + first / rate_hz
    what = "NaN or infinite samples" if not math.isfinite(value) else f"samples of {value:.3g}, far out of range"
    raise BadAudioError(f"{name}: corrupt audio: {what} at {at_s:.1f} s")


class Resampler:
    """Streaming polyphase resampling to 16 kHz with the same filter ``resample_poly`` designs.

    Each push is filtered with enough input on both sides that its output equals the matching
    slice of ``resample_poly(whole_signal, up, down)``; output lags input by a few samples.
    """

    def __init__(self, rate_hz: int):
        common = gcd(rate_hz, SAMPLE_RATE)
        self.up, self.down = SAMPLE_RATE // common, rate_hz // common
        if max(self.up, self.down) > MAX_RATIO_TERM:  # an odd rate: the nearest small ratio
            ratio = Fraction(SAMPLE_RATE, rate_hz).limit_denominator(MAX_RATIO_TERM)
            if ratio.numerator > 16 * MAX_RATIO_TERM:  # cannot happen for rates >= 1 kHz
                raise BadAudioError(f"cannot resample {rate_hz} Hz audio")
            self.up, self.down = ratio.numerator, ratio.denominator
        max_rate = max(self.up, self.down)
        same = max_rate == 1  # 16 kHz already: no filter
        if not same:
            # imported here: scipy.signal takes over a second to import, and every CLI command and
            # 16 kHz file would pay it (`ovbatch` starts in about half the time without it)
            from scipy.signal import firwin

        self.taps = np.ones(1) if same else firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
        # Input samples the filter reaches on each side, rounded to whole output phases.
        self.context = ceil(ceil(10 * max_rate / self.up + 1) / self.down) * self.down
        self.left = np.zeros(self.context, np.float32)
        self.pending = np.zeros(0, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.up == self.down:
            return samples.astype(np.float32, copy=False)
        self.pending = np.concatenate([self.pending, samples])
        ready = (len(self.pending) - self.context) // self.down * self.down
        if ready <= 0:
            return np.zeros(0, np.float32)
        out = self._filter(self.pending[: ready + self.context], ready)
        self.left = np.concatenate([self.left, self.pending[:ready]])[-self.context :]
        self.pending = self.pending[ready:]
        return out

    def flush(self) -> np.ndarray:
        if self.up == self.down or not len(self.pending):
            return np.zeros(0, np.float32)
        out = self._filter(self.pending, None)
        self.pending = np.zeros(0, np.float32)
        return out

    def _filter(self, chunk: np.ndarray, ready: int | None) -> np.ndarray:
        from scipy.signal import resample_poly

        y = resample_poly(np.concatenate([self.left, chunk]), self.up, self.down, window=self.taps)
        start = self.context * self.up // self.down
        stop = None if ready is None else start + ready * self.up // self.down
        return np.asarray(y[start:stop], dtype=np.float32)


def _rebuffer(pieces: Iterator[np.ndarray], block_samples: int) -> Iterator[np.ndarray]:
    """Regroup arrays of any length into blocks of exactly ``block_samples`` (the last one shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece)
        while count >= block_samples:
            joined = np.concatenate(held)
            yield joined[:block_samples]
            rest = joined[block_samples:]
            held, count = [rest], len(rest)
    if count:
        yield np.concatenate(held)


# --- failures and the PyAV fallback ------------------------------------------------------------


def _reason(exc: sf.LibsndfileError) -> str:
    return str(getattr(exc, "error_string", exc)).strip().rstrip(".")


def _head(src: _Opened) -> bytes:
    if isinstance(src, str):
        with open(src, "rb") as f:
            return f.read(_HEAD_BYTES)
    src.seek(0)
    head = src.read(_HEAD_BYTES)
    src.seek(0)
    return head


def _non_audio_kind(head: bytes) -> str | None:
    for magic, kind in _NON_AUDIO_MAGIC.items():
        if head.startswith(magic):
            return kind
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # tolerates a character cut at the end
    except UnicodeDecodeError:
        return None
    printable = all(c.isprintable() or c in "\t\r\n\f" for c in text)
    return "a text file" if text and printable else None


def _av_container(head: bytes, name: str) -> str | None:
    """The container name when the bytes or the name say PyAV could read it."""
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "WebM/Matroska"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMA/ASF"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC (ADTS)"
    return _AV_EXTENSIONS.get(Path(name).suffix.lower())


@dataclass(frozen=True)
class _PyAV:
    av: Any  # the imported module
    sf_reason: str  # why libsndfile refused the file, for the message if FFmpeg refuses it too


def _pyav_or_explain(src: _Opened, name: str, exc: sf.LibsndfileError) -> _PyAV:
    """PyAV, to try a file libsndfile refused; or raise why the file is bad."""
    head = _head(src)
    kind = _non_audio_kind(head)
    if kind:
        raise BadAudioError(f"{name}: not an audio file (it looks like {kind})") from exc
    try:
        import av  # optional: FFmpeg bindings for containers libsndfile does not read
    except ImportError:
        container = _av_container(head, name)
        if container:
            raise BadAudioError(
                f"{name}: {container} audio needs the optional PyAV package to decode (pip install av), "
                "which is not installed"
            ) from exc
        raise BadAudioError(f"{name}: corrupt or not an audio file (libsndfile: {_reason(exc)})") from exc
    return _PyAV(av, _reason(exc))


def _av_open(pyav: _PyAV, src: _Opened, name: str) -> Any:
    if not isinstance(src, str):
        src.seek(0)
    try:
        container = pyav.av.open(src)
    except pyav.av.error.FFmpegError as exc:
        reason = f"libsndfile: {pyav.sf_reason}; FFmpeg: {getattr(exc, 'strerror', None) or exc}"
        raise BadAudioError(f"{name}: corrupt or not an audio file ({reason})") from exc
    if not container.streams.audio:
        container.close()
        raise BadAudioError(f"{name}: has no audio stream")
    return container


def _av_probe(pyav: _PyAV, src: _Opened, name: str) -> AudioInfo:
    container = _av_open(pyav, src, name)
    with container:
        stream = container.streams.audio[0]
        duration_s = float(container.duration or 0) / 1_000_000  # av.time_base is microseconds
        codec = stream.codec_context
        if codec is None:  # FFmpeg has no decoder for what the header names
            reason = f"libsndfile: {pyav.sf_reason}; FFmpeg: no decoder for its audio codec"
            raise BadAudioError(f"{name}: corrupt or not an audio file ({reason})")
        layout = getattr(codec, "layout", None)
        channels = int(getattr(codec, "channels", 0) or getattr(layout, "nb_channels", 0) or 0)
        try:
            check_header(name, int(codec.sample_rate or 0), channels)
        except BadAudioError as exc:  # what FFmpeg made of a header libsndfile refused: say both
            raise BadAudioError(f"{exc} (libsndfile: {pyav.sf_reason})") from None
        return AudioInfo(duration_s, int(codec.sample_rate), channels, str(container.format.name))


def _av_decode(pyav: _PyAV, src: _Opened, name: str, max_duration_s: float | None) -> Iterator[np.ndarray]:
    _check_duration(_av_probe(pyav, src, name).duration_s, name, max_duration_s)
    container = _av_open(pyav, src, name)
    resampler = pyav.av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    decoded = 0
    with container:
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    check_samples(samples, name, decoded / SAMPLE_RATE, SAMPLE_RATE)
                    decoded += len(samples)
                    _check_duration(decoded / SAMPLE_RATE, name, max_duration_s)
                    yield samples
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except pyav.av.error.FFmpegError as exc:
            at_s = decoded / SAMPLE_RATE
            raise BadAudioError(f"{name}: corrupt audio after {at_s:.1f} s (FFmpeg: {exc})") from exc
