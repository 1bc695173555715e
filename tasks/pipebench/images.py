"""The image generation pipeline over prompt rows: warm up on the first row, then make one image per
row (and seed) and keep genai's own stage timings for each: text encoder, first UNet step, the other
UNet steps' average, VAE decode, and the whole generation (openvino.genai llm_bench's columns).

A row the engine refuses (a size or scheduler it cannot take) fails alone, named; the others run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ovbatch.errors import InputError
from ovbatch.jobs import JobEnv
from ovbatch.tasks.imagegen.job import engine_scheduler
from ovbatch.tasks.imagegen.request import ImageRequest
from ovbatch.tasks.pipebench.spec import PipelineJob, PromptInput

STAGES = ("text_encoder", "unet_first_step", "unet_other_steps_avg", "vae_decode", "total")


def request_of(job: PipelineJob, row: PromptInput) -> ImageRequest:
    return ImageRequest(
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        seed=row.seed,
        steps=row.steps,
        guidance=row.guidance,
        width=job.width,
        height=job.height,
        scheduler=engine_scheduler(row.scheduler),  # a job names genai's type, the engine its own
    )


def measure(job: PipelineJob, engine: Any, env: JobEnv, check: Callable[[], None]) -> dict[str, Any]:
    def on_step(_done: int, _total: int) -> bool:
        check()  # raises: the engine stops after the step in flight and raises it here
        return False

    warmup_s = None
    if job.warmup:
        env.stage(f"{job.display}: warm-up")
        t0 = time.perf_counter()
        for _ in range(job.warmup):
            try:
                engine.generate(request_of(job, job.prompts[0]), on_step)
            except InputError:
                break  # the row fails below, named
        warmup_s = time.perf_counter() - t0
    items, failures = [], []
    for i, row in enumerate(job.prompts, 1):
        env.stage(f"{job.display}: image {i} of {len(job.prompts)}")
        check()
        try:
            image = engine.generate(request_of(job, row), on_step)
        except InputError as exc:
            failures.append({"input": row.source, "error": f"{row.source}: {exc}"})
            continue
        t = image.timings_s
        items.append(
            {
                "input": row.source,
                "prompt": row.prompt[:200],
                "seed": row.seed,
                "steps": row.steps,
                "guidance": row.guidance,
                "seconds": round(t["wall"], 4),
                **{f"{stage}_ms": round(t[stage] * 1000, 3) for stage in STAGES},
            }
        )
        env.progress(1)
    if not items:
        reasons = "; ".join(f["error"] for f in failures[:3])
        raise InputError(f"none of the {len(job.prompts)} prompt row(s) made an image: {reasons}")
    seconds = [it["seconds"] for it in items]
    steps = sum(it["steps"] for it in items)
    total_unet_ms = sum(it["unet_first_step_ms"] + it["unet_other_steps_avg_ms"] * (it["steps"] - 1) for it in items)

    def median(key: str) -> float:
        return float(statistics.median(it[key] for it in items))

    results: dict[str, Any] = {
        "images": len(items),
        "failed_images": len(failures),
        "width": job.width,
        "height": job.height,
        "seconds_per_image": statistics.median(seconds),
        "seconds_per_image_mean": statistics.fmean(seconds),
        "seconds_per_image_min": min(seconds),
        "seconds_per_image_max": max(seconds),
        "images_per_min": 60 * len(items) / sum(seconds),
        "text_encoder_ms": median("text_encoder_ms"),
        "unet_first_step_ms": median("unet_first_step_ms"),
        "unet_other_steps_avg_ms": median("unet_other_steps_avg_ms"),
        "unet_ms_per_step": total_unet_ms / steps,
        "vae_decode_ms": median("vae_decode_ms"),
        "generate_s": sum(seconds),
        "warmup_s": warmup_s,
    }
    return {"results": results, "items": items, "failures": failures}
