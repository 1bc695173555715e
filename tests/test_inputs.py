"""Enumerating batch inputs from real files, folders, globs, archives, manifests and a real S3 server."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from ovbatch.errors import BadInputError, OvbatchError, StorageError
from ovbatch.inputs import (
    ArchiveLimits,
    InputItem,
    Inputs,
    content_digest,
    content_key,
    enumerate_inputs,
    open_input,
    upload_content_addressed,
)
from ovbatch.storage import ObjectStore
from ovbatch.storage.file import FileStore
from tests.storage.faulty_s3 import FaultyS3


def write(path: Path, data: bytes = b"RIFF-not-really") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def relpaths(found: Inputs) -> list[str]:
    return [i.relpath for i in found.items]


def read(item: InputItem) -> bytes:
    with item.open() as stream:
        return stream.read()


def reasons(found: Inputs) -> dict[str, str]:
    return {p.display: p.reason for p in found.problems}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """./archive with audio at two depths, a text file and macOS companions; cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archive/calls/2024/a.wav", b"a" * 10)
    write(tmp_path / "archive/calls/2024/b.FLAC", b"b" * 20)
    write(tmp_path / "archive/calls/c.mp3", b"c")
    write(tmp_path / "archive/notes.txt", b"notes")
    write(tmp_path / "archive/calls/._a.wav", b"apple double")
    write(tmp_path / "archive/__MACOSX/calls/x.wav", b"resource fork")
    return tmp_path


def test_folder_recursive_audio_only(tree: Path) -> None:
    found = enumerate_inputs(["./archive"])
    assert relpaths(found) == ["calls/c.mp3", "calls/2024/a.wav", "calls/2024/b.FLAC"]
    assert [i.display for i in found.items] == [
        "./archive/calls/c.mp3",
        "./archive/calls/2024/a.wav",
        "./archive/calls/2024/b.FLAC",
    ]
    assert [i.size_bytes for i in found.items] == [1, 10, 20]
    assert read(found.items[1]) == b"a" * 10
    assert found.problems == []


def test_explicit_file_of_any_type_passes_through(tree: Path) -> None:
    found = enumerate_inputs(["archive/notes.txt", str(tree / "archive/calls/2024/a.wav")])
    assert relpaths(found) == ["notes.txt", "a.wav"]
    assert read(found.items[0]) == b"notes"


def test_problems_are_collected_without_aborting(tree: Path) -> None:
    (tree / "empty").mkdir()
    found = enumerate_inputs(["missing.wav", "archive/calls/c.mp3", "nothing/*.wav", "empty", "ftp://x/y.wav"])
    assert relpaths(found) == ["c.mp3"]
    assert reasons(found) == {
        "missing.wav": "missing.wav: no such file or folder",
        "nothing/*.wav": "nothing/*.wav: matched nothing",
        "empty": "empty: no audio files in this folder (looked for aac, aif, aiff, au, caf, flac, m4a, "
                 "mkv, mp3, mp4, oga, ogg, opus, wav, webm, wma)",
        "ftp://x/y.wav": "ftp://x/y.wav: unsupported URL; use a local path, file:///path or s3://bucket/prefix",
    }  # fmt: skip


def test_duplicates_once_and_collisions_are_problems(tree: Path) -> None:
    write(tree / "other/a.wav")
    found = enumerate_inputs(["archive/calls/2024/a.wav", "./archive/calls/2024/a.wav", "other/a.wav"])
    assert relpaths(found) == ["a.wav"]
    assert reasons(found) == {
        "other/a.wav": "other/a.wav: its output path a.wav is already taken by archive/calls/2024/a.wav; rename one"
    }


def test_globs(tree: Path) -> None:
    found = enumerate_inputs(["archive/calls/*/*.wav", "archive/**/*.mp3", "archive/*.txt"])
    assert relpaths(found) == ["2024/a.wav", "calls/c.mp3"]
    assert [i.display for i in found.items] == ["archive/calls/2024/a.wav", "archive/calls/c.mp3"]
    assert list(reasons(found)) == ["archive/*.txt"]
    assert "matched 1 paths but no audio files" in reasons(found)["archive/*.txt"]


