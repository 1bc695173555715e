"""The image job message: one image, every parameter that changes its pixels, references only.

Validated strictly on both sides (``JobSpec.from_json``); the worker applies its own limits too
(``Settings.max_image_side``, ``max_image_steps``), since Redis is not trusted to carry authority.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ovbatch.jobs import JobSpec, job_id_of

Side = Annotated[int, msgspec.Meta(ge=64, le=4096, multiple_of=8)]
Alpha = Annotated[float, msgspec.Meta(ge=-10.0, le=10.0)]
Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class LoraSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str  # name@version, resolved at submission
    digest: Digest  # the adapter version's content digest: part of the job id and the engine key
    alpha: Alpha = 1.0


class ImageJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    row: Annotated[int, msgspec.Meta(ge=1)]
    source: str  # "prompts.csv:3", for messages
    model_digest: Digest
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
    negative_prompt: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    guidance: Annotated[float, msgspec.Meta(ge=0.0, le=50.0)]
    width: Side
    height: Side
    scheduler: Literal["LCM", "DDIM", "EULER_DISCRETE", "EULER_ANCESTRAL_DISCRETE", "PNDM"] | None = None
    loras: tuple[LoraSpec, ...] = ()

    @property
    def stem(self) -> str:
        return self.relpath.rsplit(".", 1)[0]

    @property
    def sidecar_key(self) -> str:
        return f"{self.stem}.json"

    def output_keys(self) -> list[str]:
        return [self.relpath, self.sidecar_key]


def image_job_id(
    *,
    model_digest: str,
    loras: tuple[LoraSpec, ...],
    prompt: str,
    negative_prompt: str,
    seed: int,
    steps: int,
    guidance: float,
    width: int,
    height: int,
    scheduler: str | None,
    out_url: str,
    relpath: str,
) -> str:
    """Same weights, adapters and alphas, parameters, seed and destination: same id, so resubmitting a
    batch makes only the images that are missing."""
    material = [
        model_digest,
        [[lora.digest, lora.alpha] for lora in loras],
        prompt,
        negative_prompt,
        seed,
        steps,
        guidance,
        width,
        height,
        scheduler,
        out_url.rstrip("/"),
        relpath,
    ]
    return job_id_of(material)
