"""The image job as a plain function: one image from a spec, a PNG and its sidecar in storage.

The worker (workers/runtime.py) calls ``run`` through the kind (kind.py); nothing here knows Celery.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ovbatch.errors import InputError, ObjectNotFound
from ovbatch.jobs import STOPS, JobEnv, Outcome, Watch, begin, stopped
from ovbatch.storage import ObjectStore
from ovbatch.tasks.imagegen import formats
from ovbatch.tasks.imagegen.components import SCHEDULERS
from ovbatch.tasks.imagegen.engine import ImageRequest
from ovbatch.tasks.imagegen.spec import ImageJob


def finished(job: ImageJob, store: ObjectStore) -> Outcome | None:
    """The earlier outcome if this image's marker exists and its files are still this job's (so no
    image is made twice). The file name holds the row, seed and prompt but not every setting: another
    batch into the same place with other steps or LoRAs replaces the files, and then this job's image
    is gone even though its marker is not. The sidecar, written with the PNG, names the job."""
    try:
        data = json.loads(store.get_bytes(job.marker_key))
        sidecar = json.loads(store.get_bytes(job.sidecar_key))
    except ObjectNotFound:
        return None
    except ValueError:  # a sidecar edited or cut short by hand: make the image again
        return None
    if not isinstance(sidecar, dict) or sidecar.get("job_id") != job.job_id:
        return None
    return Outcome("done", data["outputs"], 1.0, data["processing_s"], reused=True, extra=_extra(job))


def _extra(job: ImageJob) -> dict[str, Any]:
    """What the gallery and contact sheets need from a job's record."""
    return {"row": job.row, "seed": job.seed, "prompt": job.prompt, "source": job.source}


def check_limits(job: ImageJob, settings: Any) -> None:
    """The worker's own limits: a message cannot raise them."""
    if settings is None:
        return
    side = settings.max_image_side
    if max(job.width, job.height) > side:
        raise InputError(
            f"{job.source}: {job.width}x{job.height} is over this worker's limit of {side} px a side "
            "(OVBATCH_MAX_IMAGE_SIDE)"
        )
    if job.steps > settings.max_image_steps:
        raise InputError(
            f"{job.source}: {job.steps} steps is over this worker's limit of {settings.max_image_steps} "
            "(OVBATCH_MAX_IMAGE_STEPS)"
        )


# the job's genai Scheduler.Type name -> the engine's name for it
ENGINE_SCHEDULERS = {genai_name: name for name, genai_name in SCHEDULERS.items()}


def engine_scheduler(name: str | None) -> str | None:
    """The engine's name for a job's scheduler (``DDIM`` -> ``ddim``); None: the model's own."""
    return ENGINE_SCHEDULERS[name] if name else None


def request_of(job: ImageJob) -> ImageRequest:
    return ImageRequest(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        seed=job.seed,
        steps=job.steps,
        guidance=job.guidance,
        width=job.width,
        height=job.height,
        scheduler=engine_scheduler(job.scheduler),
        adapters=tuple((lora.model, lora.alpha) for lora in job.loras),
    )


class Stepper:
    """The pipeline's step callback (on a genai thread): counts the step, then raises if the job is
    cancelled, past its time limit or its worker is stopping; the engine stops within a step and
    raises it again in the job's thread. genai drops callbacks still queued when denoising ends, so
    ``settle`` counts the steps it did not report."""

    def __init__(self, watch: Watch, env: JobEnv):
        self.watch, self.env, self.counted = watch, env, 0

    def __call__(self, step: int, total: int) -> bool:
        self.counted += 1
        self.env.progress(1)
        self.watch.check("this image was being generated")
        return False

    def settle(self, steps: int) -> None:
        if steps > self.counted:
            self.env.progress(steps - self.counted)


def run(job: ImageJob, env: JobEnv) -> Outcome:
    """Make one image. Bad input becomes a failed outcome; infrastructure errors raise, and so does
    ``WorkerStopping`` (the job is not over: it goes back to its queue)."""
    out = begin(job, env, finished, "this image", extra=_extra(job))
    if isinstance(out, Outcome):
        return out
    t0 = time.perf_counter()
    try:
        check_limits(job, env.settings)
        engine = env.engine_for(job)
        # a step is long (a second or more at 512 px): ask the batch after every one, so a cancel
        # stops the image at its next step (one Redis read a step)
        stepper = Stepper(env.watch(job, cancel_check_s=0.0), env)
        image = engine.generate(request_of(job), stepper)
        stepper.settle(job.steps)
    except STOPS as exc:
        return stopped(exc, t0, name=job.source, extra=_extra(job))
    processing_s = time.perf_counter() - t0
    outputs = write_outputs(job, out, image, processing_s)
    return Outcome("done", outputs, 1.0, processing_s, extra=_extra(job))


def write_outputs(job: ImageJob, out: ObjectStore, image: Any, processing_s: float) -> list[str]:
    """PNG (with the A1111 parameters chunk) and JSON sidecar, each written atomically under its
    deterministic name, then the marker: a second delivery rewrites identical objects."""
    own = getattr(image, "model_scheduler", None)
    png = formats.png_bytes(image.pixels, formats.parameters_of(job, own))
    out.put_bytes(job.relpath, png)
    out.put_bytes(job.sidecar_key, formats.sidecar_of(job, image.timings_s, processing_s, own))
    keys = [job.relpath, job.sidecar_key]
    marker = {"outputs": keys, "processing_s": processing_s, "model": job.model, "seed": job.seed}
    out.put_bytes(job.marker_key, json.dumps(marker).encode())
    return keys
