"""How a pipeline benchmark submission expands into runs: the audio set or prompt rows are read once,
then one job per (model, device) configuration and repeat.

The model's kind chooses the pipeline: a Whisper version transcribes the sources (files, folders,
archives, ``s3://`` prefixes and manifests, as ``ovbatch transcribe`` reads them; local files are
uploaded content-addressed), an LCM or Stable Diffusion version reads them as prompt files (txt,
JSONL, CSV, as ``ovbatch txt2img`` does) and makes one image per row and seed. Unreadable inputs
and bad rows are listed in the batch and the run measures the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ovbatch import inputs as inputs_mod
from ovbatch.errors import BadInputError, InputError, ModelNotFound
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.submission import Failure, Plan
from ovbatch.tasks.benchmark.submit import DEVICE, check_workers, parse_sweep, replace_job
from ovbatch.tasks.benchmark.submit import Request as BenchmarkRequest
from ovbatch.tasks.pipebench.spec import MAX_AUDIO_FILES, MAX_PROMPTS, AudioInput, PipelineJob, PromptInput, job_id_for
from ovbatch.tasks.transcribe.types import TranscribeOptions
from ovbatch.workers.cache import content_digest

PipelineName = Literal["transcribe", "txt2img"]
PIPELINES: dict[str, PipelineName] = {"whisper": "transcribe", "lcm": "txt2img", "stable-diffusion": "txt2img"}
SWEEP_KEYS = ("model", "device")


@dataclass(frozen=True)
class Config:
    model: str
    device: str
    sweep: dict[str, str] = field(default_factory=dict)


def expand(model: str, device: str, sweep: str | None) -> list[Config]:
    """``model=a@1,a@2 device=CPU,GPU`` (a pipeline run has no hint or requests to sweep)."""
    if not sweep:
        return [Config(model, device)]
    terms = parse_sweep(sweep)
    bad = [key for key, _ in terms if key not in SWEEP_KEYS]
    if bad:
        raise BadInputError(f"--sweep {', '.join(bad)}: a --pipeline run sweeps {' and '.join(SWEEP_KEYS)} only")
    out = []
    for combo in itertools.product(*(values for _, values in terms)):
        chosen = dict(zip((k for k, _ in terms), combo, strict=True))
        out.append(Config(chosen.get("model", model), chosen.get("device", device), chosen))
    return out


@dataclass
class Inputs:
    """The sources read once, as audio or as prompts, whichever a configuration asks for first."""

    sources: list[str]
    registry: Registry
    s3_endpoint_url: str | None
    progress: Callable[[str], None]
    audio: list[AudioInput] | None = None
    prompts: dict[str, tuple[list[PromptInput], tuple[int, int], bool]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def audio_set(self) -> list[AudioInput]:
        if self.audio is None:
            from ovbatch.tasks.transcribe.submit import _reference, _unreadable

            items, problems = inputs_mod.enumerate_inputs(self.sources, s3_endpoint_url=self.s3_endpoint_url)
            self.failures += [Failure(p.display, p.reason) for p in problems]
            if len(items) > MAX_AUDIO_FILES:
                raise BadInputError(f"{len(items)} audio files: a pipeline run measures at most {MAX_AUDIO_FILES}")
            self.audio = []
            for item in items:
                self.progress(item.display)
                try:
                    url, digest = _reference(self.registry.store, item)
                except Exception as exc:  # an unreadable file fails alone
                    self.failures.append(Failure(item.display, _unreadable(item.display, exc)))
                    continue
                self.audio.append(AudioInput(url, digest, item.display))
        if not self.audio:
            raise BadInputError(f"no readable audio in {', '.join(self.sources)}")
        return self.audio

    def prompt_rows(self, model_kind: str) -> tuple[list[PromptInput], tuple[int, int], bool]:
        """The rows for a model family (its default steps and guidance), one size and guidance mode."""
        if model_kind not in self.prompts:
            from ovbatch.tasks.imagegen.prompts import read_prompts
            from ovbatch.tasks.imagegen.submit import defaults_for

            rows, problems = read_prompts(self.sources, defaults_for(model_kind, {}))
            self.failures += [Failure(p.source, p.reason) for p in problems]
            if not rows:
                raise BadInputError(f"no usable prompt rows in {', '.join(self.sources)}")
            size, cfg = (rows[0].width, rows[0].height), rows[0].guidance > 1.0
            chosen = []
            for row in rows:
                if (row.width, row.height) != size or (row.guidance > 1.0) != cfg or row.loras:
                    self.failures.append(
                        Failure(
                            row.source,
                            f"{row.source}: a pipeline run makes every image at one size and guidance mode, "
                            f"without adapters (the first row's: {size[0]}x{size[1]}, guidance "
                            f"{'above' if cfg else 'at most'} 1); measure other settings in another run",
                        )
                    )
                    continue
                for seed in row.seeds:
                    chosen.append(
                        PromptInput(
                            row.source,
                            row.prompt,
                            row.negative_prompt,
                            seed,
                            row.steps,
                            row.guidance,
                            row.scheduler,  # type: ignore[arg-type]  # checked by read_prompts
                        )
                    )
            if len(chosen) > MAX_PROMPTS:
                raise BadInputError(f"{len(chosen)} images: a pipeline run makes at most {MAX_PROMPTS}")
            self.prompts[model_kind] = (chosen, size, cfg)
        return self.prompts[model_kind]


def plan(
    configs: list[Config],
    sources: list[str],
    *,
    batch_id: str,
    registry: Registry,
    out_url: str,
    repeat: int = 1,
    warmup: int = 1,
    options: TranscribeOptions | None = None,
    workers: list[dict[str, Any]] | None = None,
    s3_endpoint_url: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Plan:
    result = Plan()
    inputs = Inputs(sources, registry, s3_endpoint_url, progress)
    n = 0
    for config in configs:
        label = f"{config.model} {config.device}".strip()
        try:
            if not DEVICE.match(config.device):
                raise BadInputError(f"unknown device {config.device!r}: OpenVINO devices are CPU, GPU, GPU.N, NPU...")
            check_workers(BenchmarkRequest(model=config.model, device=config.device), workers)
            ref = registry.resolve(ModelRef.parse(config.model))
            manifest = registry.manifest(ref, verify_mac=False)
            kind = str(manifest.get("kind", "generic"))
            pipeline = PIPELINES.get(kind)
            if pipeline is None:
                raise BadInputError(
                    f"{ref} is a {kind!r} model: --pipeline runs transcription (whisper) and image generation "
                    "(lcm, stable-diffusion) pipelines; measure a single IR without --pipeline"
                )
            fields: dict[str, Any] = {}
            if pipeline == "transcribe":
                fields["audio"] = tuple(inputs.audio_set())
                fields["options"] = options or TranscribeOptions()
                material: list[Any] = [[a.sha256, a.display] for a in fields["audio"]]
            else:
                rows, (width, height), cfg = inputs.prompt_rows(kind)
                fields.update(prompts=tuple(rows), width=width, height=height, cfg=cfg)
                material = [[r.prompt, r.seed, r.steps, r.guidance] for r in rows]
        except (InputError, ModelNotFound) as exc:
            result.failures.append(Failure(label, f"{label}: {exc}" if config.sweep else str(exc)))
            continue
        digest = content_digest(manifest)
        for r in range(1, repeat + 1):
            n += 1
            run_id = f"{batch_id}-{n:03d}"
            job = PipelineJob(
                batch_id=batch_id,
                job_id="",
                display=f"{ref} {config.device} {pipeline} pipeline" + (f" #{r}" if repeat > 1 else ""),
                relpath=run_id,
                model=str(ref),
                device=config.device,
                out_url=out_url,
                model_digest=digest,
                pipeline=pipeline,
                warmup=warmup,
                repeat=r,
                sweep=dict(config.sweep),
                **fields,
            )
            job_id = job_id_for(batch_id, digest, material, job.configuration(), r, out_url)
            result.jobs.append(replace_job(job, job_id))
    # inputs that could not be read are listed once, beside the runs that measured the others
    result.failures += inputs.failures
    result.meta = {
        "runs": len(result.jobs),
        "devices": sorted({j.device for j in result.jobs}),
        "models": sorted({j.model for j in result.jobs}),
        "pipeline_sources": sources,
    }
    return result
