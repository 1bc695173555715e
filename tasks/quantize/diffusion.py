"""Diffusion recipes (LCM and Stable Diffusion 1.x): UNet calibration inputs captured from real
generation runs over a prompts set, and NNCF on the in-memory text encoder, UNet and VAE decoder.

Recipes:

* ``int8-hybrid``: as OpenVINO's LCM notebook does it: UNet ``nncf.quantize`` (``MIXED`` preset,
  transformer model type, bias correction off), calibrated on every UNet input of denoising runs
  over the calibration prompts (``unet_samples`` of them, one per step; a Stable Diffusion step is
  one batch of 2 rows, the empty negative prompt and the prompt); text encoder and VAE decoder
  weight-only INT8 (``INT8_ASYM``).
* ``int8-weights``: weight-only INT8 for all three models; no calibration.

openvino_genai's ``Text2ImagePipeline`` gives no hook on the UNet's infer request, so the capture
runs the denoising loop here, as diffusers' pipelines do: the parent's OpenVINO tokenizer (padded to
the text encoder's 77 positions), text encoder and UNet, and the diffusers scheduler built from the
model's own ``scheduler_config.json``. That needs diffusers and torch (the ``export`` extra) on the
quantize worker; ``int8-weights`` does not. The VAE is not run: its input is never calibrated.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.errors import ConfigError, InputError
from ovbatch.jobs import Watch
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.tasks.imagegen.components import (
    DETOKENIZER,
    SCHEDULER_CONFIG,
    TEXT_ENCODER,
    TOKENIZER,
    UNET,
    VAE_DECODER,
)

# what a generation gets when the recipe's option is 0: the model family's usual settings (ovbatch txt2img's)
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "lcm": {"steps": 4, "guidance": 8.0},
    "stable-diffusion": {"steps": 20, "guidance": 7.5},
}
MODELS = (TEXT_ENCODER, UNET, VAE_DECODER)


@dataclass(frozen=True)
class Generation:
    """How calibration and evaluation images are made: the same for the parent and the quantized model."""

    kind: str  # "lcm" or "stable-diffusion"
    steps: int
    guidance: float
    size: int  # pixels, square
    seeds: int  # images per prompt, seeds 0 .. seeds-1

    @property
    def cfg(self) -> bool:
        """Classifier-free guidance: Stable Diffusion with guidance above 1 (LCM embeds the guidance instead)."""
        return self.kind != "lcm" and self.guidance > 1.0

    def as_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "guidance": self.guidance, "size": self.size, "seeds_per_prompt": self.seeds}


def generation_for(version: DecryptedVersion, params: dict[str, Any]) -> Generation:
    """The recipe's generation options, 0 meaning the model's own default (size: the UNet's sample size)."""
    kind = str(version.manifest["kind"])
    defaults = KIND_DEFAULTS[kind]
    size = int(params.get("size", 0))
    if size == 0:
        size = int(json.loads(version.text("unet/config.json")).get("sample_size") or 64) * vae_scale(version)
    return Generation(
        kind,
        int(params.get("steps") or defaults["steps"]),
        float(params.get("guidance") or defaults["guidance"]),
        size,
        int(params.get("seeds", 1)),
    )


def vae_scale(version: DecryptedVersion) -> int:
    """Pixels per latent cell: 2 ** (VAE blocks - 1), as genai and diffusers compute it."""
    blocks = json.loads(version.text("vae_decoder/config.json")).get("block_out_channels") or [64]
    return int(2 ** (len(blocks) - 1))


def _diffusers() -> Any:
    try:
        import diffusers
        import torch  # noqa: F401  the schedulers compute in torch
    except ImportError as exc:
        raise ConfigError(
            f"the diffusion int8-hybrid recipe runs diffusers' schedulers to capture UNet inputs, and this "
            f"quantize worker cannot import them ({exc}): install the export extra (pip install 'ovbatch[export]')"
        ) from None
    return diffusers


def guidance_embedding(guidance: float, dim: int, rows: int) -> np.ndarray:
    """LCM's ``timestep_cond``: diffusers' ``get_guidance_scale_embedding`` of ``w = guidance - 1``."""
    half = dim // 2
    scale = np.exp(np.arange(half, dtype=np.float32) * -(np.log(np.float32(10000.0)) / (half - 1)))
    angles = np.float32((guidance - 1.0) * 1000.0) * scale
    emb = np.concatenate([np.sin(angles), np.cos(angles)]).astype(np.float32)
    if dim % 2:
        emb = np.pad(emb, (0, 1))
    return np.repeat(emb[None], rows, axis=0)


class Denoiser:
    """The parent's tokenizer, text encoder and UNet compiled, run in a diffusers-style denoising loop."""

    def __init__(self, version: DecryptedVersion, core: Any, device: str, config: dict[str, Any]):
        import openvino_genai as genai

        self.diffusers = _diffusers()
        self.tokenizer = genai.Tokenizer(
            version.text(TOKENIZER),
            version.weights_tensor(TOKENIZER),
            version.text(DETOKENIZER),
            version.weights_tensor(DETOKENIZER),
        )
        self.max_length = int(json.loads(version.text("text_encoder/config.json")).get("max_position_embeddings", 77))
        self.unet_config = json.loads(version.text("unet/config.json"))
        self.scheduler_config = json.loads(version.text(SCHEDULER_CONFIG))
        self.scale = vae_scale(version)
        unet = version.read_model(core, UNET)
        self.inputs = {p.get_any_name(): p.get_element_type().to_dtype() for p in unet.inputs}
        self._text = core.compile_model(version.read_model(core, TEXT_ENCODER), device, config).create_infer_request()
        self._unet = core.compile_model(unet, device, config).create_infer_request()

    def _scheduler(self) -> Any:
        name = self.scheduler_config.get("_class_name")
        cls = getattr(self.diffusers, str(name), None)
        if cls is None:
            raise InputError(f"{SCHEDULER_CONFIG}: diffusers has no scheduler {name!r}")
        return cls.from_config(self.scheduler_config)

    def encode(self, prompt: str) -> np.ndarray:
        """The text encoder's last hidden state for ``prompt``, padded (and cut) to its positions as genai does."""
        ids = self.tokenizer.encode(prompt, pad_to_max_length=True, max_length=self.max_length, truncation=True)
        self._text.infer({"input_ids": np.asarray(ids.input_ids.data, dtype=np.int64)})
        return np.array(self._text.get_output_tensor(0).data, dtype=np.float32)

    def run(
        self, prompt: str, seed: int, gen: Generation, on_unet: Callable[[dict[str, np.ndarray]], bool]
    ) -> np.ndarray | None:
        """Denoise one image; ``on_unet`` sees every UNet input dict and returns False to stop (then None).
        Returns the final latents otherwise (the VAE decoder's input, before the scaling factor)."""
        import torch

        scheduler = self._scheduler()
        scheduler.set_timesteps(gen.steps)
        generator = torch.Generator().manual_seed(seed)
        side = gen.size // self.scale
        shape = (1, int(self.unet_config.get("in_channels", 4)), side, side)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
        text = self.encode(prompt)
        if gen.cfg:
            text = np.concatenate([self.encode(""), text])
        rows = text.shape[0]
        extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        cond = None
        if "timestep_cond" in self.inputs:
            cond = guidance_embedding(gen.guidance, int(self.unet_config["time_cond_proj_dim"]), rows)
        for t in scheduler.timesteps:
            sample = scheduler.scale_model_input(torch.cat([latents] * rows), t)
            inputs = self._unet_inputs(sample.numpy(), float(t), text, cond)
            if not on_unet(inputs):
                return None
            self._unet.infer(inputs)
            noise = torch.from_numpy(np.array(self._unet.get_output_tensor(0).data, dtype=np.float32))
            if gen.cfg:
                uncond, cond_pred = noise.chunk(2)
                noise = uncond + gen.guidance * (cond_pred - uncond)
            latents = scheduler.step(noise, t, latents, **extra, return_dict=False)[0]
        return np.asarray(latents.numpy(), dtype=np.float32)

    def _unet_inputs(
        self, sample: np.ndarray, t: float, text: np.ndarray, cond: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """The UNet's inputs by name, each in the dtype the model takes (timestep: a 1-element tensor)."""
        values = {"sample": sample, "timestep": np.array([t]), "encoder_hidden_states": text}
        if cond is not None:
            values["timestep_cond"] = cond
        missing = [n for n in self.inputs if n not in values]
        if missing:
            raise InputError(f"{UNET}: inputs {', '.join(missing)} are not those of a diffusers UNet export")
        return {n: np.ascontiguousarray(values[n], dtype=self.inputs[n]) for n in self.inputs}


@dataclass
class Capture:
    """UNet inputs recorded while the parent denoised the calibration prompts (one dict per UNet call)."""

    unet: list[dict[str, np.ndarray]] = field(default_factory=list)
    runs: int = 0  # generation runs started
    complete: bool = False  # every prompt and seed was run: a larger ``unet_samples`` gets no more
    seconds: float = 0.0

    def enough_for(self, samples: int) -> bool:
        return self.complete or len(self.unet) >= samples


def capture(
    version: DecryptedVersion,
    core: Any,
    device: str,
    config: dict[str, Any],
    prompts: list[str],
    gen: Generation,
    samples: int,
    watch: Watch,
    on_prompt: Callable[[int], None],
) -> Capture:
    """Up to ``samples`` UNet input dicts from denoising each prompt with seeds 0 .. ``gen.seeds``-1."""
    t0 = time.perf_counter()
    denoiser = Denoiser(version, core, device, config)
    out = Capture()

    def record(inputs: dict[str, np.ndarray]) -> bool:
        if len(out.unet) >= samples:
            return False
        out.unet.append({k: v.copy() for k, v in inputs.items()})
        return True

    for prompt in prompts:
        for seed in range(gen.seeds):
            watch.check("UNet inputs were being captured")
            out.runs += 1
            if denoiser.run(prompt, seed, gen, record) is None:
                out.seconds = time.perf_counter() - t0
                return out
        on_prompt(1)
    out.complete, out.seconds = True, time.perf_counter() - t0
    return out


def quantize(
    version: DecryptedVersion, core: Any, recipe: str, params: dict[str, Any], calib: Capture | None
) -> dict[str, Any]:
    """The recipe's quantized text encoder, UNet and VAE decoder as in-memory ``ov.Model``s."""
    import nncf

    int8 = nncf.CompressWeightsMode.INT8_ASYM
    models = {role: version.read_model(core, role) for role in MODELS}
    out = {role: nncf.compress_weights(models[role], mode=int8) for role in (TEXT_ENCODER, VAE_DECODER)}
    if recipe == "int8-weights":
        out[UNET] = nncf.compress_weights(models[UNET], mode=int8)
        return out
    if recipe != "int8-hybrid":
        raise ValueError(f"no diffusion recipe {recipe!r}")
    assert calib is not None and calib.unet, "int8-hybrid needs captured UNet inputs"
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    data = calib.unet[: int(params["unet_samples"])]
    out[UNET] = nncf.quantize(
        models[UNET],
        nncf.Dataset(data),
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(data),
        advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True),
    )
    return out
