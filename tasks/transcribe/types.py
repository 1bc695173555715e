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

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

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
