"""Options and results of transcription: JSON-safe dataclasses, units in the names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SAMPLE_RATE = 16000
FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect; else a Whisper code such as "en"
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TranscribeOptions:
        return cls(**data)


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
