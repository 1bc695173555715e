"""The transcription job message: JSON-safe, references only (storage URLs, name@version), never
audio, model bytes or keys. Validated strictly on both sides (``JobSpec.from_json``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from ovbatch.inputs import UPLOADED as UPLOADED  # noqa: F401  (re-exported for submit)
from ovbatch.jobs import JobSpec
from ovbatch.tasks.transcribe.types import FORMATS, Format, TranscribeOptions


class TranscribeJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input_url: str  # "registry:inputs/sha256/..", "s3://bucket/key" or "file:///abs/path"
    input_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    formats: Annotated[tuple[Format, ...], msgspec.Meta(min_length=1)] = FORMATS
    options: TranscribeOptions = msgspec.field(default_factory=TranscribeOptions)
    max_audio_duration_s: Annotated[float, msgspec.Meta(gt=0)] | None = None

    def output_key(self, fmt: str) -> str:
        """``calls/2024/a.wav`` -> ``calls/2024/a.srt``."""
        return str(PurePosixPath(self.relpath).with_suffix(f".{fmt}"))


def job_id_for(
    input_sha256: str, model: str, options: TranscribeOptions, formats: tuple[str, ...], out_url: str, relpath: str
) -> str:
    """Same audio, model version, options and destination: same id, so a resubmission skips it."""
    material = [input_sha256, model, options.to_json(), sorted(formats), out_url.rstrip("/"), relpath]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]
