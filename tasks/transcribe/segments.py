"""One decoded window -> timed segments and how far to seek (openai-whisper's long-form rules)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ovbatch.tasks.transcribe.tokens import TIME_PRECISION_S

INPUT_STRIDE = 2  # mel frames per timestamp step (0.02 s / 10 ms hop)


@dataclass(frozen=True)
class RawSegment:
    start_s: float
    end_s: float
    tokens: list[int]


@dataclass(frozen=True)
class WindowResult:
    segments: list[RawSegment]
    advance_frames: int  # how far the next window starts after this one


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def split_window(tokens: list[int], timestamp_begin: int, offset_s: float, window_frames: int) -> WindowResult:
    """Cut the sampled tokens of a window at its timestamp pairs (times relative to ``offset_s``).

    A window whose last segment is complete (it ends with a lone timestamp, or has no pairs) is
    consumed whole; otherwise the next window starts at the last closed timestamp, so the cut-off
    speech is decoded again with its context.
    """
    is_ts = [t >= timestamp_begin for t in tokens]
    window_s = window_frames * 0.01

    def at(token: int) -> float:
        return offset_s + min((token - timestamp_begin) * TIME_PRECISION_S, window_s)

    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:
        stamps = [t for t in tokens if t >= timestamp_begin]
        end = at(stamps[-1]) if stamps and stamps[-1] != timestamp_begin else offset_s + window_s
        return WindowResult([RawSegment(offset_s, end, tokens)], window_frames)
    if single_ending:
        cuts.append(len(tokens))
    segments, last = [], 0
    for cut in cuts:
        part = tokens[last:cut]
        segments.append(RawSegment(at(part[0]), at(part[-1]), part))
        last = cut
    if single_ending:
        return WindowResult(segments, window_frames)
    advance = (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
    return WindowResult(segments, advance if 0 < advance <= window_frames else window_frames)
