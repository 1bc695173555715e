"""The quantization job message: one (model version, recipe, options) with its datasets, by reference.

Validated strictly on both sides (``JobSpec.from_json``). Datasets travel as content-addressed
uploads (``registry:inputs/sha256/..``) of a small JSON list of items (see ``datasets.py``), so the
job id and the new version's lineage name exactly the audio, prompts or tensors used.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ovbatch.jobs import JobSpec, job_id_of

Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
ParamValue = bool | int | float | str


class DatasetRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str  # "registry:inputs/sha256/.." (the dataset JSON)
    sha256: Digest
    items: Annotated[int, msgspec.Meta(ge=1)]
    references: bool  # every item has a reference (transcript) or none has


class QuantizeJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_digest: Digest  # the parent version's content (its manifest's file digests)
    model_kind: str  # the parent's manifest kind: whisper, lcm, stable-diffusion, generic
    recipe: Annotated[str, msgspec.Meta(pattern="^[a-z0-9-]{1,40}$")]
    params: dict[str, ParamValue] = {}  # the recipe's options, validated against its defaults
    calibration: DatasetRef | None = None
    evaluation: DatasetRef | None = None
    # largest accepted loss in the gate's metric units (WER points, PSNR dB...); None: the recipe's default
    max_drop: Annotated[float, msgspec.Meta(ge=0)] | None = None
    target: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]  # registry name for the result
    # Whisper sets: the language the sets are transcribed in (None: detected per file, as by default)
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=8, pattern="^[a-z]+$")] | None = None

    @property
    def report_key(self) -> str:
        return f"{self.relpath}.json"


def job_id_for(
    model_digest: str,
    recipe: str,
    params: dict[str, ParamValue],
    calibration: DatasetRef | None,
    evaluation: DatasetRef | None,
    max_drop: float | None,
    target: str,
    out_url: str,
    language: str | None = None,
) -> str:
    """Same parent content, recipe, options, datasets, gate and destination: same id, so a
    resubmitted plan reruns only what is missing or failed."""
    material = [
        model_digest,
        recipe,
        sorted(params.items()),
        calibration.sha256 if calibration else None,
        evaluation.sha256 if evaluation else None,
        max_drop,
        target,
        out_url.rstrip("/"),
        language,
    ]
    return job_id_of(material)
