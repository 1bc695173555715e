"""Crafted bad inputs through a real worker: each fails alone with a clear reason naming the file, in
bounded memory and time; the good files around them are transcribed and the worker lives (issue 10).

    .venv/bin/python -m benchmarks.bad_inputs --home DIR [--redis-url URL] [--rss-bound-mib N] [--json]

``write_corpus(folder)`` writes 68 kinds of bad input (damaged and lying audio headers, NaN
samples, decompression and sparse-file bombs, unsafe archive members, links out of a folder, a named
pipe, ``/dev/zero``, non-UTF-8 names, huge manifests...) with a few good clips among them, and says
for each what the batch must report and where it is caught: at submission (the CLI refuses it; the
batch records it as failed) or by the worker. ``run_corpus`` submits the whole folder as one batch
to one real worker (``OVBATCH_MAX_AUDIO_DURATION_S`` low) and collects the records, the worker's peak
RSS (``VmHWM``) and its deaths; ``check`` lists what went wrong, ``table`` prints the outcome.
tests/test_bad_inputs.py runs the same corpus. ``--home`` holds the keyring, the registry (Whisper
base is imported once), the corpus and the outputs; the Redis database must have no other worker.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "audio"
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
MAX_DURATION_S = 120  # the worker's OVBATCH_MAX_AUDIO_DURATION_S for the run
MAX_JOB_S = 60.0  # no bad file may keep the worker busier than this
# VmHWM measured 1741-1827 MiB on 2 cores (8 files at once; 13 good clips alone: 1622 MiB)
RSS_BOUND_MIB = 2560

Caught = Literal["submission", "worker"]


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input, and what its batch record must say.

    ``display`` is the record's display with the corpus folder left out (``audio/x.wav``,
    ``archives/a.zip::member``, ``@lists/m.txt``; a manifest line as written). Outcome ``done``:
    damaged but readable audio, transcribed like any other file. ``more``: a pattern of other records
    this kind makes (the lines of a manifest), each failed where this one is.
    """

    kind: str
    display: str
    errors: tuple[str, ...]
    caught: Caught
    outcome: Literal["failed", "done"] = "failed"
    source: str | None = None  # a source of its own, relative to the folder ("@lists/x.txt"); None: in audio/
    more: str = ""


@dataclass(frozen=True)
class GoodInput:
    display: str
    words: str  # in its transcript


GOOD = (
    GoodInput("audio/quilter.wav", "apostle of the middle classes"),
    GoodInput("audio/archive.flac", "recorded calls"),
    GoodInput("audio/subtitles.ogg", "write the subtitles"),
    GoodInput("archives/bomb.zip::ok/quilter.wav", "apostle of the middle classes"),
    GoodInput("good.ogg", "write the subtitles"),  # a line of lists/huge.txt, among 200,000 bad ones
)


# --- crafting ------------------------------------------------------------------------------------


def _tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _wav(
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    data: bytes | None = None,
    data_size: int | None = None,
) -> bytes:
    """A PCM WAV whose header says what it is told, whatever the data holds."""
    if data is None:
        data = (_tone(16000, 0.1) * 32767).astype(np.int16).tobytes()
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 1, channels & 0xFFFF, rate & 0xFFFFFFFF, rate * block & 0xFFFFFFFF, block & 0xFFFF, bits
    )
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + _chunk(b"fmt ", fmt) + b"data" + struct.pack("<I", size & 0xFFFFFFFF) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def _rf64(claimed_bytes: int) -> bytes:
    """An RF64 file whose ds64 chunk claims ``claimed_bytes`` of samples over 0.1 s of them."""
    data = (_tone(16000, 0.1) * 32767).astype(np.int16).tobytes()
    ds64 = struct.pack("<QQQI", claimed_bytes + 100, claimed_bytes, claimed_bytes // 2, 0)
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + _chunk(b"ds64", ds64) + _chunk(b"fmt ", fmt) + b"data" + struct.pack("<I", 0xFFFFFFFF) + data
    return b"RF64" + struct.pack("<I", 0xFFFFFFFF) + body


def _sound(path: Path, samples: np.ndarray, rate: int, **kwargs: Any) -> bytes:
    sf.write(path, samples, rate, **kwargs)
    return path.read_bytes()


def _silence_flac(path: Path, hours: float, rate: int = 8000, length_in_header: bool = True) -> None:
    """Hours of silence in a few hundred KiB: a bomb for anything that decodes before checking."""
    with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as out:
        minute = np.zeros(rate * 60, np.int16)
        for _ in range(round(hours * 60)):
            out.write(minute)
    if not length_in_header:
        _forget_flac_length(path)


def _forget_flac_length(path: Path) -> None:
    """STREAMINFO's 36-bit total sample count set to 0, "unknown", as a streaming encoder writes it."""
    data = bytearray(path.read_bytes())
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def _aiff(rate_bytes: bytes | None = None, channels: int | None = None) -> bytes:
    """A real AIFF with its COMM chunk's 80-bit rate or channel count replaced."""
    buf = io.BytesIO()
    sf.write(buf, _tone(16000, 0.2), 16000, format="AIFF", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    comm = data.index(b"COMM") + 8
    if channels is not None:
        data[comm : comm + 2] = struct.pack(">H", channels)
    if rate_bytes is not None:
        data[comm + 8 : comm + 18] = rate_bytes
    return bytes(data)


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, method)
    return path


def _patch_central(path: Path, offset: int, value: bytes, also_local: int | None = None) -> None:
    """Overwrite a field of the first member's central directory entry (and local header)."""
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + offset : central + offset + len(value)] = value
    if also_local is not None:
        data[also_local : also_local + len(value)] = value
    path.write_bytes(bytes(data))


