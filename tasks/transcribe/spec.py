"""The transcription job message: JSON-safe, references only (storage URLs, name@version), never
audio, model bytes or keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ovbatch.tasks.transcribe.types import FORMATS, TranscribeOptions

UPLOADED = "registry:"  # input_url prefix: content-addressed upload in the registry's storage


@dataclass(frozen=True)
class TranscribeJob:
    batch_id: str
    job_id: str
    input_url: str  # "registry:inputs/sha256/..", "s3://bucket/key" or "file:///abs/path"
    input_sha256: str
    display: str  # what the user named, for messages
    relpath: str  # the path outputs mirror under out_url
    model: str  # name@version, resolved at submission
    device: str
    out_url: str
    formats: tuple[str, ...] = FORMATS
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    max_audio_duration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["formats"] = list(self.formats)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TranscribeJob:
        data = dict(data)
        data["formats"] = tuple(data["formats"])
        data["options"] = TranscribeOptions.from_json(data["options"])
        return cls(**data)

    def output_key(self, fmt: str) -> str:
        """``calls/2024/a.wav`` -> ``calls/2024/a.srt``."""
        return str(PurePosixPath(self.relpath).with_suffix(f".{fmt}"))

    @property
    def marker_key(self) -> str:
        """Written after every output: its presence means this job is finished."""
        return f".ovbatch/jobs/{self.job_id}.json"


def job_id_for(
    input_sha256: str, model: str, options: TranscribeOptions, formats: tuple[str, ...], out_url: str, relpath: str
) -> str:
    """Same audio, model version, options and destination: same id, so a resubmission skips it."""
    material = [input_sha256, model, options.to_json(), sorted(formats), out_url.rstrip("/"), relpath]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]
