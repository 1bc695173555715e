"""The inputs of a batch: files, folders, globs, zip/tar archives, ``s3://`` prefixes and manifests.

``enumerate_inputs(sources)`` turns what the user named into ``InputItem``s (opened lazily, read as
streams) and ``InputProblem``s (a missing path, a glob that matched nothing, an unsafe archive member,
a bad manifest line): a bad input never stops the others from being listed.

What each source gives, and the ``relpath`` that outputs mirror:

* a file: itself, whatever its type (it fails later, alone, if it is not audio); relpath = its name.
* a folder: its audio files, recursively; relpath = the path inside the folder (``calls/2024/a.wav``).
* a glob (``data/*/a.wav``, ``**`` allowed): the audio files, folders and archives it matches;
  relpath = the path below the glob's literal part (``data``).
* ``x.zip``, ``x.tar``, ``x.tar.gz``/``.tgz`` (also ``.tar.bz2``, ``.tar.xz``): the audio members,
  streamed from the archive, never extracted; relpath = ``x.zip/<member path>`` (the archive's full
  name, so ``talks.zip`` and a folder ``talks`` cannot collide); display = ``x.zip::<member path>``.
* ``s3://bucket/prefix``: the audio objects under the prefix; relpath = the key below the prefix;
  display = the object's URL. ``s3://bucket/key`` naming one object gives that object.
* ``@list.txt``: a manifest, one source per line (any of the above, ``@`` included); blank lines
  and lines starting with ``#`` are ignored; relative paths are relative to the manifest's folder,
  and a relative file path keeps that path as its relpath. Only the ``@`` marks a manifest: a
  ``.txt`` named without it is an ordinary file. A manifest is at most ``MAX_MANIFEST_BYTES``, a line
  at most ``MAX_LINE_CHARS``; past ``MAX_MANIFEST_PROBLEMS`` bad lines, the rest are counted in one
  problem for the manifest (its good lines are still listed).

Folders, archives and prefixes give only files with an audio extension (``AUDIO_EXTENSIONS``) and
skip macOS ``._*`` / ``__MACOSX`` companions. A source listed twice is listed once; two sources
with the same relpath are a problem for the second. Archive members are checked before anything is
read: a member path that is absolute or climbs out with ``..``, a member over
``max_member_bytes``, or one that decompresses more than ``max_ratio`` times its stored size is a
problem for that member alone; an archive whose audio adds up to more than ``max_total_bytes`` (or,
for a compressed tar, whose listing alone would decompress more) is a problem for the archive.
A file or object whose size is known and over ``max_member_bytes`` is a problem too; a job refuses one
before reading it (``open_input``), since an S3 object is copied whole to a temp file to be decoded.

Only regular files are read: a named pipe (reading it would wait for ever), a device (``/dev/zero``
never ends), a socket or a broken link is a problem, whether named, found in a folder or reached
through a link; files are opened without blocking and checked again once open. A link found in a
folder that leads out of it is a problem (name its target to include it). A name that is not UTF-8
is a problem (outputs, records and S3 keys are named after it); problems show its bytes as ``\\xe9``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import unquote, urlsplit

from ovbatch.archives import (
    ARCHIVE_ERRORS,
    AUDIO_EXTENSIONS,
    ArchiveLimits,
    is_audio,
    list_tar,
    list_zip,
    safe_relpath,
    size_text,
)
from ovbatch.errors import BadInputError, OvbatchError
from ovbatch.storage import ObjectStore, open_store

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MANIFEST_MARK = "@"
UPLOADED = "registry:"  # a job's input_url prefix: a content-addressed upload in the registry's storage
DIGEST_CHUNK_BYTES = 1 << 20
# The largest single input a job reads: an S3 object is copied whole to a temp file before it is decoded
# (decoders seek), so a bigger one is refused before a byte of it is read. An archive member's limit.
MAX_INPUT_BYTES = ArchiveLimits.max_member_bytes
MAX_MANIFEST_BYTES = 64 << 20  # ~500,000 S3 URLs
MAX_LINE_CHARS = 4096  # PATH_MAX; an S3 URL is shorter
MAX_MANIFEST_PROBLEMS = 100  # listed one by one per manifest; the rest are counted


@dataclass(frozen=True)
class InputItem:
    relpath: str  # the path outputs mirror, always a safe relative posix path
    display: str  # what to show the user: the path, ``x.zip::member`` or the object's URL
    open: Callable[[], BinaryIO]  # a fresh stream over the bytes, each call
    size_bytes: int | None  # None where listing does not tell (S3)


@dataclass(frozen=True)
class InputProblem:
    display: str
    reason: str


class Inputs(NamedTuple):
    items: list[InputItem]
    problems: list[InputProblem]


def enumerate_inputs(
    sources: Iterable[str], *, s3_endpoint_url: str | None = None, limits: ArchiveLimits | None = None
) -> Inputs:
    """Every item and every problem in ``sources``, in order; see the module docstring."""
    collector = _Collector(limits or ArchiveLimits(), s3_endpoint_url)
    for source in sources:
        collector.add(source, Path.cwd(), manifest=None)
    return Inputs(collector.items, collector.problems)


def content_digest(stream: BinaryIO) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of the rest of ``stream``, read 1 MiB at a time."""
    sha = hashlib.sha256()
    size = 0
    while chunk := stream.read(DIGEST_CHUNK_BYTES):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def content_key(digest: str) -> str:
    return f"inputs/sha256/{digest[:2]}/{digest}"