def test_glob_matching_folders_and_absolute(tree: Path) -> None:
    found = enumerate_inputs([str(tree / "arch*")])
    assert relpaths(found) == ["archive/calls/c.mp3", "archive/calls/2024/a.wav", "archive/calls/2024/b.FLAC"]
    (tree / "archive/empty").mkdir()
    found = enumerate_inputs(["archive/**"])  # every folder below too: each file once, no noise
    assert relpaths(found) == ["calls/c.mp3", "calls/2024/a.wav", "calls/2024/b.FLAC"]
    assert [i.display for i in found.items][0] == "archive/calls/c.mp3"
    assert found.problems == []


def test_unusable_path_is_a_problem(tree: Path) -> None:
    found = enumerate_inputs(["bad\x00name.wav", "archive/calls/c.mp3"])
    assert relpaths(found) == ["c.mp3"]
    assert reasons(found) == {"bad\x00name.wav": "bad\x00name.wav: no such file or folder"}


def test_file_url(tree: Path) -> None:
    found = enumerate_inputs([(tree / "archive/calls").as_uri()])
    assert relpaths(found) == ["c.mp3", "2024/a.wav", "2024/b.FLAC"]


# --- archives -----------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return path


MEMBERS = {
    "sessions/a.wav": b"A" * 300,
    "sessions/deep/b.ogg": b"B" * 50,
    "readme.md": b"not audio",
    "../escape.wav": b"evil",
    "/etc/abs.wav": b"evil",
    "sessions/big.wav": b"\x00" * 5000,
}


def test_zip_members_streamed_and_checked(tree: Path) -> None:
    make_zip(tree / "talks.zip", MEMBERS)
    found = enumerate_inputs(["talks.zip"], limits=ArchiveLimits(max_member_bytes=1000))
    assert relpaths(found) == ["talks.zip/sessions/a.wav", "talks.zip/sessions/deep/b.ogg"]
    assert [i.display for i in found.items] == ["talks.zip::sessions/a.wav", "talks.zip::sessions/deep/b.ogg"]
    assert [i.size_bytes for i in found.items] == [300, 50]
    assert [read(i) for i in found.items] == [b"A" * 300, b"B" * 50]
    problems = reasons(found)
    assert set(problems) == {"talks.zip::../escape.wav", "talks.zip::/etc/abs.wav", "talks.zip::sessions/big.wav"}
    assert "unsafe member path (absolute, or with '..' parts)" in problems["talks.zip::../escape.wav"]
    assert "unsafe member path" in problems["talks.zip::/etc/abs.wav"]
    assert "over the limit of" in problems["talks.zip::sessions/big.wav"]
    assert not list(tree.glob("**/escape.wav")) and not list(tree.glob("sessions"))  # nothing extracted


def test_zip_bomb_ratio_and_total(tree: Path) -> None:
    make_zip(tree / "bomb.zip", {"zeros.wav": b"\x00" * 200_000, "ok.wav": os.urandom(3000)})
    found = enumerate_inputs(["bomb.zip"], limits=ArchiveLimits(ratio_min_bytes=1000, max_ratio=50))
    assert relpaths(found) == ["bomb.zip/ok.wav"]
    assert "member expands" in reasons(found)["bomb.zip::zeros.wav"]
    assert "decompression bomb" in reasons(found)["bomb.zip::zeros.wav"]
    found = enumerate_inputs(["bomb.zip", "archive"], limits=ArchiveLimits(max_total_bytes=100_000))
    assert relpaths(found) == ["calls/c.mp3", "calls/2024/a.wav", "calls/2024/b.FLAC"]  # the rest goes on
    assert reasons(found) == {"bomb.zip": "bomb.zip: its members add up to more than 97.7 KiB; split the archive"}


@pytest.mark.parametrize(("name", "mode"), [("talks.tar", "w"), ("talks.tar.gz", "w:gz"), ("talks.tgz", "w:gz")])
def test_tar_members(tree: Path, name: str, mode: str) -> None:
    make_tar(tree / name, MEMBERS, mode)
    found = enumerate_inputs([name], limits=ArchiveLimits(max_member_bytes=1000))
    assert relpaths(found) == [f"{name}/sessions/a.wav", f"{name}/sessions/deep/b.ogg"]
    assert [read(i) for i in found.items] == [b"A" * 300, b"B" * 50]
    problems = reasons(found)
    assert set(problems) == {f"{name}::{m}" for m in ("../escape.wav", "/etc/abs.wav", "sessions/big.wav", "link.wav")}
    assert "not a regular file" in problems[f"{name}::link.wav"]
    # two members open at once (the shared handle is taken; the second gets its own), read interleaved
    with found.items[1].open() as second, found.items[0].open() as first:
        assert (first.read(100), second.read(10), first.read()) == (b"A" * 100, b"B" * 10, b"A" * 200)
        first.seek(0)
        assert first.read(3) == b"AAA"


