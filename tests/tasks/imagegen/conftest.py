"""Tiny random Stable Diffusion and LCM pipelines, built from configs (no hub), and imported into a registry.

Weights are random but seeded, so each pipeline is the same on every run; it is saved once under
``.cache/imagegen/`` and rebuilt when ``TINY_VERSION`` changes. The tokenizer is the real CLIP one, so
the text encoder's vocabulary is CLIP's 49,408 tokens (the hidden size stays 32).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.conftest import CACHE, cache_lock, run_shared_tmp

TINY_VERSION = 1  # bump when the builders below change, so cached pipelines are rebuilt
TINY_SIZE = 64  # pixels: the UNet's 32x32 latent times the VAE's scale factor 2


def _text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    from ovbatch.registry.sd.clip_vocab import VOCAB_SIZE

    config: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,  # what genai and diffusers pad prompts to
        "projection_dim": 32,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    return CLIPTextModel(CLIPTextConfig(**config))


def _unet(time_cond_proj_dim: int | None) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=TINY_SIZE,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
    )


def build_tiny_pipeline(kind: str, seed: int = 0) -> Any:
    """A diffusers pipeline of ``kind`` ("lcm" or "stable-diffusion") with seeded random weights."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        LatentConsistencyModelPipeline,
        LCMScheduler,
        StableDiffusionPipeline,
    )

    from ovbatch.registry.sd.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    lcm = kind == "lcm"
    parts: dict[str, Any] = {
        "text_encoder": _text_encoder(),
        "tokenizer": clip_tokenizer(),
        "unet": _unet(32 if lcm else None),
        "vae": _vae(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    schedule = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if lcm:
        return LatentConsistencyModelPipeline(scheduler=LCMScheduler(**schedule), **parts)
    scheduler = EulerDiscreteScheduler(**schedule, timestep_spacing="leading", steps_offset=1)
    return StableDiffusionPipeline(scheduler=scheduler, **parts)


def tiny_pipeline_folder(kind: str) -> Path:
    """The saved diffusers folder of the tiny ``kind`` pipeline, built on first use."""
    folder = CACHE / "imagegen" / f"tiny-{kind}-v{TINY_VERSION}"
    with cache_lock(f"imagegen-tiny-{kind}"):
        if not (folder / "model_index.json").is_file():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # a run killed while saving
            build_tiny_pipeline(kind).save_pretrained(partial, safe_serialization=True)
            partial.rename(folder)
    return folder


@pytest.fixture(scope="session")
def diffusers_pipeline() -> Callable[[str], Any]:
    """A tiny pipeline loaded in diffusers (fp32, CPU): the reference the engine is compared with."""
    loaded: dict[str, Any] = {}

    def load(kind: str) -> Any:
        if kind not in loaded:
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained(tiny_pipeline_folder(kind))
            pipe.set_progress_bar_config(disable=True)
            loaded[kind] = pipe
        return loaded[kind]

    return load


@dataclass(frozen=True)
class ImagegenHome:
    """A registry holding the tiny pipelines, imported through the real import path (optimum export)."""

    registry: Registry
    refs: dict[str, ModelRef]  # by manifest kind: "lcm", "stable-diffusion"


def tiny_registry(tmp_path_factory: pytest.TempPathFactory, root: Path) -> ImagegenHome:
    """A registry of its own under ``root`` (keyring.json, storage/) holding ``tiny-lcm@1`` and
    ``tiny-stable-diffusion@1``. The import (optimum's export of both pipelines, about 40 s each on 2
    cores) runs once per test run (shared by its xdist workers), through the real import path; every
    caller gets a copy."""
    from filelock import FileLock

    template = run_shared_tmp(tmp_path_factory) / "tiny-registry"
    with FileLock(template.with_name("tiny-registry.lock")):
        if not (template / "done").is_file():
            shutil.rmtree(template, ignore_errors=True)
            ring = Keyring(template / "keyring.json")
            ring.add_new_key()
            ring.save()
            registry = Registry(FileStore(template / "storage"), ring)
            for kind in ("lcm", "stable-diffusion"):
                manifest = registry.import_folder(tiny_pipeline_folder(kind), f"tiny-{kind}")
                assert manifest["kind"] == kind, f"the tiny {kind} pipeline was imported as {manifest['kind']!r}"
                assert manifest["version"] == "1", f"tiny-{kind} was imported as version {manifest['version']}"
            (template / "done").touch()
    shutil.copytree(template, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("done"))
    registry = Registry(FileStore(root / "storage"), Keyring.load(root / "keyring.json"))
    return ImagegenHome(registry, {kind: ModelRef(f"tiny-{kind}", "1") for kind in ("lcm", "stable-diffusion")})


@pytest.fixture(scope="session")
def imagegen_home(tmp_path_factory: pytest.TempPathFactory) -> ImagegenHome:
    return tiny_registry(tmp_path_factory, tmp_path_factory.mktemp("imagegen-home"))


F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # exact parity with PyTorch fp32; the default is bf16 on these CPUs
MakeEngine = Callable[..., Any]


@pytest.fixture
def make_engine(imagegen_home: ImagegenHome) -> Iterator[MakeEngine]:
    """Build an ``ImageEngine`` from a freshly decrypted tiny model; released after the test."""
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.tasks.imagegen.components import ROLES
    from ovbatch.tasks.imagegen.engine import ImageEngine

    built: list[Any] = []

    def make(kind: str, config: dict[str, Any] | None = None, **options: Any) -> Any:
        version = decrypt_version(imagegen_home.registry, imagegen_home.refs[kind], roles=ROLES)
        built.append(ImageEngine.from_version(version, "CPU", F32 if config is None else config, **options))
        return built[-1]

    yield make
    for engine in built:
        engine.release()


@pytest.fixture(scope="module")
def f32_engines(imagegen_home: ImagegenHome) -> Iterator[dict[str, Any]]:
    """One f32 engine per tiny model, shared by a test module (generate calls leave no state behind)."""
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.tasks.imagegen.components import ROLES
    from ovbatch.tasks.imagegen.engine import ImageEngine

    engines = {
        kind: ImageEngine.from_version(decrypt_version(imagegen_home.registry, ref, roles=ROLES), "CPU", F32)
        for kind, ref in imagegen_home.refs.items()
    }
    yield engines
    for engine in engines.values():
        engine.release()


def lora_targets(pipe: Any) -> Iterator[tuple[str, Any]]:
    """(kohya key, torch Linear) of the attention projections a tiny LoRA adapts, in UNet and text encoder."""
    import torch

    parts = (
        ("lora_unet_", pipe.unet, ("to_q", "to_k", "to_v", "to_out.0")),
        ("lora_te_", pipe.text_encoder, ("q_proj", "v_proj")),
    )
    for prefix, model, ends in parts:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(ends):
                yield prefix + name.replace(".", "_"), module


def tiny_lora(pipe: Any, rank: int = 4, alpha: float = 2.0, seed: int = 7) -> dict[str, Any]:
    """A kohya-style LoRA (lora_down, lora_up, alpha per layer) for ``pipe``, as torch tensors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, module in lora_targets(pipe):
        tensors[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.3
        tensors[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.3
        tensors[key + ".alpha"] = torch.tensor(alpha)
    return tensors
