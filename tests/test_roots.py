"""Storage roots: a worker reads and writes only under the prefixes its settings allow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovbatch.errors import ConfigError, OutsideRootsError
from ovbatch.roots import Roots
from ovbatch.settings import Settings


def test_unset_roots_allow_everything() -> None:
    roots = Roots.parse("")
    assert not roots.restricted
    roots.check("file:///etc/passwd", "input")
    roots.check("s3://any/bucket", "output folder")


def test_s3_prefixes_match_on_segment_boundaries() -> None:
    roots = Roots.parse("s3://archive/calls/, s3://results")
    roots.check("s3://archive/calls/2024/a.wav", "input")
    roots.check("s3://results/batch/", "output folder")
    for url in ("s3://archive/callsign/a.wav", "s3://archive/other.wav", "s3://resultsx/a", "s3://archive/calls/../x"):
        with pytest.raises(OutsideRootsError, match="outside the storage roots|not allowed in S3 keys"):
            roots.check(url, "input")


def test_file_paths_are_compared_after_resolving_dots_and_symlinks(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_text("x")
    os.symlink(outside, inside / "link")
    roots = Roots.parse(inside.as_uri())
    roots.check((inside / "a" / "b.wav").as_uri(), "input")
    roots.check(inside.as_uri() + "/", "output folder")
    for url in (
        (outside / "key.txt").as_uri(),
        inside.as_uri() + "/../secret/key.txt",
        (inside / "link" / "key.txt").as_uri(),
        (tmp_path / "in-other").as_uri(),
    ):
        with pytest.raises(OutsideRootsError, match=r"input .* is outside the storage roots this worker allows"):
            roots.check(url, "input")


def test_registry_uploads_are_always_readable() -> None:
    Roots.parse("s3://archive/").check("registry:inputs/sha256/ab", "input")


def test_other_schemes_are_refused() -> None:
    roots = Roots.parse("s3://archive/")
    with pytest.raises(OutsideRootsError, match="not a file:// or s3:// URL"):
        roots.check("http://example.com/a.wav", "input")


def test_settings_read_roots_and_refuse_bad_ones(tmp_path: Path) -> None:
    s = Settings.from_env({"OVBATCH_ALLOWED_ROOTS": f"s3://a/b,{tmp_path.as_uri()}"}, cwd=tmp_path)
    assert s.allowed_roots.prefixes == ("s3://a/b/", tmp_path.resolve().as_uri() + "/")
    assert s.masked()["allowed_roots"] == f"s3://a/b/,{tmp_path.resolve().as_uri()}/"
    with pytest.raises(ConfigError, match="not a file:// or s3:// URL"):
        Settings.from_env({"OVBATCH_ALLOWED_ROOTS": "/data"}, cwd=tmp_path)
