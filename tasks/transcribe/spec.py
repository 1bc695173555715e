"""The transcription job message: JSON-safe, references only (storage URLs, name@version), never
audio, model bytes or keys. Validated strictly on both sides (``JobSpec.from_json``)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from ovbatch.inputs import UPLOADED as UPLOADED  # noqa: F401  (re-exported for submit)
from ovbatch.jobs import JobSpec, job_id_of
from ovbatch.tasks.transcribe.types import FORMATS, Format, TranscribeOptions


class TranscribeJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input_url: str  # "registry:inputs/sha256/..", "s3://bucket/key" or "file:///abs/path"
    input_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    formats: Annotated[tuple[Format, ...], msgspec.Meta(min_length=1)] = FORMATS
    options: TranscribeOptions = msgspec.field(default_factory=TranscribeOptions)
    max_audio_duration_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # another input of the batch has the same name up to its extension (a.wav, a.flac), or the name
    # is one of the batch's own (batch-<id>): outputs keep the extension, a.wav.txt, never a shared a.txt
    keep_extension: bool = False

    def output_keys(self) -> list[str]:
        return [self.output_key(fmt) for fmt in self.formats]

    def output_key(self, fmt: str) -> str:
        """``calls/2024/a.wav`` -> ``calls/2024/a.srt`` (``a.wav.srt`` with ``keep_extension``)."""
        if self.keep_extension:
            return f"{self.relpath}.{fmt}"
        return str(PurePosixPath(self.relpath).with_suffix(f".{fmt}"))


def job_id_for(
    input_sha256: str,
    model: str,
    options: TranscribeOptions,
    formats: tuple[str, ...],
    out_url: str,
    relpath: str,
    keep_extension: bool = False,
) -> str:
    """Same audio, model version, options and destination: same id, so a resubmission skips it."""
    material = [input_sha256, model, options.to_json(), sorted(formats), out_url.rstrip("/"), relpath]
    if keep_extension:  # other output names: another job (ids of the usual naming stay as they were)
        material.append("keep-extension")
    return job_id_of(material)
