"""The pipeline benchmark message: one model version's whole job-kind pipeline over a set of real
inputs (audio files by reference, or prompt rows), timed stage by stage.

Transcription: RTFx over the audio set, encoder ms per 30 s window, decoder ms per token. Image
generation: seconds per image, text encoder, first and other UNet steps, VAE decode (openvino.genai
llm_bench's columns). Each run is a new measurement: the job id includes the batch.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ovbatch.jobs import JobSpec, job_id_of
from ovbatch.tasks.imagegen.spec import Side
from ovbatch.tasks.transcribe.types import TranscribeOptions

Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
MAX_AUDIO_FILES = 2000
MAX_PROMPTS = 1000


class AudioInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str  # "registry:inputs/sha256/..", "s3://bucket/key" or "file:///abs/path"
    sha256: Digest
    display: str


class PromptInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str  # "prompts.csv:3"
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
    negative_prompt: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 0
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    guidance: Annotated[float, msgspec.Meta(ge=0.0, le=50.0)] = 8.0
    scheduler: Literal["LCM", "DDIM", "EULER_DISCRETE", "EULER_ANCESTRAL_DISCRETE", "PNDM"] | None = None


class PipelineJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_digest: Digest
    pipeline: Literal["transcribe", "txt2img"]
    audio: Annotated[tuple[AudioInput, ...], msgspec.Meta(max_length=MAX_AUDIO_FILES)] = ()
    prompts: Annotated[tuple[PromptInput, ...], msgspec.Meta(max_length=MAX_PROMPTS)] = ()
    options: TranscribeOptions = msgspec.field(default_factory=TranscribeOptions)
    width: Side = 512  # one size for the run: the engine is compiled for it (static shapes, as txt2img)
    height: Side = 512
    cfg: bool = False  # classifier-free guidance (guidance > 1) doubles the UNet batch: one per run
    warmup: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1  # inputs run first and not counted
    repeat: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    sweep: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.relpath

    @property
    def report_key(self) -> str:
        return f"{self.run_id}.json"

    @property
    def csv_key(self) -> str:
        return f"{self.run_id}/pipeline_report.csv"

    def output_keys(self) -> list[str]:
        return [self.report_key, self.csv_key]

    def configuration(self) -> dict[str, object]:
        config: dict[str, object] = {"model": self.model, "device": self.device, "pipeline": self.pipeline}
        if self.pipeline == "transcribe":
            config.update(files=len(self.audio), language=self.options.language, task=self.options.task)
        else:
            config.update(prompts=len(self.prompts), width=self.width, height=self.height)
        config["warmup"] = self.warmup
        return config


def job_id_for(
    batch_id: str, model_digest: str, inputs: list[object], config: dict[str, object], repeat: int, out_url: str
) -> str:
    material = [batch_id, model_digest, inputs, sorted(config.items()), repeat, out_url.rstrip("/")]
    return job_id_of(material)
