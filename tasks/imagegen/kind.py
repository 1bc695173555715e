"""Image generation as a job kind: Stable Diffusion / LCM models, one job per image, progress in
images and denoising steps."""

from __future__ import annotations

from typing import Any

from ovbatch.jobs import Unit
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.registry.refs import ModelRef
from ovbatch.tasks.imagegen import batch, job
from ovbatch.tasks.imagegen.spec import ImageJob

ADAPTER_ROLE = "adapter.safetensors"
# workers install no torch: the engine draws torch.randn's noise with numpy (tasks/imagegen/noise.py),
# the same images as diffusers with torch.Generator().manual_seed(seed)
NOISE = "numpy"


def engine_options(spec: ImageJob) -> dict[str, Any]:
    """What needs another compiled pipeline: the resolution and, for Stable Diffusion, whether
    classifier-free guidance doubles the UNet batch (the models are reshaped to both), and the adapter
    set. Alphas are not in the key, so switching them between jobs does not recompile, except with
    two or more adapters: openvino_genai 2026.4 keeps the first call's alphas for those (measured),
    so such an engine serves one set of alphas only."""
    adapters = sorted({lora.model for lora in spec.loras})
    options: dict[str, Any] = {"size": [spec.width, spec.height], "cfg": spec.guidance > 1.0, "adapters": adapters}
    if len(adapters) > 1:
        options["alphas"] = sorted((lora.model, lora.alpha) for lora in spec.loras)
    return options


def load_image_engine(load: EngineLoad) -> Loaded:
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.tasks.imagegen.components import ROLES
    from ovbatch.tasks.imagegen.engine import ImageEngine

    version = decrypt_version(load.registry, load.ref, roles=ROLES)
    width, height = load.options["size"]
    # pipelines that run at once in this worker (each has its own infer requests); more than one only
    # pays when the cores are not all busy with one
    pipelines = max(1, min(load.concurrency, load.settings.image_pipelines if load.settings else 1))
    try:
        adapters = {ref: _adapter(load, ref, version) for ref in load.options.get("adapters", [])}
        engine = ImageEngine.from_version(
            version,
            load.device,
            load.config,
            adapters,
            pool_size=pipelines,
            static_size=(width, height),
            static_cfg=bool(load.options.get("cfg", True)),
            noise_kind=NOISE,
        )
    except BaseException:
        version.wipe()
        raise
    return Loaded(engine, engine.size_bytes, release=engine.release)


def _adapter(load: EngineLoad, ref: str, base: Any) -> Any:
    """A LoRA's decrypted safetensors, refused if it does not apply to the base model: openvino_genai
    would silently ignore keys that match nothing, and the images would come out unstyled."""
    from ovbatch.registry import lora
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.safetensors_io import loads

    adapter = decrypt_version(load.registry, ModelRef.parse(ref), roles=[ADAPTER_ROLE])
    data = adapter.buffers[ADAPTER_ROLE]
    tensors, _meta = loads(data.data, where=f"LoRA {ref}")
    lora.require_match({k: v.shape for k, v in tensors.items()}, base, ref, str(load.ref))
    return data


def _commands() -> tuple[object, ...]:
    from ovbatch.tasks.imagegen.cli import txt2img

    return (txt2img,)


KIND = JobKind(
    name="txt2img",
    spec=ImageJob,
    unit=Unit("images", "images", "images/min", rate_per_s=60.0, work="steps"),
    run=job.run,
    finished=job.finished,
    engines={"lcm": load_image_engine, "stable-diffusion": load_image_engine},
    engine_options=engine_options,
    finish_batch=batch.finish,
    commands=_commands,
)