def _zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(chunk)
    for start in range(0, total, chunk):
        yield block[: min(chunk, total - start)]


class _ZeroStream(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for info in members:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            archive.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def _tar_info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 5  # /dev/zero
    return info


def sparse_tar(path: Path, name: str, data: bytes, real_size: int) -> Path:
    """An old-GNU sparse member: ``data`` at offset 0, then holes up to ``real_size`` (tarfile writes
    none, so the header is made by hand: sparse map at 386, real size at 483)."""
    fields = {386: _tar_number(0), 398: _tar_number(len(data)), 483: _tar_number(real_size)}
    header = gnu_header(name, tarfile.GNUTYPE_SPARSE, len(data), fields)
    path.write_bytes(header + data + b"\0" * (-len(data) % 512) + b"\0" * 1024)
    return path


def gnu_header(name: str, kind: bytes, size: int, fields: dict[int, bytes] | None = None) -> bytes:
    """A GNU tar header claiming ``size`` (any size), with ``fields`` written at their offsets."""
    info = tarfile.TarInfo(name)
    info.type = kind
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    for offset, value in {124: _tar_number(size), **(fields or {})}.items():
        header[offset : offset + len(value)] = value
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _tar_number(value: int) -> bytes:
    """A 12-byte tar header number: octal, or GNU base-256 from 8 GiB on."""
    return b"%011o\0" % value if value < 8**11 else b"\x80" + value.to_bytes(11, "big")


def _link(target: str | Path, path: Path) -> None:
    path.unlink(missing_ok=True)
    os.symlink(target, path)


# --- the corpus ----------------------------------------------------------------------------------


def write_corpus(folder: Path) -> list[BadInput]:
    """Write every bad kind under ``folder`` (audio/, explicit/, lists/, archives/, outside/), with the
    clips of ``GOOD`` among them (in the folder, an archive and a manifest). Returns what each kind
    must do."""
    for sub in ("audio", "explicit", "lists", "archives", "outside"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    corpus = _audio_kinds(folder / "audio") + _file_kinds(folder) + _manifest_kinds(folder)
    corpus += _archive_kinds(folder / "archives")
    for clip in ("quilter.wav", "archive.flac", "subtitles.ogg"):
        (folder / "audio" / clip).write_bytes((EXAMPLES / clip).read_bytes())
    (folder / "lists" / "good.ogg").write_bytes((EXAMPLES / "subtitles.ogg").read_bytes())
    return corpus


CORRUPT = "corrupt or not an audio file"


def _audio_kinds(audio: Path) -> list[BadInput]:
    """Files found in the folder audio/; the worker reads each."""
    corpus: list[BadInput] = []

    def bad(name: str, kind: str, data: bytes, *errors: str) -> None:
        (audio / name).write_bytes(data)
        corpus.append(BadInput(kind, f"audio/{name}", errors, "worker"))

    def readable(name: str, kind: str, data: bytes) -> None:  # damaged, yet audio: transcribed
        (audio / name).write_bytes(data)
        corpus.append(BadInput(kind, f"audio/{name}", (), "worker", "done"))

    rng = np.random.default_rng(10)
    short = _wav()
    bad("empty.wav", "zero-length WAV", b"", "empty file (0 bytes)")
    bad("header-20-bytes.wav", "WAV cut after 20 bytes of header", short[:20], CORRUPT)
    readable("cut-mid-sample.wav", "WAV whose data stops mid-sample", short[:-1001])
    bad("rate-4e9.wav", "sample rate 4,000,000,000 Hz", _wav(rate=4_000_000_000), CORRUPT)
    bad("rate-999983.wav", "prime sample rate 999,983 Hz", _wav(rate=999_983), "the header claims 999983 Hz")
    bad("rate-0.wav", "sample rate 0 Hz", _wav(rate=0), CORRUPT)
    readable("rate-7919.wav", "prime rate 7,919 Hz (in range: resampled)", _wav(rate=7919))
    bad("channels-65535.wav", "65,535 channels", _wav(channels=65535), "invalid header", "Too many channels")
    bad("channels-0.wav", "0 channels", _wav(channels=0), "invalid header", "Channel count is zero")
    bad("bits-0.wav", "0 bits per sample", _wav(bits=0), CORRUPT)
    readable("bits-7.wav", "7 bits per sample (read as 8)", _wav(bits=7))
    bad("bits-256.wav", "256 bits per sample", _wav(bits=256), CORRUPT)
    readable("data-size-4g.wav", "data size 4 GiB over 0.1 s of samples", _wav(data_size=0xFFFFFFFF))
    readable("claims-10h.wav", "header claims 10 h over 0.1 s", _wav(data_size=10 * 3600 * 32000))
    readable("rf64-claims-2e62.wav", "RF64 whose ds64 claims 2^62 bytes over 0.1 s", _rf64(1 << 62))
    chunks = b"RIFF" + struct.pack("<I", 8_000_004) + b"WAVE" + b"JUNK\0\0\0\0" * 1_000_000
    bad("zero-size-chunks.wav", "a million empty RIFF chunks, no fmt or data", chunks, CORRUPT)
    for name, value, error in (
        ("nan.wav", np.nan, "NaN or infinite samples at 0.3 s"),
        ("inf.wav", np.inf, "NaN or infinite samples at 0.3 s"),
        ("huge-float.wav", 1e30, "samples of 1e+30, far out of range"),
    ):
        samples = _tone(16000, 1.0)
        samples[4800] = value
        bad(name, f"float WAV with a sample of {value}", _sound(audio / name, samples, 16000, subtype="FLOAT"), error)
    bad("random.wav", "random bytes named .wav", rng.bytes(8192), CORRUPT)
    bad("notes.mp3", "a text file named .mp3", b"minutes of the meeting\n" * 50, "it looks like a text file")
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + rng.bytes(500)
    bad("image.flac", "a PNG named .flac", png, "it looks like a PNG image")
    flac = _sound(audio / "half.flac", _tone(44100, 3.0), 44100)
    bad("half.flac", "FLAC cut in half", flac[: len(flac) // 2], "corrupt audio after")
    bad("header-only.flac", "FLAC cut after 30 bytes", flac[:30], CORRUPT)
    (audio / "length-unknown.flac").write_bytes(flac)
    _forget_flac_length(audio / "length-unknown.flac")
    readable("length-unknown.flac", "FLAC whose header gives no length", (audio / "length-unknown.flac").read_bytes())
    ogg = bytearray(_sound(audio / "damaged.ogg", _tone(16000, 3.0), 16000, format="OGG", subtype="VORBIS"))
    ogg[len(ogg) // 2 : len(ogg) // 2 + 200] = rng.bytes(200)
    bad("damaged.ogg", "OGG with 200 bytes overwritten", bytes(ogg), CORRUPT)
    bad("garbage.m4a", "garbage after an M4A ftyp box", b"\0\0\0\x20ftypM4A " + rng.bytes(5000), CORRUPT)
    bad("garbage.mp4", "garbage after an MP4 ftyp box", b"\0\0\0\x18ftypisom" + rng.bytes(5000), CORRUPT)
    bad("garbage.webm", "garbage after a WebM magic", b"\x1aE\xdf\xa3" + rng.bytes(5000), CORRUPT)
    bad("garbage.aac", "garbage after an ADTS sync word", b"\xff\xf1" + rng.bytes(5000), "invalid header")
    bad("id3-only.mp3", "an ID3 tag and noise named .mp3", b"ID3\4\0\0\x7f\x7f\x7f\x7f" + rng.bytes(3000), CORRUPT)
    rate_67mhz = b"\x40\x19\x80" + bytes(7)  # 80-bit extended: 2^26
    bad("aiff-rate-67mhz.aiff", "AIFF whose 80-bit rate is 67 MHz", _aiff(rate_67mhz), "the header claims 67108864 Hz")
    bad("aiff-65535-channels.aiff", "AIFF claiming 65,535 channels", _aiff(channels=65535), "invalid header")
    readable("wav-named.mp3", "a WAV named .mp3 (read by its bytes)", short)
    # 1 s at the largest rate and channel count read (94 MiB): decoded in bounded reads
    readable("limits-64ch-768k.wav", "64 channels at 768 kHz", _wav(rate=768_000, channels=64, data=bytes(98_304_000)))
    _silence_flac(audio / "silence-10h.flac", 10)
    over = "of audio is over the limit of 120.0 s"
    corpus.append(
        BadInput("FLAC of 10 h of silence (400 KiB)", "audio/silence-10h.flac", (f"36000.0 s {over}",), "worker")
    )
    _silence_flac(audio / "silence-length-unknown.flac", 3, length_in_header=False)
    kind = "FLAC of 3 h of silence, length not in its header"
    corpus.append(BadInput(kind, "audio/silence-length-unknown.flac", (over,), "worker"))
    return corpus


def _file_kinds(folder: Path) -> list[BadInput]:
    """Things in audio/ (and named on the command line) that are no regular file, or no usable name."""
    audio, explicit, outside = folder / "audio", folder / "explicit", folder / "outside"
    for fifo in (audio / "pipe.wav", explicit / "pipe.wav", explicit / "pipe.txt"):
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
    (outside / "secret.wav").write_bytes(_wav())
    _link(outside / "secret.wav", audio / "link-out.wav")
    _link("/dev/zero", audio / "dev-zero.wav")
    _link(folder / "nowhere.wav", audio / "broken-link.wav")
    _link("/dev/zero", explicit / "zero.txt")
    (audio / os.fsdecode(b"caf\xe9-latin1.wav")).write_bytes(_wav())
    (explicit / "folder.wav").mkdir(exist_ok=True)
    return [
        _refused("named pipe (FIFO) in a folder", "audio/pipe.wav", "a named pipe (FIFO), not a regular file"),
        _refused("link to /dev/zero in a folder", "audio/dev-zero.wav", "a character device (a link to /dev/zero)"),
        _refused("link out of the folder", "audio/link-out.wav", "outside the folder; links out of a folder"),
        _refused("broken link", "audio/broken-link.wav", "a broken link to"),
        _refused("non-UTF-8 file name", "audio/caf\\xe9-latin1.wav", "the file name is not UTF-8 text"),
        _refused("named pipe on the command line", "explicit/pipe.wav", "a named pipe (FIFO)", source=""),
        _refused("folder named .wav on the command line", "explicit/folder.wav", "no audio files in", source=""),
    ]


def _manifest_kinds(folder: Path) -> list[BadInput]:
    lists = folder / "lists"
    lines = [f"missing-{i:06d}.wav" for i in range(200_000)]
    lines.insert(100_000, "good.ogg")
    (lists / "huge.txt").write_text("\n".join(lines) + "\n")
    (lists / "long-line.txt").write_text("a" * (50 << 20) + ".wav\n")
    with open(lists / "over-64mib.txt", "wb") as big:  # sparse: takes no disk
        big.truncate(65 << 20)
    (lists / "latin1.txt").write_bytes("caf\xe9.wav\n".encode("latin-1"))
    (folder / "outside" / "notes.wav").write_text("not audio: a text file named .wav, outside the lists folder\n")
    (lists / "dots.txt").write_text("../outside/notes.wav\n")
    huge = ("199,900 more lines (from line 101", "only the first 100 are listed")
    return [
        _refused("manifest of 200,000 missing paths, one good", "@lists/huge.txt", *huge, more="missing-*.wav"),
        _refused("manifest with a 50 MiB line", "@lists/long-line.txt line 1", "52,428,804 characters long"),
        _refused("manifest of 65 MiB", "@lists/over-64mib.txt", "65.0 MiB, over the limit of 64.0 MiB"),
        _refused("manifest in Latin-1", "@lists/latin1.txt", "manifest is not UTF-8 text"),
        _refused("manifest that is a named pipe", "@explicit/pipe.txt", "a named pipe (FIFO)"),
        _refused("manifest linked to /dev/zero", "@explicit/zero.txt", "a character device"),
        BadInput(
            "manifest line climbing out with ..",
            "../outside/notes.wav",
            ("it looks like a text file",),
            "worker",
            source="@lists/dots.txt",
        ),
    ]


def _refused(kind: str, display: str, *errors: str, source: str | None = None, more: str = "") -> BadInput:
    """A kind the submission refuses. A manifest (``@...``) or ``source=""`` is a source of its own."""
    if source == "" or display.startswith("@"):
        source = display.split(" line ")[0]
    return BadInput(kind, display, errors, "submission", source=source, more=more)


def _archive_kinds(archives: Path) -> list[BadInput]:
    wav = _wav()
    corpus: list[BadInput] = []

    def add(kind: str, display: str, *errors: str) -> None:
        corpus.append(_refused(kind, f"archives/{display}", *errors, source="archives/" + display.split("::")[0]))

    with zipfile.ZipFile(archives / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.wav", "w", force_zip64=True) as member:
            for block in _zeros(256 << 20):
                member.write(block)
        archive.writestr("ok/quilter.wav", (EXAMPLES / "quilter.wav").read_bytes())
    add("zip bomb: 256 MiB of zeros in 250 KiB", "bomb.zip::zeros.wav", "a decompression bomb")
    _zip(archives / "dotdot.zip", {"../../escape.wav": wav})
    add("zip member climbing out with ..", "dotdot.zip::../../escape.wav", "unsafe member path")
    _zip(archives / "absolute.zip", {"/tmp/absolute.wav": wav})
    add("zip member with an absolute path", "absolute.zip::/tmp/absolute.wav", "unsafe member path")
    _zip(archives / "encrypted.zip", {"secret.wav": wav})
    _patch_central(archives / "encrypted.zip", 8, b"\x01\x00", also_local=6)
    add("zip member flagged encrypted", "encrypted.zip::secret.wav", "member is encrypted")
    _zip(archives / "bad-crc.zip", {"liar.wav": wav}, zipfile.ZIP_STORED)
    _patch_central(archives / "bad-crc.zip", 16, b"\0\0\0\0", also_local=14)
    add("zip member whose CRC does not match", "bad-crc.zip::liar.wav", "the archive is damaged", "Bad CRC-32")
    with zipfile.ZipFile(archives / "many.zip", "w", zipfile.ZIP_STORED) as archive:
        for i in range(100_001):
            archive.writestr(f"m{i}.txt", b"")
    add("zip of 100,001 members", "many.zip", "over 100000 members; split the archive")
    (archives / "junk.zip").write_bytes(np.random.default_rng(5).bytes(4096))
    add("random bytes named .zip", "junk.zip", "File is not a zip file")
    _tar(archives / "symlink.tar", [_tar_info("link.wav", tarfile.SYMTYPE, "/etc/passwd")])
    add("tar symlink member to /etc/passwd", "symlink.tar::link.wav", "a link or a special file")
    _tar(archives / "hardlink.tar", [_tar_info("hard.wav", tarfile.LNKTYPE, "/etc/passwd")])
    add("tar hard-link member", "hardlink.tar::hard.wav", "a link or a special file")
    _tar(archives / "device.tar", [_tar_info("zero.wav", tarfile.CHRTYPE)])
    add("tar character-device member", "device.tar::zero.wav", "a link or a special file")
    _tar(archives / "dotdot.tar", [tarfile.TarInfo("../../escape.wav")], {"../../escape.wav": wav})
    add("tar member climbing out with ..", "dotdot.tar::../../escape.wav", "unsafe member path")
    name = os.fsdecode(b"caf\xe9.wav")
    _tar(archives / "latin1-name.tar", [tarfile.TarInfo(name)], {name: wav})
    add("tar member with a non-UTF-8 name", "latin1-name.tar::caf\\xe9.wav", "the file name is not UTF-8 text")
    sparse_tar(archives / "sparse-1tib.tar", "huge.wav", wav, 1 << 40)
    add("sparse tar member claiming 1 TiB", "sparse-1tib.tar::huge.wav", "1024.0 GiB, over the limit of 4.0 GiB")
    sparse_tar(archives / "sparse-holes.tar", "holes.wav", _wav(data_size=3 << 30), 3 << 30)
    add("sparse tar member: 3 GiB of holes", "sparse-holes.tar::holes.wav", "a decompression bomb")
    with tarfile.open(archives / "bomb.tgz", "w:gz", compresslevel=1) as tgz:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 1 << 30
        tgz.addfile(info, _ZeroStream(info.size))
        info = tarfile.TarInfo("a.wav")
        info.size = len(wav)
        tgz.addfile(info, io.BytesIO(wav))
    add("tar.gz bomb: 1 GiB of zeros in a non-audio member", "bomb.tgz", "a decompression bomb")
    header = gnu_header("claims.bin", tarfile.REGTYPE, 100 << 30)
    (archives / "claims-100gib.tgz").write_bytes(_gzip(header + bytes(4096)))
    add("tar.gz header claiming 100 GiB", "claims-100gib.tgz", "its members add up to more than 64.0 GiB")
    whole = _gzip(_tar_bytes({f"t{i}.wav": np.random.default_rng(i).bytes(20_000) for i in range(4)}))
    (archives / "cut.tgz").write_bytes(whole[: len(whole) // 2])
    add("tar.gz cut in half", "cut.tgz", "cannot read")
    return corpus


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sources(folder: Path, corpus: list[BadInput]) -> list[str]:
    """The command line's sources: the folder audio/, then each kind's own, once."""
    out = [str(folder / "audio")]
    for bad in corpus:
        if bad.source is None:
            continue
        mark, rel = ("@", bad.source[1:]) if bad.source.startswith("@") else ("", bad.source)
        if f"{mark}{folder / rel}" not in out:
            out.append(f"{mark}{folder / rel}")
    return out


# --- running it ----------------------------------------------------------------------------------


@dataclass
class Run:
    batch_id: str = ""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # by display, corpus folder left out
    submit_s: float = 0.0
    batch_s: float = 0.0
    peak_rss_mib: float = 0.0
    worker_deaths: int = 0
    worker_alive: bool = False
    errors: list[str] = field(default_factory=list)  # what went wrong outside the records
    folder: Path = Path()  # the corpus
    out: Path = Path()


def run_corpus(env: dict[str, str], folder: Path, corpus: list[BadInput], out: Path, timeout_s: float = 480) -> Run:
    """Submit ``sources(folder, corpus)`` as one batch to one fresh worker and wait for its end.

    ``env`` holds OVBATCH_BROKER_URL, OVBATCH_STORAGE_URL and OVBATCH_KEYRING of a registry with
    whisper-base; the Redis database must have no other live worker.
    """
    import redis

    env = {
        **env,
        "OVBATCH_MAX_AUDIO_DURATION_S": str(MAX_DURATION_S),
        "OVBATCH_JOB_TIME_LIMIT_S": "300",
        "OVBATCH_VISIBILITY_TIMEOUT_S": "600",
        "OVBATCH_REDELIVER_AFTER_S": "10",
    }
    client = redis.Redis.from_url(env["OVBATCH_BROKER_URL"])
    deadline = time.monotonic() + 20  # a stopped worker's presence lapses within 15 s
    while list(client.scan_iter("ovbatch:worker:*")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"another worker is live on {env['OVBATCH_BROKER_URL']}: use a database of its own")
        time.sleep(1)
    run = Run(folder=folder, out=out)
    log = out.parent / f"{out.name}-worker.log"
    worker = _start_worker(env, client, log)
    try:
        command = [OVBATCH, "transcribe", *sources(folder, corpus), "--model", "whisper-base", "--out", str(out)]
        t0 = time.monotonic()
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            run.errors.append("the submission did not end within 300 s (a read that blocks?)")
            return run
        run.submit_s = time.monotonic() - t0
        if done.returncode != 0 or "Traceback" in done.stderr or "batch " not in done.stdout:
            run.errors.append(f"the submission failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-3000:]}")
            return run
        run.batch_id = done.stdout.split("batch ", 1)[1].split(":", 1)[0]
        worker = _wait_for_batch(env, client, run, worker, log, t0 + timeout_s)
        run.batch_s = time.monotonic() - t0
        run.peak_rss_mib = _vm_kib(worker.pid, "VmHWM") / 1024
        run.worker_alive = worker.poll() is None
        shown = subprocess.run([OVBATCH, "status", run.batch_id], env=env, capture_output=True, text=True, timeout=120)
        if "Traceback" in shown.stderr:
            run.errors.append(f"`ovbatch status` failed: {shown.stderr[-3000:]}")
        listed = subprocess.run(
            [OVBATCH, "status", run.batch_id, "--json"], env=env, capture_output=True, text=True, timeout=120
        )
        prefix = f"{folder}/"
        for record in json.loads(listed.stdout)["jobs"].values():
            run.records[record["display"].replace(prefix, "")] = record
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
    return run


def _start_worker(env: dict[str, str], client: Any, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        proc = subprocess.Popen(
            [OVBATCH, "worker", "--device", "CPU", "--name", "bad-inputs"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for key in client.scan_iter("ovbatch:worker:*"):
            if json.loads(client.get(key) or b"{}").get("pid") == proc.pid:
                return proc
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited at start: {log.read_text()[-3000:]}")
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the worker did not advertise itself within 180 s")


def _wait_for_batch(
    env: dict[str, str], client: Any, run: Run, worker: subprocess.Popen[bytes], log: Path, deadline: float
) -> subprocess.Popen[bytes]:
    """Poll the batch until it ends; a dead worker is counted and replaced (its jobs come back)."""
    from ovbatch.batches import RedisBatchStore

    store = RedisBatchStore(client)
    while time.monotonic() < deadline:
        summary = store.summary(run.batch_id) or {}
        if summary.get("ended_s") is not None:
            return worker
        if worker.poll() is not None:
            run.worker_deaths += 1
            run.errors.append(f"the worker died (exit {worker.returncode}); log: {log}")
            worker = _start_worker(env, client, log)
        time.sleep(1.0)
    run.errors.append(f"batch {run.batch_id} did not end within the time allowed")
    return worker


def _vm_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- judging it ----------------------------------------------------------------------------------


def _named(display: str) -> str:
    """The part of a display a message must show: the file's (or manifest line's) own name."""
    return display.split("::")[-1].lstrip("@").rsplit("/", 1)[-1]


def _where(record: dict[str, Any]) -> Caught:
    return "worker" if record.get("worker") else "submission"


def check(run: Run, corpus: list[BadInput], rss_bound_mib: float = RSS_BOUND_MIB) -> list[str]:
    """Everything that is not as it must be; empty when the run passed."""
    problems = list(run.errors)
    seen: set[str] = set()
    for bad in corpus:
        record = run.records.get(bad.display)
        if record is None:
            problems.append(f"{bad.kind}: no record {bad.display!r}")
            continue
        seen.add(bad.display)
        problems += _judge(bad.kind, bad, record)
        for display, other in run.records.items():
            if bad.more and fnmatch.fnmatchcase(display, bad.more):
                seen.add(display)
                problems += _judge(
                    bad.kind, BadInput(bad.kind, display, ("no such file or folder",), bad.caught), other
                )
    for good in GOOD:
        record = run.records.get(good.display)
        seen.add(good.display)
        if record is None or record["status"] != "done":
            problems.append(f"good {good.display}: {record and (record['status'], record['error'])}")
            continue
        text = next(((run.out / key).read_text() for key in record["outputs"] if key.endswith(".txt")), "")
        if good.words not in text.lower():
            problems.append(f"good {good.display}: transcript {text[:200]!r} lacks {good.words!r}")
    problems += [
        f"unexpected record {d!r}: {r['status']} {r['error']}" for d, r in run.records.items() if d not in seen
    ]
    jobs = {d: r for d, r in run.records.items() if r.get("worker")}  # a refused input's relpath is its display
    problems += [f"{d!r}: output path {r['relpath']!r} climbs out" for d, r in jobs.items() if _unsafe(r["relpath"])]
    if run.worker_deaths or (run.batch_id and not run.worker_alive):
        problems.append(f"worker deaths: {run.worker_deaths}, alive at the end: {run.worker_alive}")
    if run.peak_rss_mib > rss_bound_mib:
        problems.append(f"peak worker RSS {run.peak_rss_mib:.0f} MiB is over the bound of {rss_bound_mib} MiB")
    return problems


def _judge(kind: str, bad: BadInput, record: dict[str, Any]) -> list[str]:
    status, error = record["status"], record.get("error") or ""
    head = f"{kind} ({bad.display}): "
    if status != bad.outcome:
        return [f"{head}{status}, expected {bad.outcome}: {error}"]
    out = []
    if _where(record) != bad.caught:
        out.append(f"{head}caught at {_where(record)}, expected at {bad.caught}")
    if bad.outcome == "failed":
        missing = [e for e in bad.errors if e not in error]
        if missing or _named(bad.display) not in error:
            out.append(f"{head}error {error[:300]!r} lacks {missing or _named(bad.display)!r}")
        if record.get("retryable"):
            out.append(f"{head}a bad input is marked retryable: {error[:200]}")
        if len(error) > 2000:
            out.append(f"{head}an error of {len(error)} characters")
    if record.get("processing_s", 0) > MAX_JOB_S:
        out.append(f"{head}took {record['processing_s']:.0f} s on the worker")
    return out


def _unsafe(relpath: str) -> bool:
    return relpath.startswith("/") or ".." in relpath.split("/")


def table(run: Run, corpus: list[BadInput]) -> str:
    rows = [f"{'kind':52} {'caught at':10} {'s':>5}  error (shortened)"]
    for bad in corpus:
        record = run.records.get(bad.display, {})
        error = record.get("error") or ("(transcribed)" if record.get("status") == "done" else "(no record)")
        error = error.replace(f"{run.folder}/", "")
        seconds = f"{record.get('processing_s', 0):5.1f}" if record.get("worker") else "    -"
        where = _where(record) if record else "-"
        rows.append(f"{bad.kind[:52]:52} {where:10} {seconds}  {error[:110]}")
    failed = sum(1 for b in corpus if run.records.get(b.display, {}).get("status") == "failed")
    rows.append(
        f"{len(corpus)} kinds ({failed} failed alone, {len(corpus) - failed} readable and transcribed), "
        f"{sum(1 for g in GOOD if run.records.get(g.display, {}).get('status') == 'done')}/{len(GOOD)} good files "
        f"done; submission {run.submit_s:.0f} s, batch {run.batch_s:.0f} s; worker deaths: {run.worker_deaths}; "
        f"peak worker RSS (VmHWM): {run.peak_rss_mib:.0f} MiB"
    )
    return "\n".join(rows)


# --- the command ---------------------------------------------------------------------------------


def prepare_home(home: Path, redis_url: str) -> dict[str, str]:
    """An environment with ``home``'s keyring and registry (Whisper base imported there once)."""
    from ovbatch.samples import fetch_whisper_base

    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env.update(
        OVBATCH_BROKER_URL=redis_url,
        OVBATCH_STORAGE_URL=(home / "storage").as_uri(),
        OVBATCH_KEYRING=str(home / "keyring.json"),
    )
    if not (home / "keyring.json").exists():
        subprocess.run([OVBATCH, "keys", "new"], env=env, check=True, capture_output=True)
    listed = subprocess.run([OVBATCH, "models", "list"], env=env, capture_output=True, text=True)
    if "whisper-base" not in listed.stdout:
        ct2 = fetch_whisper_base(REPO / ".cache" / "models" / "whisper-base-ct2")
        subprocess.run(
            [OVBATCH, "models", "import", str(ct2), "--name", "whisper-base"], env=env, check=True, capture_output=True
        )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="keyring, registry, corpus and outputs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="a database no other worker uses")
    parser.add_argument("--rss-bound-mib", type=float, default=RSS_BOUND_MIB)
    parser.add_argument("--json", action="store_true", help="also print the run as JSON")
    args = parser.parse_args(argv)
    env = prepare_home(args.home, args.redis_url)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, out = args.home / f"corpus-{stamp}", args.home / f"out-{stamp}"
    corpus = write_corpus(folder)
    run = run_corpus(env, folder, corpus, out)
    print(table(run, corpus))
    problems = check(run, corpus, args.rss_bound_mib)
    for problem in problems:
        print(f"PROBLEM {problem}")
    if args.json:
        summary = {
            "kinds": len(corpus),
            "worker_deaths": run.worker_deaths,
            "peak_rss_mib": round(run.peak_rss_mib),
            "rss_bound_mib": args.rss_bound_mib,
            "submit_s": round(run.submit_s, 1),
            "batch_s": round(run.batch_s, 1),
            "problems": problems,
            "rows": [
                {"kind": b.kind, "display": b.display, "caught": b.caught, "record": run.records.get(b.display)}
                for b in corpus
            ],
        }
        print(json.dumps(summary, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
