"""An image's files: the PNG with AUTOMATIC1111's ``parameters`` text, and the JSON sidecar.

The ``parameters`` text is laid out as A1111's ``create_infotext`` writes it, so its PNG Info tab,
civitai and other readers of that format show the settings::

    a red fox in snow <lora:style@2:0.8>
    Negative prompt: blurry
    Steps: 4, Sampler: LCM, CFG scale: 1.0, Seed: 42, Size: 512x512, Model hash: 0123456789, Model: lcm@3, ...

where ``...`` is ``Lora hashes: "style@2: 89abcdef0123"`` when there are LoRAs. LoRAs are also
``<lora:name:alpha>`` tags after the prompt, as A1111's prompt carries them. The ``Negative prompt``
line is left out when there is none. ``Sampler`` names the scheduler that ran: the one the job asked
for, or the model's own (its ``scheduler_config.json`` class, which the engine reports). Model hash
is a sha256's first 10 hex digits (A1111's "new" model hash), a LoRA's hash its first 12 (A1111's
``shorthash``). A value holding ``,``, ``:`` or a newline is JSON-quoted, as A1111's ``quote`` does.
Text that Latin-1 cannot hold goes in an iTXt chunk (UTF-8) rather than tEXt: Pillow decides, as it
does for A1111.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, PngImagePlugin

if TYPE_CHECKING:
    from ovbatch.tasks.imagegen.spec import ImageJob

PARAMETERS_KEY = "parameters"
MODEL_HASH_CHARS = 10
LORA_HASH_CHARS = 12
# openvino_genai scheduler -> A1111 sampler name
SAMPLERS = {
    "LCM": "LCM",
    "DDIM": "DDIM",
    "EULER_DISCRETE": "Euler",
    "EULER_ANCESTRAL_DISCRETE": "Euler a",
    "LMS_DISCRETE": "LMS",
    "PNDM": "PLMS",
    "FLOW_MATCH_EULER_DISCRETE": "Euler",
}
# diffusers scheduler class (a model's own scheduler) -> the same A1111 sampler names
SCHEDULER_CLASSES = {
    "LCMScheduler": "LCM",
    "DDIMScheduler": "DDIM",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "LMSDiscreteScheduler": "LMS",
    "PNDMScheduler": "PLMS",
    "FlowMatchEulerDiscreteScheduler": "Euler",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
}


def png_bytes(pixels: np.ndarray, parameters: str) -> bytes:
    """``pixels`` (uint8, height x width x 3, RGB) as a PNG carrying ``parameters``."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be uint8 height x width x 3 (RGB), got {pixels.dtype} {pixels.shape}")
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)  # tEXt, or iTXt when Latin-1 cannot hold it
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_parameters(png: bytes) -> str:
    """The ``parameters`` text of a PNG; ``ValueError`` if it has none."""
    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get(PARAMETERS_KEY)
    if not isinstance(text, str):
        raise ValueError(f"this PNG has no {PARAMETERS_KEY!r} text chunk")
    return text


def sampler_name(scheduler: str | None, model_scheduler: str | None = None) -> str | None:
    """A1111's name for the scheduler that ran: the job's (an openvino_genai type name) or, when the
    job named none, the model's own (a diffusers class name). None when neither is known."""
    if scheduler is not None:
        return SAMPLERS.get(scheduler, scheduler)
    if model_scheduler:
        return SCHEDULER_CLASSES.get(model_scheduler, model_scheduler.removesuffix("Scheduler"))
    return None


def a1111_parameters(
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str | None,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_name: str,
    model_hash: str,
    loras: Sequence[tuple[str, float]] = (),
    lora_hashes: Mapping[str, str] | None = None,
) -> str:
    """The A1111 ``parameters`` text; see the module docstring. ``model_hash`` and the values of
    ``lora_hashes`` (LoRA name -> its digest) may be whole sha256 digests: they are shortened here."""
    tags = "".join(f" <lora:{name}:{_number(alpha)}>" for name, alpha in loras)
    lines = [prompt + tags]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": float(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash[:MODEL_HASH_CHARS],
        "Model": model_name,
    }
    if lora_hashes:
        params["Lora hashes"] = ", ".join(f"{_alias(n)}: {h[:LORA_HASH_CHARS]}" for n, h in lora_hashes.items())
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value is not None))
    return "\n".join(lines)


def parameters_of(job: ImageJob, model_scheduler: str | None = None) -> str:
    """The ``parameters`` text of a job's image (``model_scheduler``: the class of the model's own
    scheduler, which ran when the job named none)."""
    return a1111_parameters(
        job.prompt,
        job.negative_prompt,
        job.steps,
        sampler_name(job.scheduler, model_scheduler),
        job.guidance,
        job.seed,
        job.width,
        job.height,
        model_name=job.model,
        model_hash=job.model_digest,
        loras=[(lora.model, lora.alpha) for lora in job.loras],
        lora_hashes={lora.model: lora.digest for lora in job.loras},
    )


def sidecar_json(
    job: ImageJob, timings_s: Mapping[str, float], processing_s: float, model_scheduler: str | None = None
) -> bytes:
    """The image's JSON sidecar: every parameter, the model and adapters with their digests, the
    time each stage took, the job and batch ids, and the ``parameters`` text the PNG carries."""
    doc = {
        "job_id": job.job_id,
        "batch_id": job.batch_id,
        "row": job.row,
        "source": job.source,
        "image": job.relpath,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "steps": job.steps,
        "guidance": job.guidance,
        "width": job.width,
        "height": job.height,
        "scheduler": job.scheduler or model_scheduler,
        "sampler": sampler_name(job.scheduler, model_scheduler),
        "model": _model_json(job.model, job.model_digest),
        "loras": [_model_json(lora.model, lora.digest) | {"alpha": lora.alpha} for lora in job.loras],
        "device": job.device,
        "timings_s": {stage: round(seconds, 4) for stage, seconds in timings_s.items()},
        "processing_s": round(processing_s, 4),
        "parameters": parameters_of(job, model_scheduler),
    }
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode()


sidecar_of = sidecar_json  # the name job.py calls it by


def _model_json(ref: str, digest: str) -> dict[str, Any]:
    name, _, version = ref.partition("@")
    return {"ref": ref, "name": name, "version": version or None, "sha256": digest}


def _number(value: float) -> str:
    """``1.0`` -> ``1``, ``0.8`` -> ``0.8``: how an alpha reads in a ``<lora:...>`` tag."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")  # as A1111 writes a LoRA's name before its hash


def _quote(value: object) -> str:
    """A1111's ``infotext_utils.quote``: JSON-quoted when the text would break the ``k: v, ...`` line."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text
