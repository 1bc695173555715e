"""Decoding real files of every supported format to 16 kHz mono, streamed, and every bad-file case."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from ovbatch.errors import BadAudioError, InputError
from ovbatch.storage import ObjectStore
from ovbatch.tasks.transcribe import audio
from ovbatch.tasks.transcribe.audio import AudioInfo, iter_blocks, load, probe


def sine(rate: int, seconds: float, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def band_energy(x: np.ndarray, lo: float, hi: float, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[(freqs >= lo) & (freqs <= hi)].sum() / spectrum.sum())


class Unseekable(io.RawIOBase):
    """A stream like an S3 body: read only."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_any_rate_to_16k(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"sine{rate}.wav"
    sf.write(path, sine(rate, 1.5), rate, subtype="PCM_16")
    y = load(path, path.name)
    assert y.dtype == np.float32
    assert len(y) == 24000  # ceil(frames * 16000 / rate), as resample_poly gives
    assert abs(peak_hz(y) - 440) < 2
    assert 0.45 < np.abs(y[1000:-1000]).max() < 0.55


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "PCM_16", "wav"),
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("FLAC", "PCM_16", "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("OGG", "OPUS", "opus"),
        ("MP3", "MPEG_LAYER_III", "mp3"),
        ("CAF", "PCM_24", "caf"),
    ],
)
def test_decodes_each_format(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    rate = 48000 if subtype == "OPUS" else 44100
    path = tmp_path / f"a.{ext}"
    sf.write(path, sine(rate, 2.0, 1000.0, channels=2), rate, format=fmt, subtype=subtype)
    info = probe(path, path.name)
    assert (info.sample_rate, info.channels, info.format) == (rate, 2, fmt)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)  # lossy codecs may pad
    y = load(path, path.name)
    assert abs(len(y) - 32000) < 0.1 * 16000
    assert abs(peak_hz(y) - 1000) < 3
    assert band_energy(y, 990, 1010) > 0.95


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left, right = sine(44100, 1.0, 300.0), sine(44100, 1.0, 2000.0)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    y = load(path, "stereo.flac")
    assert band_energy(y, 295, 305) == pytest.approx(0.5, abs=0.02)
    assert band_energy(y, 1995, 2005) == pytest.approx(0.5, abs=0.02)
    assert 0.2 < np.abs(y[2000:4000]).max() < 0.55  # each channel at half amplitude


def test_many_channels_odd_rate(tmp_path: Path) -> None:
    rate = 11111  # gcd with 16000 is 1: the largest polyphase filter
    path = tmp_path / "six.wav"
    sf.write(path, sine(rate, 1.0, 500.0, channels=6), rate, subtype="PCM_24")
    assert probe(path, "six.wav").channels == 6
    y = load(path, "six.wav")
    assert len(y) == 16000
    assert abs(peak_hz(y) - 500) < 2


