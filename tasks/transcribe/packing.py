"""Short files share one 30 s window: their audio is laid end to end with silence between them,
decoded once, and the window's segments are handed back to the file each came from.

Whisper's encoder costs the same for a 3 s clip as for 30 s (every window is 30 s), so a batch of
short clips spends most of its time encoding padding. A pack of clips costs one encoder window and
one decoder row instead of one per clip. Only files that agree on everything the decoder is told
(language given, not detected; task; word timestamps) are packed together. Where a segment runs
across the silence between two files, its words go to the file they were spoken in (by their
timestamps when the file asked for words, else the whole segment to the file it overlaps most).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ovbatch.tasks.transcribe.types import SAMPLE_RATE, Segment, Word


@dataclass(frozen=True)
class Member:
    """One file's place in a pack: its first sample and its length, in samples."""

    start: int
    length: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return (self.start + self.length) / SAMPLE_RATE


def lay_out(lengths: list[int], gap: int) -> list[Member]:
    """Where each of ``lengths`` goes in a pack: one after another, ``gap`` samples apart."""
    members, at = [], 0
    for n in lengths:
        members.append(Member(at, n))
        at += n + gap
    return members


def pack_audio(audios: list[np.ndarray], gap: int) -> tuple[np.ndarray, list[Member]]:
    """The pack's audio (silence between the files, none after the last) and each file's place."""
    members = lay_out([len(a) for a in audios], gap)
    out = np.zeros(members[-1].start + members[-1].length if members else 0, dtype=np.float32)
    for member, audio in zip(members, audios, strict=True):
        out[member.start : member.start + member.length] = audio
    return out, members


def _owner(start_s: float, end_s: float, members: list[Member]) -> int:
    """The member a stretch of the pack belongs to: the one it overlaps most, else the nearest."""
    overlaps = [min(end_s, m.end_s) - max(start_s, m.start_s) for m in members]
    best = int(np.argmax(overlaps))
    if overlaps[best] > 0:
        return best
    middle = (start_s + end_s) / 2
    return min(range(len(members)), key=lambda i: abs(middle - (members[i].start_s + members[i].end_s) / 2))


def _shifted(segment: Segment, member: Member) -> Segment:
    """A segment in the pack's time moved to its file's time, kept inside the file."""
    end = member.length / SAMPLE_RATE

    def at(t: float) -> float:
        return round(min(max(t - member.start_s, 0.0), end), 3)

    words = tuple(replace(w, start_s=at(w.start_s), end_s=at(w.end_s)) for w in segment.words)
    return replace(segment, start_s=at(segment.start_s), end_s=at(segment.end_s), words=words)


# A file whose loudest sample stays this far below full scale (-40 dBFS) holds no speech worth
# a shared window: digital silence, a recorder's noise floor. Packed, it would get no text and so
# make its whole pack doubtful (``doubtful``), costing every member a second decode; alone it costs
# one window, as it did before packing. Speech, even recorded quietly, peaks well above it.
QUIET_PEAK = 0.01


def quiet(audio: np.ndarray) -> bool:
    """Too quiet to share a window (``QUIET_PEAK``); an empty file too."""
    return len(audio) == 0 or float(np.max(np.abs(audio))) < QUIET_PEAK


# A segment without word times that reaches this far into two files cannot be given to either
# with confidence: Whisper's timestamps drift by a few tenths of a second, never by a whole file.
AMBIGUOUS_S = 0.5


def doubtful(segments: list[Segment], members: list[Member], parts: list[list[Segment]]) -> str | None:
    """Why a pack's transcript cannot be trusted to its files (None: it can).

    Whisper sometimes skips the speech of one file in a pack and stamps the next file's words with
    times in the skipped file's place; the words would go to the wrong file. Either a segment then
    spans two files, or a file is left without text: seen on real clips in about one pack in 40.
    The engine decodes such a pack's files again, each alone (``WhisperEngine._unpack``)."""
    for segment in segments:
        if segment.words or not segment.text.strip():
            continue
        overlaps = sorted(min(segment.end_s, m.end_s) - max(segment.start_s, m.start_s) for m in members)
        if len(overlaps) > 1 and overlaps[-2] > AMBIGUOUS_S:
            return f"a segment ({segment.start_s:.1f}-{segment.end_s:.1f} s) spans two files"
    for i, part in enumerate(parts):
        if not "".join(s.text for s in part).strip():
            return f"file {i + 1} of {len(parts)} got no text"
    return None


def split_segments(segments: list[Segment], members: list[Member]) -> list[list[Segment]]:
    """The pack's segments (in pack time, in order) handed to its members, in each member's time.

    A segment with words is cut between its words where they belong to different members (each
    part's text is its words' text, its times its words' span); one without words goes whole to
    the member it overlaps most."""
    out: list[list[Segment]] = [[] for _ in members]
    for segment in segments:
        if not segment.words:
            i = _owner(segment.start_s, segment.end_s, members)
            out[i].append(_shifted(segment, members[i]))
            continue
        runs: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            i = _owner(word.start_s, word.end_s, members)
            if runs and runs[-1][0] == i:
                runs[-1][1].append(word)
            else:
                runs.append((i, [word]))
        if len(runs) == 1:
            i = runs[0][0]
            out[i].append(_shifted(segment, members[i]))
            continue
        for i, words in runs:
            part = Segment(words[0].start_s, words[-1].end_s, "".join(w.text for w in words), tuple(words))
            out[i].append(_shifted(part, members[i]))
    return out
