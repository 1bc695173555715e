"""Options and results of transcription: JSON-safe dataclasses, units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

SAMPLE_RATE = 16000
Format = Literal["txt", "srt", "vtt", "json"]
FORMATS: tuple[Format, ...] = ("txt", "srt", "vtt", "json")


class TranscribeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # None: detect; else a Whisper code such as "en" (the engine checks it against the model's languages)
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=8, pattern="^[a-z]+$")] | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    # False: a file's pieces (cut at pauses, at most 30 s) are decoded as text without Whisper's
    # timestamp tokens, each piece one segment timed by its audible span, as faster-whisper's batched
    # pipeline does by default: fewer tokens and decoder steps (1.27x on long files in bf16, the same
    # errors; benchmarks/RESULTS.md). Short files packed several to a window keep timestamps (their
    # pack is split by them). The CLI turns it off when txt is the only output.
    timestamps: bool = True

    def __post_init__(self) -> None:
        if self.word_timestamps and not self.timestamps:
            raise ValueError("word timestamps need segment timestamps: drop --no-timestamps or --word-timestamps")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(self)
        if self.timestamps:  # the default is left out: job ids made before the option existed stay the same
            del data["timestamps"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TranscribeOptions:
        return msgspec.convert(data, cls, strict=True)


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str
    probability: float | None = None  # mean of its tokens' probabilities (teacher forced)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass
class Transcript:
    language: str
    segments: list[Segment] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()