def test_tgz_listing_is_bounded_and_ratio_checked(tree: Path) -> None:
    make_tar(tree / "bomb.tgz", {"zeros.wav": b"\x00" * 300_000}, "w:gz")
    found = enumerate_inputs(["bomb.tgz"], limits=ArchiveLimits(ratio_min_bytes=1000))
    assert "bomb.tgz: expands" in reasons(found)["bomb.tgz"] and found.items == []
    make_tar(tree / "big.tgz", {"video.mkv.part": b"\x00" * 300_000, "a.wav": b"a"}, "w:gz")
    found = enumerate_inputs(["big.tgz"], limits=ArchiveLimits(max_total_bytes=100_000))
    assert "its members add up to more than" in reasons(found)["big.tgz"]


def test_unreadable_archives(tree: Path) -> None:
    write(tree / "junk.zip", os.urandom(500))
    make_tar(tree / "cut.tar.gz", {"a.wav": os.urandom(50_000)}, "w:gz")
    data = (tree / "cut.tar.gz").read_bytes()
    write(tree / "cut.tar.gz", data[: len(data) // 2])
    found = enumerate_inputs(["junk.zip", "cut.tar.gz", "archive/calls/c.mp3"])
    assert relpaths(found) == ["c.mp3"]
    assert reasons(found)["junk.zip"] == "junk.zip: cannot read it (File is not a zip file)"
    assert reasons(found)["cut.tar.gz"].startswith("cut.tar.gz: cannot read it (")


def test_archive_through_a_glob_keeps_its_folder(tree: Path) -> None:
    make_zip(write(tree / "drop/2024/talks.zip").parent / "talks.zip", {"a.wav": b"a"})
    found = enumerate_inputs(["drop/*/*.zip"])
    assert relpaths(found) == ["2024/talks.zip/a.wav"]
    assert found.items[0].display == "drop/2024/talks.zip::a.wav"


# --- manifests ----------------------------------------------------------------------------------


def test_manifest(tree: Path) -> None:
    lists = tree / "lists"
    write(lists / "sub/c.wav", b"c")
    make_zip(lists / "t.zip", {"z.wav": b"z"})
    write(lists / "more.lst", b"# nested\n../archive/calls/2024/a.wav\n")
    lines = [
        "# recordings for the March batch",
        "",
        "  sub/c.wav  ",
        "../archive/calls/2024",
        "missing.wav",
        "t.zip",
        "@more.lst",
        "@list.txt",
        "s3://",
    ]
    write(lists / "list.txt", "\n".join(lines).encode())
    found = enumerate_inputs(["@lists/list.txt"])
    # more.lst names a.wav again (the same file, so listed once); relative lines keep their path
    assert relpaths(found) == ["sub/c.wav", "a.wav", "b.FLAC", "t.zip/z.wav"]
    assert reasons(found) == {
        "missing.wav": "missing.wav: no such file or folder (@lists/list.txt line 5)",
        "@list.txt": "@list.txt: manifest includes itself (@lists/list.txt line 8)",
        "s3://": "s3://: name a bucket, as in s3://bucket/prefix (@lists/list.txt line 9)",
    }


def test_bad_manifests(tree: Path) -> None:
    write(tree / "latin1.txt", "caf\xe9.wav\n".encode("latin-1"))
    found = enumerate_inputs(["@nope.txt", "@latin1.txt", "archive/calls/c.mp3"])
    assert relpaths(found) == ["c.mp3"]
    assert reasons(found)["@nope.txt"] == "@nope.txt: no such manifest file"
    assert reasons(found)["@latin1.txt"].startswith("@latin1.txt: manifest is not UTF-8 text")


# --- S3 -----------------------------------------------------------------------------------------


def test_s3_prefix(s3_store: ObjectStore, s3_endpoint: str) -> None:
    for key, data in {"calls/2024/a.wav": b"a", "calls/2024/notes.txt": b"n", "calls/b.mp3": b"bb"}.items():
        s3_store.put_bytes(key, data)
    bucket = s3_store.url.split("/")[2]
    found = enumerate_inputs([f"s3://{bucket}/ovbatch/prefix/calls/"], s3_endpoint_url=s3_endpoint)
    assert relpaths(found) == ["2024/a.wav", "b.mp3"]
    assert [i.display for i in found.items] == [
        f"s3://{bucket}/ovbatch/prefix/calls/2024/a.wav",
        f"s3://{bucket}/ovbatch/prefix/calls/b.mp3",
    ]
    assert [read(i) for i in found.items] == [b"a", b"bb"]
    one = enumerate_inputs([f"s3://{bucket}/ovbatch/prefix/calls/2024/notes.txt"], s3_endpoint_url=s3_endpoint)
    assert relpaths(one) == ["notes.txt"] and one.items[0].size_bytes == 1  # named explicitly: passed through
    none = enumerate_inputs([f"s3://{bucket}/nothing/here"], s3_endpoint_url=s3_endpoint)
    url = f"s3://{bucket}/nothing/here"
    assert reasons(none) == {url: f"{url}: no such object, and no objects under it as a prefix"}


@pytest.fixture
def faulty(s3_endpoint: str) -> Iterator[FaultyS3]:
    with FaultyS3(s3_endpoint) as proxy:
        yield proxy


def test_an_s3_input_over_the_limit_is_refused_before_a_byte_is_read(
    s3_store: ObjectStore, faulty: FaultyS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker copies an S3 body to a temp file to decode it: the size is checked first (HEAD)."""
    from ovbatch.tasks.transcribe.job import seekable

    s3_store.put_bytes("in/big.wav", b"w" * 2000)
    s3_store.put_bytes("in/small.wav", b"w" * 1000)
    bucket = s3_store.url.split("/")[2]
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    registry_store = FileStore(tmp_path / "registry")
    url = f"s3://{bucket}/ovbatch/prefix/in/big.wav"
    with (
        pytest.raises(BadInputError, match=f"{url}: 2.0 KiB, over the limit of 1000 bytes for one input"),
        open_input(registry_store, url, faulty.url, max_bytes=1000) as raw,
        seekable(raw),
    ):
        pass
    assert faulty.count("HEAD") == 1 and faulty.count("GET") == 0, faulty.seen
    assert list(spool.iterdir()) == [], "nothing may be spooled"
    with open_input(registry_store, url.replace("big", "small"), faulty.url, max_bytes=1000) as raw:
        assert raw.read() == b"w" * 1000
    registry_store.put_bytes("inputs/sha256/ab/abc", b"u" * 1001)
    with pytest.raises(BadInputError, match="registry:inputs/sha256/ab/abc: 1001 bytes, over the limit of 1000 bytes"):
        open_input(registry_store, "registry:inputs/sha256/ab/abc", max_bytes=1000)


def test_an_input_over_the_limit_is_a_problem_when_listed(s3_store: ObjectStore, s3_endpoint: str, tree: Path) -> None:
    s3_store.put_bytes("in/big.wav", b"w" * 2000)
    bucket = s3_store.url.split("/")[2]
    url = f"s3://{bucket}/ovbatch/prefix/in/big.wav"
    write(tree / "big.wav", b"w" * 2000)
    limits = ArchiveLimits(max_member_bytes=1000)
    found = enumerate_inputs([url, "big.wav", "archive"], s3_endpoint_url=s3_endpoint, limits=limits)
    assert reasons(found) == {
        url: f"{url}: 2.0 KiB, over the limit of 1000 bytes for one input",
        "big.wav": "big.wav: 2.0 KiB, over the limit of 1000 bytes for one input",
    }
    assert sorted(relpaths(found)) == ["calls/2024/a.wav", "calls/2024/b.FLAC", "calls/c.mp3"], "the others are listed"


# --- content addressing -------------------------------------------------------------------------


def test_content_digest_streams() -> None:
    import hashlib

    data = os.urandom(3 * (1 << 20) + 17)
    assert content_digest(io.BytesIO(data)) == (hashlib.sha256(data).hexdigest(), len(data))
    assert content_digest(io.BytesIO(b"")) == (hashlib.sha256(b"").hexdigest(), 0)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_upload_content_addressed(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: ObjectStore = request.getfixturevalue(f"{backend}_store")
    data = os.urandom((1 << 20) + 5)
    path = write(tmp_path / "a.wav", data)
    item = enumerate_inputs([str(path)]).items[0]
    key = upload_content_addressed(store, item)
    digest, size = content_digest(io.BytesIO(data))
    assert key == content_key(digest) == f"inputs/sha256/{digest[:2]}/{digest}"
    assert store.get_bytes(key) == data and size == len(data)
    puts: list[str] = []
    real_put = store.put_stream

    def counting_put(key: str, chunks: Iterable[bytes | memoryview]) -> int:
        puts.append(key)
        return real_put(key, chunks)

    monkeypatch.setattr(store, "put_stream", counting_put)
    assert upload_content_addressed(store, item) == key
    assert puts == []  # already there: not uploaded again


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_upload_aborts_when_the_bytes_change(request: pytest.FixtureRequest, backend: str) -> None:
    store: ObjectStore = request.getfixturevalue(f"{backend}_store")
    versions = iter([b"first version", b"second version"])

    def opener() -> BinaryIO:
        return io.BytesIO(next(versions))

    item = InputItem("a.wav", "a.wav", opener, None)
    with pytest.raises((OvbatchError, StorageError), match="a.wav changed while it was being uploaded"):
        upload_content_addressed(store, item)
    assert list(store.list("inputs/")) == []


def test_tar_members_read_in_order_share_one_handle(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = {f"m{i:02d}.wav": os.urandom(20_000) for i in range(20)}
    make_tar(tree / "many.tgz", members, "w:gz")
    opened: list[str] = []
    real_open = tarfile.open

    def counting_open(name: Path) -> tarfile.TarFile:
        opened.append(str(name))
        return real_open(name)

    monkeypatch.setattr(tarfile, "open", counting_open)
    found = enumerate_inputs(["many.tgz"])
    assert [read(i) for i in found.items] == list(members.values())
    assert len(opened) == 2  # one to list, one to read every member in order (a forward-only gzip stream)


# --- what is not a regular file, or has no usable name -------------------------------------------


@pytest.mark.timeout(60)  # a read that blocks would hang here
def test_only_regular_files_are_read(tree: Path) -> None:
    calls = tree / "archive" / "calls"
    os.mkfifo(calls / "pipe.wav")
    os.symlink("/dev/zero", calls / "zero.wav")
    os.symlink(tree / "secret.wav", calls / "out.wav")
    os.symlink(calls / "2024" / "a.wav", calls / "inside.wav")  # the same file again: listed once
    os.symlink(tree / "gone.wav", calls / "broken.wav")
    write(tree / "secret.wav", b"private")
    os.mkfifo(tree / "named.wav")
    found = enumerate_inputs(["archive", "named.wav", "secret.wav"])
    # a link inside the folder is followed; its target, met later, is the same file and listed once
    assert relpaths(found) == ["calls/c.mp3", "calls/inside.wav", "calls/2024/b.FLAC", "secret.wav"]
    assert reasons(found) == {
        "archive/calls/pipe.wav": "archive/calls/pipe.wav: a named pipe (FIFO), not a regular file; only regular "
                                  "files are read",
        "archive/calls/zero.wav": "archive/calls/zero.wav: a character device (a link to /dev/zero), not a regular "
                                  "file; only regular files are read",
        "archive/calls/out.wav": f"archive/calls/out.wav: a link to {tree / 'secret.wav'}, outside the folder; links "
                                 "out of a folder are not followed (name the file itself to include it)",
        "archive/calls/broken.wav": f"archive/calls/broken.wav: a broken link to {tree / 'gone.wav'}",
        "named.wav": "named.wav: a named pipe (FIFO), not a regular file; only regular files are read",
    }  # fmt: skip


@pytest.mark.timeout(60)
def test_a_pipe_put_in_place_after_listing_is_refused_without_blocking(tree: Path) -> None:
    found = enumerate_inputs(["archive/calls/c.mp3"])
    (tree / "archive/calls/c.mp3").unlink()
    os.mkfifo(tree / "archive/calls/c.mp3")
    with pytest.raises(BadInputError, match=r"c\.mp3: a named pipe \(FIFO\), not a regular file"):
        found.items[0].open()


def test_names_that_are_not_utf8(tree: Path) -> None:
    name = os.fsdecode(b"caf\xe9.wav")
    write(tree / "archive" / name, b"x")
    make_tar(tree / "t.tar", {name: b"y", "ok.wav": b"z"})
    found = enumerate_inputs(["archive", "t.tar"])
    assert "t.tar/ok.wav" in relpaths(found) and not any("caf" in r for r in relpaths(found))
    rename = "the file name is not UTF-8 text; rename it (outputs are named after it)"
    assert reasons(found)["archive/caf\\xe9.wav"] == f"archive/caf\\xe9.wav: {rename}"
    assert reasons(found)["t.tar::caf\\xe9.wav"] == f"t.tar::caf\\xe9.wav: {rename}"
    missing = os.fsdecode(b"/nowhere/\xff.wav")
    assert reasons(enumerate_inputs([missing])) == {"/nowhere/\\xff.wav": "/nowhere/\\xff.wav: no such file or folder"}


@pytest.mark.timeout(60)
def test_manifests_are_bounded(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ovbatch import inputs

    os.mkfifo(tree / "pipe.txt")
    os.symlink("/dev/zero", tree / "zero.txt")
    monkeypatch.setattr(inputs, "MAX_MANIFEST_BYTES", 2000)
    monkeypatch.setattr(inputs, "MAX_LINE_CHARS", 100)
    monkeypatch.setattr(inputs, "MAX_MANIFEST_PROBLEMS", 3)
    write(tree / "big.txt", b"a.wav\n" * 400)
    write(tree / "long.txt", b"x" * 150 + b"\narchive/calls/c.mp3\n")
    lines = [f"missing-{i}.wav" for i in range(10)] + ["archive/calls/2024/a.wav", "also-missing.wav"]
    write(tree / "many.txt", "\n".join(lines).encode())
    found = enumerate_inputs(["@pipe.txt", "@zero.txt", "@big.txt", "@long.txt", "@many.txt"])
    assert relpaths(found) == ["archive/calls/c.mp3", "archive/calls/2024/a.wav"]  # good lines after bad ones
    problems = reasons(found)
    assert problems["@pipe.txt"] == "@pipe.txt: a named pipe (FIFO), not a regular file; only regular files are read"
    assert problems["@zero.txt"].startswith("@zero.txt: a character device (a link to /dev/zero), not a regular file")
    assert problems["@big.txt"] == "@big.txt: 2.3 KiB, over the limit of 2.0 KiB for a manifest; split it into several"
    assert problems["@long.txt line 1"] == "@long.txt line 1: 150 characters long; a path or URL has at most 100"
    assert [d for d in problems if d.startswith("missing-")] == ["missing-0.wav", "missing-1.wav", "missing-2.wav"]
    assert problems["@many.txt"] == (
        "@many.txt: 8 more lines (from line 4 to 12) name nothing that can be read; "
        "only the first 3 are listed one by one"
    )


def test_sparse_tar_member_is_a_bomb(tree: Path) -> None:
    from benchmarks.bad_inputs import sparse_tar

    sparse_tar(tree / "holes.tar", "holes.wav", b"RIFF" + bytes(500), 3 << 30)
    sparse_tar(tree / "huge.tar", "huge.wav", b"RIFF" + bytes(500), 1 << 40)
    found = enumerate_inputs(["holes.tar", "huge.tar"])
    problems = reasons(found)
    assert found.items == []
    bomb = "member expands 6391320 times (504 -> 3221225472 bytes): a decompression bomb?"
    assert problems["holes.tar::holes.wav"] == f"holes.tar::holes.wav: {bomb}"
    assert problems["huge.tar::huge.wav"] == "huge.tar::huge.wav: member is 1024.0 GiB, over the limit of 4.0 GiB"


def test_tgz_listing_stops_before_decompressing_a_bomb(tree: Path) -> None:
    """The header's size alone shows the bomb: refused before its member would be decompressed (this
    one is cut short, so decompressing it would fail with another reason)."""
    import gzip

    from benchmarks.bad_inputs import gnu_header

    write(tree / "bomb.tgz", gzip.compress(gnu_header("zeros.bin", tarfile.REGTYPE, 50 << 20) + bytes(4096)))
    found = enumerate_inputs(["bomb.tgz"], limits=ArchiveLimits(ratio_min_bytes=1 << 20))
    reason = reasons(found)["bomb.tgz"]
    assert reason.startswith("bomb.tgz: expands ") and reason.endswith("times: a decompression bomb?"), reason
