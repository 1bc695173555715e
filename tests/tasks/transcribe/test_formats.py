"""Rendering transcripts: exact output, long timestamps, empty transcripts, srt/vtt that parse back."""

from __future__ import annotations

import json
import re

import pytest

from ovbatch.tasks.transcribe.formats import render, timestamp
from ovbatch.tasks.transcribe.types import FORMATS, Segment, Transcript, Word

META = {"model": "whisper-base@1", "audio_duration_s": 4.5, "processing_s": 0.812, "task": "transcribe"}


def small() -> Transcript:
    return Transcript(
        language="en",
        segments=[
            Segment(0.0, 2.5, " Hello world.", (Word(0.0, 1.0, " Hello"), Word(1.0, 2.5, " world."))),
            Segment(2.5, 4.25, " Fish & chips <b>?"),
        ],
        duration_s=4.5,
    )


def test_txt_exact() -> None:
    assert render(small(), "txt", META) == "Hello world.\nFish & chips <b>?\n"


def test_srt_exact() -> None:
    assert render(small(), "srt", META) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello world.\n\n2\n00:00:02,500 --> 00:00:04,250\nFish & chips <b>?\n\n"
    )


def test_vtt_exact() -> None:
    assert render(small(), "vtt", META) == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:02.500\nHello world.\n\n"
        "2\n00:00:02.500 --> 00:00:04.250\nFish &amp; chips &lt;b&gt;?\n"
    )


def test_json_exact() -> None:
    doc = json.loads(render(small(), "json", META))
    assert doc == {
        "language": "en",
        "text": "Hello world. Fish & chips <b>?",
        "segments": [
            {
                "start_s": 0.0,
                "end_s": 2.5,
                "text": " Hello world.",
                "words": [
                    {"start_s": 0.0, "end_s": 1.0, "text": " Hello"},
                    {"start_s": 1.0, "end_s": 2.5, "text": " world."},
                ],
            },
            {"start_s": 2.5, "end_s": 4.25, "text": " Fish & chips <b>?"},
        ],
        "model": "whisper-base@1",
        "audio_duration_s": 4.5,
        "processing_s": 0.812,
        "task": "transcribe",
    }


def test_json_keeps_unicode_and_rejects_meta_clashes() -> None:
    t = Transcript("de", [Segment(0.0, 1.0, " Grüße")])
    assert '"text": "Grüße"' in render(t, "json", {})
    with pytest.raises(ValueError, match="meta must not set language"):
        render(t, "json", {"language": "fr"})


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0, "00:00:00,000"),
        (59.9996, "00:01:00,000"),  # rounding carries into the minutes
        (3 * 3600 + 25 * 60 + 45.678, "03:25:45,678"),
        (125 * 3600 + 0.001, "125:00:00,001"),  # hours grow past 99
        (-0.2, "00:00:00,000"),
    ],
)
def test_timestamps(seconds: float, srt: str) -> None:
    assert timestamp(seconds, ",") == srt
    assert timestamp(seconds, ".") == srt.replace(",", ".")


def test_hours_long_transcript() -> None:
    t = Transcript("en", [Segment(36000.25, 36005.5, " late"), Segment(3 * 3600 + 1.5, 3 * 3600 + 2.0, " earlier")])
    assert "10:00:00,250 --> 10:00:05,500" in render(t, "srt", {})
    assert "03:00:01.500 --> 03:00:02.000" in render(t, "vtt", {})


def test_empty_transcript_gives_valid_empty_files() -> None:
    empty = Transcript("en", [], 3.0)
    assert render(empty, "txt", {}) == ""
    assert render(empty, "srt", {}) == ""
    assert render(empty, "vtt", {}) == "WEBVTT\n"
    assert json.loads(render(empty, "json", {"model": "m@1"})) == {
        "language": "en",
        "text": "",
        "segments": [],
        "model": "m@1",
    }
    assert parse_srt("") == [] and parse_vtt("WEBVTT\n") == []


def test_blank_segments_and_line_breaks_cannot_break_cues() -> None:
    t = Transcript(
        "en",
        [
            Segment(0.0, 1.0, " one"),
            Segment(1.0, 2.0, "  "),
            Segment(2.0, 1.5, " two\n\nlines"),
            Segment(3, 4, "a-->b"),
        ],
    )
    assert parse_srt(render(t, "srt", {})) == [
        (1, 0.0, 1.0, "one"),
        (2, 2.0, 2.0, "two lines"),  # an end before its start is clamped
        (3, 3.0, 4.0, "a->b"),
    ]
    assert [c[3] for c in parse_vtt(render(t, "vtt", {}))] == ["one", "two lines", "a--&gt;b"]


def test_srt_and_vtt_parse_back() -> None:
    segments = [Segment(i * 7.3 + 3600 * 2, i * 7.3 + 3600 * 2 + 5.1234, f" line {i}") for i in range(50)]
    t = Transcript("en", segments)
    for parsed in (parse_srt(render(t, "srt", {})), parse_vtt(render(t, "vtt", {}))):
        assert [c[0] for c in parsed] == list(range(1, 51))
        for (_, start, end, text), seg in zip(parsed, segments, strict=True):
            assert start == pytest.approx(seg.start_s, abs=5e-4)
            assert end == pytest.approx(seg.end_s, abs=5e-4)
            assert text == seg.text.strip()


def test_unknown_format() -> None:
    assert set(FORMATS) == {"txt", "srt", "vtt", "json"}
    with pytest.raises(ValueError, match="unknown output format 'docx'"):
        render(small(), "docx", {})


# --- tiny strict parsers -------------------------------------------------------------------------

_TIME = r"(\d{{2,}}):([0-5]\d):([0-5]\d)[{mark}](\d{{3}})"


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _parse_cues(blocks: list[str], mark: str) -> list[tuple[int, float, float, str]]:
    timing = re.compile(f"^{_TIME.format(mark=mark)} --> {_TIME.format(mark=mark)}$")
    cues = []
    for block in blocks:
        number, times, *text = block.split("\n")
        match = timing.match(times)
        assert number.isdigit() and match, f"bad cue {block!r}"
        assert len(text) == 1 and text[0] and "-->" not in text[0].replace("--&gt;", ""), f"bad cue text {block!r}"
        groups = match.groups()
        cues.append((int(number), _seconds(*groups[:4]), _seconds(*groups[4:]), text[0]))
    return cues


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    if not text:
        return []
    assert text.endswith("\n\n")
    return _parse_cues(text[:-2].split("\n\n"), ",")


def parse_vtt(text: str) -> list[tuple[int, float, float, str]]:
    assert text.startswith("WEBVTT\n") and text.endswith("\n")
    body = text[len("WEBVTT\n") :]
    if not body:
        return []
    assert body.startswith("\n"), "a blank line must follow the header"
    return _parse_cues(body[1:-1].split("\n\n"), ".")