def test_streamed_blocks_equal_whole_signal_resampling(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * 44100 + 123).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    blocks = list(iter_blocks(path, "noise.wav", block_s=0.25))
    assert [len(b) for b in blocks[:-1]] == [4000] * (len(blocks) - 1)
    assert all(b.dtype == np.float32 for b in blocks)
    whole = resample_poly(x.astype(np.float64), 160, 441)
    streamed = np.concatenate(blocks)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_memory_stays_one_block_for_long_files(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    seconds = 600
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as out:
        for _ in range(seconds // 60):
            out.write(sine(8000, 60.0))
    tracemalloc.start()
    total = 0
    try:
        for block in iter_blocks(path, "long.wav", block_s=5.0):
            total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == seconds * 16000
    assert peak < 4 << 20, f"peak {peak >> 20} MiB while the whole output is {total * 4 >> 20} MiB"


def test_streams_seekable_and_not(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, sine(22050, 1.0), 22050)
    data = path.read_bytes()
    assert len(load(io.BytesIO(data), "a.flac")) == 16000
    assert probe(io.BytesIO(data), "a.flac").sample_rate == 22050
    stream: BinaryIO = io.BufferedReader(Unseekable(data))
    assert len(load(stream, "a.flac")) == 16000


def test_unseekable_stream_too_big_to_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, sine(16000, 1.0), 16000)
    monkeypatch.setattr(audio, "MAX_SPOOL_BYTES", 1000)
    with pytest.raises(BadAudioError, match=r"s3://b/a\.wav: the stream cannot seek and is over"):
        load(io.BufferedReader(Unseekable(path.read_bytes())), "s3://b/a.wav")


@pytest.fixture
def no_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without the optional PyAV package: ``import av`` fails."""
    monkeypatch.setitem(sys.modules, "av", None)


def encode_with_pyav(path: Path, codec: str, rate: int, seconds: float, hz: float) -> None:
    """A stereo sine in a container libsndfile cannot read, written by PyAV (FFmpeg)."""
    import av

    x = sine(rate, seconds, hz)
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream(codec, rate=rate)  # an AudioStream; the stubs give a union
        stream.layout = "stereo"
        stream.bit_rate = 128000
        fmt = next(f.name for f in stream.codec_context.codec.audio_formats if f.name in ("flt", "fltp"))
        for i in range(0, len(x), 960):
            both = np.stack([x[i : i + 960]] * 2)
            frame_data = both if fmt.endswith("p") else both.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frame_data), format=fmt, layout="stereo")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize(
    ("ext", "codec", "rate"), [("m4a", "aac", 44100), ("webm", "libopus", 48000), ("wma", "wmav2", 22050)]
)
def test_pyav_fallback_decodes_other_containers(tmp_path: Path, ext: str, codec: str, rate: int) -> None:
    pytest.importorskip("av")
    path = tmp_path / f"talk.{ext}"
    encode_with_pyav(path, codec, rate, 2.0, 1000.0)
    info = probe(path, path.name)
    assert (info.sample_rate, info.channels) == (rate, 2)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    for source in (path, io.BytesIO(path.read_bytes())):
        blocks = list(iter_blocks(source, path.name, block_s=0.5))
        assert [len(b) for b in blocks[:3]] == [8000] * 3
        y = np.concatenate(blocks)
        assert len(y) == pytest.approx(32000, abs=1600)
        assert abs(peak_hz(y) - 1000) < 3
    with pytest.raises(BadAudioError, match=rf"talk\.{ext}: 2\.\d s of audio is over the limit of 1\.0 s"):
        load(path, path.name, max_duration_s=1.0)


def test_other_containers_without_pyav_say_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("av")  # to write the file
    path = tmp_path / "talk.webm"
    encode_with_pyav(path, "libopus", 48000, 0.5, 440.0)
    monkeypatch.setitem(sys.modules, "av", None)  # now as on a machine without PyAV
    with pytest.raises(BadAudioError, match=r"talk\.webm: WebM/Matroska audio needs the optional PyAV package"):
        probe(path, "talk.webm")


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.wav"
    sf.write(good, sine(16000, 1.0), 16000, subtype="PCM_16")
    wav = good.read_bytes()
    flac = tmp_path / "good.flac"
    sf.write(flac, sine(44100, 3.0), 44100)
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(64)
    cases = {
        "empty.wav": (b"", r"empty file \(0 bytes\)"),
        "notes.wav": (b"meeting notes\nline two\n" * 20, r"not an audio file \(it looks like a text file\)"),
        "image.wav": (png, r"not an audio file \(it looks like a PNG image\)"),
        "random.wav": (np.random.default_rng(1).bytes(4096), r"corrupt or not an audio file \(libsndfile: "),
        "badfmt.wav": (wav[:20] + b"\xff" * 16 + wav[36:], r"corrupt or not an audio file .*fmt"),
        "header-only.wav": (wav[:44], r"no audio samples \(0 frames\)"),
        "cut.flac": (flac.read_bytes()[: flac.stat().st_size // 2], r"corrupt audio after \d+\.\d s"),
        "talk.m4a": (b"\x00\x00\x00\x20ftypM4A " + bytes(64), r"MP4/M4A audio needs the optional PyAV package"),
    }
    out = {}
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, pattern)
    return out


@pytest.mark.parametrize(
    "name",
    ["empty.wav", "notes.wav", "image.wav", "random.wav", "badfmt.wav", "header-only.wav", "cut.flac", "talk.m4a"],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, name: str, no_pyav: None) -> None:
    path, pattern = bad_files(tmp_path)[name]
    with pytest.raises(BadAudioError, match=rf"^in/{name}: {pattern}") as caught:
        load(path, f"in/{name}")
    assert isinstance(caught.value, InputError)  # never retried
    with pytest.raises(BadAudioError, match=rf"^in/{name}: {pattern}"):
        load(io.BytesIO(path.read_bytes()), f"in/{name}")  # the same answer from a stream


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("notes.wav", r"not an audio file \(it looks like a text file\)"),
        ("image.wav", r"not an audio file \(it looks like a PNG image\)"),
        ("random.wav", r"corrupt or not an audio file \(libsndfile: .*; FFmpeg: Invalid data found"),
        ("talk.m4a", r"corrupt or not an audio file \(libsndfile: .*; FFmpeg: "),
    ],
)
def test_bad_files_with_pyav_installed(tmp_path: Path, name: str, pattern: str) -> None:
    pytest.importorskip("av")
    path, _ = bad_files(tmp_path)[name]
    for source in (path, io.BytesIO(path.read_bytes())):
        with pytest.raises(BadAudioError, match=rf"^in/{name}: {pattern}"):
            load(source, f"in/{name}")


def test_bad_header_fails_probe_too(tmp_path: Path) -> None:
    path, _ = bad_files(tmp_path)["image.wav"]
    with pytest.raises(BadAudioError, match="image.wav: not an audio file"):
        probe(path, "image.wav")


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BadAudioError, match=r"gone\.wav: file not found"):
        load(tmp_path / "gone.wav", "gone.wav")
    with pytest.raises(BadAudioError, match="is a directory"):
        load(tmp_path, "dir")


def test_duration_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, sine(16000, 10.0), 16000)
    data = bytearray(path.read_bytes())
    data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)  # corrupt body: decoding would fail
    path.write_bytes(data)
    blocks = iter_blocks(path, "long.flac", max_duration_s=5.0)
    with pytest.raises(BadAudioError, match=r"long\.flac: 10\.0 s of audio is over the limit of 5\.0 s"):
        next(blocks)


def test_duration_limit_while_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, sine(16000, 3.0), 16000)
    monkeypatch.setattr(audio, "_info", lambda snd, name: AudioInfo(1.0, 16000, 1, "WAV"))  # a lying header
    with pytest.raises(BadAudioError, match="over the limit of 2.0 s"):
        load(path, "a.wav", max_duration_s=2.0)


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng not installed")
def test_speech_from_espeak(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello world, this is a test"], check=True, timeout=30)
    info = probe(path, "speech.wav")
    y = load(path, "speech.wav")
    assert info.sample_rate == 22050 and info.channels == 1
    assert len(y) == pytest.approx(info.duration_s * 16000, abs=1)
    assert band_energy(y, 100, 4000) > 0.9  # speech band
    assert np.sqrt(np.mean(y**2)) > 0.01


@pytest.mark.skipif(not shutil.which("sox"), reason="sox not installed")
@pytest.mark.parametrize("ext", ["aiff", "au"])
def test_sox_made_files(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"tone.{ext}"
    cmd = ["sox", "-n", "-r", "96000", "-b", "24", "-c", "2", str(path), "synth", "1", "sine", "700"]
    subprocess.run(cmd, check=True, timeout=30)
    assert probe(path, path.name) == AudioInfo(1.0, 96000, 2, ext.upper())
    y = load(path, path.name)
    assert len(y) == 16000
    assert abs(peak_hz(y) - 700) < 2


def test_reads_an_s3_object_stream(s3_store: ObjectStore, tmp_path: Path) -> None:
    """An S3 body cannot seek: a small one is spooled to memory and decoded."""
    path = tmp_path / "a.ogg"
    sf.write(path, sine(44100, 1.0, 440.0), 44100, format="OGG", subtype="VORBIS")
    s3_store.put_bytes("in/a.ogg", path.read_bytes())
    with s3_store.open("in/a.ogg") as stream:
        assert not stream.seekable()
        y = load(stream, "s3://bucket/in/a.ogg")
    assert abs(len(y) - 16000) < 200 and abs(peak_hz(y) - 440) < 2


def crafted_wav(rate: int, channels: int, frames: int = 800, bits: int = 16) -> bytes:
    """A WAV whose header claims ``rate`` and ``channels`` over ``frames`` frames of real data."""
    import struct

    block = channels * bits // 8
    data = np.random.default_rng(0).integers(-3000, 3000, frames * channels, dtype=np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("rate", "channels", "reason"),
    [
        (2_147_483_647, 1, "the header claims 2147483647 Hz"),
        (320_000_007, 1, "the header claims 320000007 Hz"),
        (999, 1, "the header claims 999 Hz"),
        (1, 1, "the header claims 1 Hz"),
        (16000, 65, "the header claims 65 channels; at most 64"),
        (16000, 1000, "the header claims 1000 channels"),
    ],
)
def test_crafted_headers_fail_alone_in_bounded_memory(tmp_path: Path, rate: int, channels: int, reason: str) -> None:
    """A 2 KB file once asked the resampler for 320 GiB: what a header claims is checked first."""
    path = tmp_path / "crafted.wav"
    path.write_bytes(crafted_wav(rate, channels, frames=max(1, 1600 // channels)))
    tracemalloc.start()
    try:
        with pytest.raises(BadAudioError) as caught:
            list(iter_blocks(path, "in/crafted.wav"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith("in/crafted.wav: ") and (reason in message or "invalid header" in message), message
    assert peak < 50 << 20, f"refusing a crafted header took {peak >> 20} MiB"


@pytest.mark.parametrize("rate", [44101, 1001, 767_999, 12345])
def test_odd_rates_resample_with_a_small_filter(tmp_path: Path, rate: int) -> None:
    """Rates whose ratio to 16 kHz has large terms (prime-ish ones sized a filter of millions of
    taps) resample at the nearest small ratio: right length and pitch, bounded memory and time."""
    import time

    path = tmp_path / f"odd{rate}.wav"
    sf.write(path, sine(rate, 2.0, 500.0), rate, subtype="PCM_16")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        y = load(path, path.name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(len(y) - 32000) <= 2 and abs(peak_hz(y) - 500) < 2
    assert time.perf_counter() - t0 < 10 and peak < 200 << 20, (time.perf_counter() - t0, peak >> 20)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (np.nan, "corrupt audio: NaN or infinite samples at 0.3 s"),
        (-np.inf, "corrupt audio: NaN or infinite samples at 0.3 s"),
        (1e30, "corrupt audio: samples of 1e+30, far out of range at 0.3 s"),
    ],
)
def test_samples_that_are_not_audio_fail_before_the_model(tmp_path: Path, value: float, reason: str) -> None:
    """A float WAV's NaN would reach Whisper's log-mel as NaN, 1e30 as infinity after squaring."""
    x = sine(22050, 1.0)
    x[6615] = value  # 0.3 s
    path = tmp_path / "float.wav"
    sf.write(path, np.stack([x, x], axis=1), 22050, subtype="FLOAT")
    for source in (path, io.BytesIO(path.read_bytes())):
        with pytest.raises(BadAudioError, match=rf"^in/float\.wav: {re.escape(reason)}$"):
            load(source, "in/float.wav")
    x[6615] = 3.0  # loud but plausible: read as it is
    sf.write(path, x, 22050, subtype="FLOAT")
    assert float(np.abs(load(path, "in/float.wav")).max()) > 2


def flac_without_length(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A FLAC whose STREAMINFO total sample count is 0 ("unknown"), as a streaming encoder writes it."""
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def test_flac_of_unknown_length_is_read_and_limited_while_decoding(tmp_path: Path) -> None:
    """libsndfile reports such a file's length as 2^63 - 1 frames: unknown, not over the limit."""
    import time

    short = flac_without_length(tmp_path / "short.flac", sine(16000, 2.0), 16000)
    assert np.isnan(probe(short, "short.flac").duration_s)
    assert len(load(short, "short.flac", max_duration_s=60.0)) == 32000
    bomb = flac_without_length(tmp_path / "bomb.flac", np.zeros(8000 * 3600 * 2, np.float32), 8000)
    assert bomb.stat().st_size < 1 << 20  # 2 h of silence
    t0 = time.perf_counter()
    with pytest.raises(BadAudioError, match=r"^bomb\.flac: \d+\.0 s of audio is over the limit of 60\.0 s$"):
        load(bomb, "bomb.flac", max_duration_s=60.0)
    assert time.perf_counter() - t0 < 5, "the limit must stop decoding, not the end of the file"


@pytest.mark.parametrize(
    ("bits", "channels", "reason"),
    [
        (0, 1, r"corrupt or not an audio file \(libsndfile: .*; FFmpeg: no decoder for its audio codec\)"),
        (256, 1, r"corrupt or not an audio file \(libsndfile: .*; FFmpeg: no decoder for its audio codec\)"),
        (16, 65535, r"invalid header \(16000 Hz, 0 channels\) \(libsndfile: Too many channels specified\)"),
    ],
)
def test_headers_ffmpeg_cannot_decode_either(tmp_path: Path, bits: int, channels: int, reason: str) -> None:
    """libsndfile refuses these; PyAV opens them with no codec or no channels: a clear error, not an
    AttributeError retried as the worker's fault."""
    import struct

    pytest.importorskip("av")
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, 16000, 16000 * block & 0xFFFFFFFF, block & 0xFFFF, bits)
    data = bytes(3200)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "odd.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(BadAudioError, match=rf"^in/odd\.wav: {reason}"):
        load(path, "in/odd.wav")