def upload_content_addressed(store: ObjectStore, item: InputItem) -> str:
    """Store the item's bytes once under ``inputs/sha256/<aa>/<digest>``; return that key.

    Reads the item twice (digest, then upload) so nothing is spooled; the upload is skipped when
    the key exists, and aborted, leaving nothing behind, if the bytes changed in between.
    """
    with item.open() as stream:
        digest, size = content_digest(stream)
    key = content_key(digest)
    if not store.exists(key):
        with item.open() as stream:
            store.put_stream(key, _verified_chunks(stream, digest, size, item.display))
    return key


def _verified_chunks(stream: BinaryIO, digest: str, size: int, display: str) -> Iterator[bytes]:
    sha = hashlib.sha256()
    seen = 0
    while chunk := stream.read(DIGEST_CHUNK_BYTES):
        sha.update(chunk)
        seen += len(chunk)
        yield chunk
    if (sha.hexdigest(), seen) != (digest, size):  # raising before the end aborts the atomic write
        raise OvbatchError(f"{display} changed while it was being uploaded; submit it again")


def _open_file(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file: opened without blocking (a named pipe put
    there since it was listed would otherwise wait for a writer for ever), then checked."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        special = _special_kind(os.fstat(fd).st_mode)
        if special:
            raise BadInputError(f"{path}: {special}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _special_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def regular_file_size(path: Path, display: str, folder: Path | None = None) -> int:
    """The size of ``path`` if it is a regular file (links followed), else a ``BadInputError`` that says
    what it is. With ``folder``, a link that leads out of that folder is refused too."""
    target = os.readlink(path) if path.is_symlink() else None
    link = f" (a link to {target})" if target else ""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadInputError(f"{display}: {f'a broken link to {target}' if target else 'no such file'}") from None
    special = _special_kind(info.st_mode)
    if special:
        raise BadInputError(f"{display}: {special}{link}, not a regular file; only regular files are read")
    if folder is not None and link and not path.resolve().is_relative_to(folder.resolve()):
        raise BadInputError(
            f"{display}: a link to {path.resolve()}, outside the folder; links out of a folder are not "
            "followed (name the file itself to include it)"
        )
    return info.st_size


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (surrogate escapes) written as ``\\xe9``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the collector -----------------------------------------------------------------------------


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


@dataclass
class _Collector:
    limits: ArchiveLimits
    s3_endpoint_url: str | None
    items: list[InputItem] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    _sources: set[str] = field(default_factory=set)  # identities listed so far
    _relpaths: dict[str, str] = field(default_factory=dict)  # relpath -> display of its owner
    _manifests: list[Path] = field(default_factory=list)  # open manifests, to refuse cycles

    def problem(self, display: str, reason: str) -> None:
        self.problems.append(InputProblem(printable(display), printable(reason)))

    @contextlib.contextmanager
    def guard(self, display: str, where: str = "") -> Iterator[None]:
        """Whatever goes wrong inside becomes a problem for ``display``; the enumeration goes on."""
        try:
            yield
        except (OvbatchError, *ARCHIVE_ERRORS) as exc:
            reason = str(exc) if isinstance(exc, OvbatchError) else f"{display}: cannot read it ({exc})"
            self.problem(display, f"{reason}{where}")
        except ValueError as exc:  # a NUL byte or unencodable character in a path
            self.problem(display, f"{display}: not a usable path ({exc}){where}")

    def item(self, identity: str, relpath: str, display: str, opener: Callable[[], BinaryIO], size: int | None) -> None:
        if identity in self._sources:
            return
        if not (_is_utf8(relpath) and _is_utf8(display)):
            shown = printable(display)
            self.problem(shown, f"{shown}: the file name is not UTF-8 text; rename it (outputs are named after it)")
            return
        if size is not None and size > self.limits.max_member_bytes:
            limit = size_text(self.limits.max_member_bytes)
            self.problem(display, f"{display}: {size_text(size)}, over the limit of {limit} for one input")
            return
        owner = self._relpaths.get(relpath)
        if owner is not None:
            self.problem(display, f"{display}: its output path {relpath} is already taken by {owner}; rename one")
            return
        self._sources.add(identity)
        self._relpaths[relpath] = display
        self.items.append(InputItem(relpath, display, opener, size))

    def add(self, source: str, base: Path, manifest: str | None) -> None:
        """One source: from the command line (``manifest`` None) or a manifest line."""
        where = f" ({manifest})" if manifest else ""
        with self.guard(source, where):
            if source.startswith(MANIFEST_MARK):
                self.add_manifest(base / Path(source[1:]).expanduser(), source[1:])
            elif "://" in source:
                self.add_url(source)
            else:
                self.add_path(source, base, keep_relpath=manifest is not None)

    def add_path(self, source: str, base: Path, keep_relpath: bool) -> None:
        path = base / Path(source).expanduser()
        if path.is_dir():
            self.add_dir(path, source, "")
        elif path.is_file():
            name = safe_relpath(source) if keep_relpath and not Path(source).is_absolute() else None
            self.add_file(path, source, name or path.name)
        elif _has_magic(source):
            self.add_glob(source, base)
        elif path.exists() or path.is_symlink():
            regular_file_size(path, source)  # raises: says what it is instead
        else:
            raise BadInputError(f"{source}: no such file or folder")

    def add_file(self, path: Path, display: str, relpath: str) -> None:
        if _is_archive(path.name):
            self.add_archive(path, display, relpath)
            return
        size = regular_file_size(path, display)
        self.item(str(path.resolve()), relpath, display, partial(_open_file, path), size)

    def add_dir(self, top: Path, display: str, rel_prefix: str, report_empty: bool = True) -> None:
        found = 0
        for path, rel in _walk_audio(top, lambda exc: self.problem(display, f"cannot list: {exc}")):
            found += 1
            shown = os.path.join(display, rel)
            with self.guard(shown):
                size = regular_file_size(path, shown, folder=top)
                self.item(str(path.resolve()), rel_prefix + rel, shown, partial(_open_file, path), size)
        if not found and report_empty:
            self.problem(display, f"{display}: no audio files in this folder (looked for {_extensions()})")

    def add_glob(self, pattern: str, base: Path) -> None:
        literal = _literal_base(pattern)
        root = base / literal
        matches = sorted(glob.glob(str(base / pattern), recursive=True))
        if not matches:
            raise BadInputError(f"{pattern}: matched nothing")
        before = len(self.items)
        for match in matches:
            path = Path(match)
            rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
            if "__MACOSX" in Path(rel).parts:
                continue
            display = os.path.join(literal, rel) if literal and rel != "." else literal or rel
            with self.guard(display):
                if path.is_dir():  # a folder matched by ``**`` alone is no problem when empty
                    self.add_dir(path, display, f"{rel}/" if rel != "." else "", report_empty=False)
                elif _is_archive(path.name):
                    self.add_archive(path, display, rel)
                elif is_audio(path.name):
                    self.add_file(path, display, rel)
        if len(self.items) == before:
            self.problem(pattern, f"{pattern}: matched {len(matches)} paths but no audio files ({_extensions()})")

    def add_manifest(self, path: Path, display: str) -> None:
        shown = f"@{display}"
        resolved = path.resolve()
        if resolved in self._manifests:
            raise BadInputError(f"{shown}: manifest includes itself")
        if not path.exists() and not path.is_symlink():
            raise BadInputError(f"{shown}: no such manifest file")
        text = _read_manifest(path, shown)
        self._manifests.append(resolved)
        listed = len(self.problems)
        hidden, first_hidden, last_hidden = 0, 0, 0
        try:
            for number, line in enumerate(text.splitlines(), 1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                before = len(self.problems)
                where = f"{shown} line {number}"
                if len(entry) > MAX_LINE_CHARS:
                    self.problem(
                        where, f"{where}: {len(entry):,} characters long; a path or URL has at most {MAX_LINE_CHARS}"
                    )
                else:
                    self.add(entry, resolved.parent, manifest=where)
                if len(self.problems) > before and before - listed >= MAX_MANIFEST_PROBLEMS:
                    del self.problems[before:]  # counted below instead: a batch record stays readable
                    hidden, last_hidden = hidden + 1, number
                    first_hidden = first_hidden or number
        finally:
            self._manifests.pop()
        if hidden:
            self.problem(
                shown,
                f"{shown}: {hidden:,} more lines (from line {first_hidden:,} to {last_hidden:,}) name nothing that "
                f"can be read; only the first {MAX_MANIFEST_PROBLEMS} are listed one by one",
            )

    def add_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            self.add_s3(url)
        elif parts.scheme == "file" and parts.netloc in ("", "localhost"):
            self.add_path(unquote(parts.path), Path("/"), keep_relpath=False)
        else:
            raise BadInputError(f"{url}: unsupported URL; use a local path, file:///path or s3://bucket/prefix")

    def add_s3(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.netloc:
            raise BadInputError(f"{url}: name a bucket, as in s3://bucket/prefix")
        prefix = parts.path.strip("/")
        store = open_store(f"s3://{parts.netloc}/{prefix}", s3_endpoint_url=self.s3_endpoint_url)
        keys = list(store.list())
        if not keys and prefix:
            self.add_s3_object(parts.netloc, prefix)
            return
        audio = [key for key in keys if is_audio(key)]
        if not audio:
            found = f"{len(keys)} objects but no audio files" if keys else "nothing"
            raise BadInputError(f"{url}: found {found} under this prefix (looked for {_extensions()})")
        for key in audio:
            display = store.url + key
            relpath = safe_relpath(key)
            if relpath is None:
                self.problem(display, f"{display}: the key is not a safe relative path ('..' parts)")
                continue
            self.item(display, relpath, display, partial(store.open, key), None)

    def add_s3_object(self, bucket: str, key: str) -> None:
        parent, _, name = key.rpartition("/")
        store = open_store(f"s3://{bucket}/{parent}", s3_endpoint_url=self.s3_endpoint_url)
        display = store.url + name
        if not store.exists(name):
            raise BadInputError(f"{display}: no such object, and no objects under it as a prefix")
        if _is_archive(name):
            raise BadInputError(f"{display}: archives are read from local disk only; download it first")
        self.item(display, name, display, partial(store.open, name), store.size(name))

    def add_archive(self, path: Path, display: str, relname: str) -> None:
        regular_file_size(path, display)  # opening a named pipe would wait for ever
        members = list_zip(path, self.limits) if path.name.lower().endswith(".zip") else list_tar(path, self.limits)
        identity = str(path.resolve())
        for member in members:
            member_display = f"{display}::{member.name}"
            if member.open is None:
                self.problem(member_display, f"{member_display}: {member.problem}")
            else:
                relpath = f"{relname}/{member.name}"
                self.item(f"{identity}::{member.name}", relpath, member_display, member.open, member.size)


# --- helpers for paths -------------------------------------------------------------------------


def _read_manifest(path: Path, shown: str) -> str:
    size = regular_file_size(path, shown)
    over = f"{shown}: over the limit of {size_text(MAX_MANIFEST_BYTES)} for a manifest; split it into several"
    if size > MAX_MANIFEST_BYTES:
        raise BadInputError(over.replace(": over", f": {size_text(size)}, over", 1))
    with _open_file(path) as stream:
        data = stream.read(MAX_MANIFEST_BYTES + 1)  # bounded even where the size lied (/proc)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadInputError(over)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{shown}: manifest is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _extensions() -> str:
    return ", ".join(sorted(AUDIO_EXTENSIONS))


def _literal_base(pattern: str) -> str:
    """The leading folders of a glob pattern that hold no wildcard: ``data/*/a.wav`` -> ``data``."""
    parts = Path(pattern).parts
    literal: list[str] = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        literal.append(part)
    return str(Path(*literal)) if literal else ""


def _walk_audio(top: Path, on_error: Callable[[OSError], None]) -> Iterator[tuple[Path, str]]:
    """(path, posix path relative to ``top``) of each audio file below ``top``, sorted."""
    for folder, dirs, files in os.walk(top, onerror=on_error):
        dirs.sort()
        dirs[:] = [d for d in dirs if d != "__MACOSX"]
        for name in sorted(files):
            if is_audio(name):
                path = Path(folder) / name
                yield path, path.relative_to(top).as_posix()


def open_input(
    registry_store: ObjectStore, url: str, s3_endpoint_url: str | None = None, *, max_bytes: int = MAX_INPUT_BYTES
) -> BinaryIO:
    """A job's input stream: an upload in the registry's storage, or an object where it lies.

    Its size comes first (HEAD on S3, stat on disk): one over ``max_bytes`` is a ``BadInputError``
    before any of its bytes is read or copied to a temp file."""
    from ovbatch.storage import split_url

    if url.startswith(UPLOADED):
        store, key = registry_store, url[len(UPLOADED) :]
    else:
        root, key = split_url(url)
        store = open_store(root, s3_endpoint_url=s3_endpoint_url)
    size = store.size(key)
    if size > max_bytes:
        raise BadInputError(
            f"{url}: {size_text(size)}, over the limit of {size_text(max_bytes)} for one input; split it into parts"
        )
    return store.open(key)
