"""Real-size Stable Diffusion 1.5 and LCM Dreamshaper v7 architectures with random weights, for
benchmarks (no real weights exist offline; speed does not depend on the values).

Each kind is built from the SD 1.5 configs committed in ``ovbatch/registry/sd/sd15`` (UNet 860M
parameters; LCM adds ``time_cond_proj_dim=256`` as LCM Dreamshaper v7 has), seeded, one model at a
time (the UNet alone is 3.4 GB in fp32), saved as a diffusers folder under ``.cache/bench/`` and
imported into a benchmark registry through ``Registry.import_folder`` (the optimum-intel export).
Both are kept, so later runs skip building and exporting. ``tiny=True`` swaps in small configs of the
same shape, to try the benchmark code quickly.
"""

from __future__ import annotations

import gc
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore

REPO = Path(__file__).resolve().parents[1]
BENCH_VERSION = 1  # bump when the builders below change, so cached models are rebuilt
KINDS = ("lcm", "sd")
MANIFEST_KIND = {"lcm": "lcm", "sd": "stable-diffusion"}
LCM_TIME_COND_PROJ_DIM = 256  # LCM Dreamshaper v7's UNet
LORA_RANK = 8
LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")

# small stand-ins with the same block layout, for trying the benchmark code (--tiny)
TINY = {
    "unet": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32},
    "vae": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
}
TINY_LCM_TIME_COND_PROJ_DIM = 32
SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def cache_root(tiny: bool) -> Path:
    return REPO / ".cache" / "bench" / ("imagegen-tiny" if tiny else "imagegen") / f"v{BENCH_VERSION}"


def sd15_config(component: str) -> dict[str, Any]:
    """A committed SD 1.5 config (``unet``, ``vae``, ``text_encoder``)."""
    text = resources.files("ovbatch.registry.sd").joinpath("sd15", component, "config.json").read_text()
    return dict(json.loads(text))


def component_config(kind: str, component: str, tiny: bool) -> dict[str, Any]:
    config = {k: v for k, v in sd15_config(component).items() if not k.startswith("_")}
    if tiny:
        config.update(TINY[component])
    if component == "unet" and kind == "lcm":
        config["time_cond_proj_dim"] = TINY_LCM_TIME_COND_PROJ_DIM if tiny else LCM_TIME_COND_PROJ_DIM
    if component == "text_encoder" and tiny:
        config["projection_dim"] = 32
    return config


def _build_component(kind: str, component: str, tiny: bool) -> Any:
    config = component_config(kind, component, tiny)
    if component == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig(**config))
    from diffusers import AutoencoderKL, UNet2DConditionModel

    return (UNet2DConditionModel if component == "unet" else AutoencoderKL).from_config(config)


def _scheduler(kind: str) -> Any:
    from diffusers import LCMScheduler, PNDMScheduler

    if kind == "lcm":  # LCM Dreamshaper v7's scheduler_config.json
        return LCMScheduler(
            **SCHEDULE,
            set_alpha_to_one=True,
            steps_offset=1,
            timestep_spacing="leading",
            original_inference_steps=50,
            clip_sample=False,
        )
    return PNDMScheduler(**SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)  # SD 1.5's


def _model_index(kind: str) -> dict[str, Any]:
    import diffusers

    lcm = kind == "lcm"
    return {
        "_class_name": "LatentConsistencyModelPipeline" if lcm else "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "LCMScheduler" if lcm else "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def _write_pipeline(kind: str, folder: Path, tiny: bool, seed: int) -> None:
    """Save each model as soon as it is built and drop it before building the next."""
    import torch

    from ovbatch.registry.sd.clip_vocab import clip_tokenizer

    folder.mkdir(parents=True)
    for i, component in enumerate(("text_encoder", "vae", "unet")):
        torch.manual_seed(seed + i)
        model = _build_component(kind, component, tiny)
        model.save_pretrained(folder / component, safe_serialization=True)
        del model
        gc.collect()
    clip_tokenizer().save_pretrained(folder / "tokenizer")
    _scheduler(kind).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(_model_index(kind), indent=2))


def pipeline_folder(kind: str, tiny: bool = False, seed: int = 0) -> Path:
    """The saved diffusers folder of ``kind`` ("lcm" or "sd"), built on first use."""
    folder = cache_root(tiny) / kind
    if not (folder / "model_index.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _write_pipeline(kind, partial, tiny, seed)
        partial.rename(folder)
    return folder


def _meta_unet(kind: str, tiny: bool) -> Any:
    """The UNet's module tree without weights (names and shapes only, no memory)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(component_config(kind, "unet", tiny))


def lora_file(kind: str, tiny: bool = False, rank: int = LORA_RANK, seed: int = 7) -> Path:
    """A random kohya LoRA (``lora_unet_<path>.lora_down/lora_up/alpha``) of rank ``rank`` for every
    attention projection of the UNet, saved once."""
    path = cache_root(tiny) / f"{kind}-lora-r{rank}.safetensors"
    if path.is_file():
        return path
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in _meta_unet(kind, tiny).named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(LORA_PROJECTIONS):
            key = "lora_unet_" + name.replace(".", "_")
            tensors[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.01
            tensors[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.01
            tensors[key + ".alpha"] = torch.tensor(float(rank))
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.rename(path)
    return path


@dataclass(frozen=True)
class BenchRegistry:
    """The benchmark's encrypted file:// registry: the models and LoRAs of each kind."""

    root: Path
    registry: Registry
    models: dict[str, str]  # kind -> "name@version"
    loras: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {"OVBATCH_STORAGE_URL": self.registry.store.url, "OVBATCH_KEYRING": str(self.root / "keyring.json")}


def _open_registry(root: Path) -> Registry:
    ring_path = root / "keyring.json"
    if not ring_path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        ring = Keyring(ring_path)
        ring.add_new_key()
        ring.save()
    return Registry(FileStore(root / "storage"), Keyring.load(ring_path))


def _latest(registry: Registry, name: str) -> str | None:
    versions = registry.versions(name) if name in registry.names() else []
    return f"{name}@{versions[-1]}" if versions else None


def _import_model(registry: Registry, kind: str, tiny: bool) -> str:
    name = f"bench-{kind}"
    found = _latest(registry, name)
    if found:
        return found
    folder = pipeline_folder(kind, tiny)
    gc.collect()
    manifest = registry.import_folder(folder, name)
    if manifest["kind"] != MANIFEST_KIND[kind]:
        raise RuntimeError(f"{folder} was imported as {manifest['kind']!r}, not {MANIFEST_KIND[kind]!r}")
    return f"{manifest['name']}@{manifest['version']}"


def _import_lora(registry: Registry, kind: str, model: str, tiny: bool) -> str:
    name = f"bench-{kind}-lora"
    found = _latest(registry, name)
    if found:
        return found
    manifest = registry.import_lora(lora_file(kind, tiny), name, base=ModelRef.parse(model))
    return f"{manifest['name']}@{manifest['version']}"


def bench_registry(kinds: tuple[str, ...], tiny: bool = False) -> BenchRegistry:
    """The registry with each kind's model and LoRA, built, exported and imported on first use."""
    root = cache_root(tiny) / "registry"
    registry = _open_registry(root)
    models, loras = {}, {}
    for kind in kinds:
        models[kind] = _import_model(registry, kind, tiny)
        loras[kind] = _import_lora(registry, kind, models[kind], tiny)
    return BenchRegistry(root, registry, models, loras)
