"""A ``Transcript`` as txt, srt, vtt or json text.

* txt: one segment per line.
* srt: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` (hours grow past 99 rather than wrap); a
  ``-->`` in the text becomes ``->`` so no parser takes it for a timing line.
* vtt: ``WEBVTT`` header, numbered cues, ``HH:MM:SS.mmm``; ``&``, ``<`` and ``>`` escaped.
* json: ``{"language", "text", "segments": [{"start_s", "end_s", "text", "words"?}], **meta}``; with word
  timestamps each segment has ``words: [{"start_s", "end_s", "text", "probability"}]``.

An empty transcript gives valid empty files (``""``, ``"WEBVTT\\n"``, ``segments: []``). Segments with
no text are left out of srt and vtt, whose parsers take an empty cue for the end of the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ovbatch.tasks.transcribe.types import FORMATS, Segment, Transcript, Word

_RESERVED = ("language", "text", "segments")


def render(transcript: Transcript, fmt: str, meta: dict[str, Any]) -> str:
    """The transcript as ``fmt`` (one of ``FORMATS``); ``meta`` goes into json only."""
    renderers: dict[str, Callable[[], str]] = {
        "txt": lambda: render_txt(transcript),
        "srt": lambda: render_srt(transcript),
        "vtt": lambda: render_vtt(transcript),
        "json": lambda: render_json(transcript, meta),
    }
    if fmt not in renderers:
        raise ValueError(f"unknown output format {fmt!r}: choose from {', '.join(FORMATS)}")
    return renderers[fmt]()


def render_txt(transcript: Transcript) -> str:
    lines = [_one_line(s.text) for s in transcript.segments]
    return "".join(f"{line}\n" for line in lines if line)


def render_srt(transcript: Transcript) -> str:
    cues = [(n, a, b, text.replace("-->", "->")) for n, a, b, text in _cues(transcript.segments)]
    return "".join(_cue(*cue, ",") + "\n" for cue in cues)


def render_vtt(transcript: Transcript) -> str:
    cues = [(n, a, b, _vtt_escape(text)) for n, a, b, text in _cues(transcript.segments)]
    return "WEBVTT\n" + "".join("\n" + _cue(*cue, ".") for cue in cues)


def render_json(transcript: Transcript, meta: dict[str, Any]) -> str:
    clash = [key for key in _RESERVED if key in meta]
    if clash:
        raise ValueError(f"meta must not set {', '.join(clash)}: they come from the transcript")
    doc = {
        "language": transcript.language,
        "text": transcript.text,
        "segments": [_segment_json(s) for s in transcript.segments],
        **meta,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def timestamp(seconds: float, decimal_mark: str) -> str:
    """``HH:MM:SS<mark>mmm``, rounded to the millisecond; negative times are 0."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{ms:03d}"


def _cues(segments: list[Segment]) -> list[tuple[int, float, float, str]]:
    """Numbered (from 1) cues of the segments that have text; an end never before its start."""
    texts = [(s, _one_line(s.text)) for s in segments]
    kept = [(s, text) for s, text in texts if text]
    return [(n, s.start_s, max(s.start_s, s.end_s), text) for n, (s, text) in enumerate(kept, 1)]


def _cue(number: int, start_s: float, end_s: float, text: str, decimal_mark: str) -> str:
    return f"{number}\n{timestamp(start_s, decimal_mark)} --> {timestamp(end_s, decimal_mark)}\n{text}\n"


def _one_line(text: str) -> str:
    """Text on one line: a blank line would end an srt or vtt cue early."""
    return " ".join(text.split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _segment_json(segment: Segment) -> dict[str, Any]:
    doc = _span_json(segment)
    if segment.words:
        doc["words"] = [_word_json(w) for w in segment.words]
    return doc


def _word_json(word: Word) -> dict[str, Any]:
    doc = _span_json(word)
    if word.probability is not None:
        doc["probability"] = round(word.probability, 4)
    return doc


def _span_json(span: Segment | Word) -> dict[str, Any]:
    return {"start_s": round(span.start_s, 3), "end_s": round(span.end_s, 3), "text": span.text}
