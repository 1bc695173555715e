"""Single-file Stable Diffusion 1.x checkpoints (A1111 / civitai ``.safetensors``) -> a diffusers folder.

Such a file holds the original LDM key layout: ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE) and ``cond_stage_model.transformer.*`` (CLIP text encoder), and no
configs. The configs come from the SD 1.5 ones shipped in ``sd15/``, with every width, depth and
block type that the tensors' shapes show taken from the file (so fine-tunes and tiny test models
convert alike); the key renaming is diffusers' own ``convert_ldm_*_checkpoint``. The tokenizer is
rebuilt from the committed CLIP vocabulary. Nothing is downloaded and nothing is unpickled: only
the safetensors format is read, after its header has been checked against the file's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ovbatch.errors import CorruptModelError, InputError, NotAModelError
from ovbatch.registry import safetensors_io

UNET, VAE, CLIP = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
SUPPORTED = "only SD 1.x single-file .safetensors checkpoints are supported"
CLIP_VOCAB_SIZE = 49_408
CLIP_HEAD_WIDTH = 64  # CLIP ViT-L/14's text transformer: 768 wide, 12 heads
# diffusers' names (infer_diffusers_model_type) for the families people mistake for SD 1.x
FAMILIES = {
    "inpainting": "an SD 1.x inpainting checkpoint (9 input channels)",
    "instruct-pix2pix": "an InstructPix2Pix checkpoint (8 input channels)",
    "v2": "an SD 2.x checkpoint (1024-wide cross-attention)",
    "inpainting_v2": "an SD 2.x inpainting checkpoint",
    "xl_base": "an SDXL checkpoint (conditioner.embedders.*)",
    "xl_refiner": "an SDXL refiner checkpoint (conditioner.embedders.*)",
    "xl_inpaint": "an SDXL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 (SDXL) checkpoint",
    "upscale": "an SD x4 upscaler checkpoint",
    "controlnet": "a ControlNet",
}


class _Shape:
    """Stands in for a tensor where diffusers' type detection only looks at ``.shape``."""

    def __init__(self, shape: list[int]):
        self.shape = tuple(shape)


def check_single_file(path: Path) -> dict[str, list[int]]:
    """Refuse, naming the file, anything but a complete SD 1.x ``.safetensors``; return its tensor shapes."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise NotAModelError(
            f"{path} is a pickled PyTorch checkpoint ({path.suffix}): ovbatch never unpickles files (loading a "
            f"pickle runs code from it); use the model's .safetensors release instead ({SUPPORTED})"
        )
    if path.suffix.lower() != ".safetensors":
        raise NotAModelError(
            f"{path} is not a folder: import takes a model folder, or a single-file SD 1.x checkpoint (.safetensors)"
        )
    shapes = safetensors_io.shapes(path)
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_" in k or ".lora." in k for k in shapes):
        raise NotAModelError(f"{path} is a LoRA adapter, not a model: import it with `--lora` (and `--base MODEL`)")
    family = _family(shapes)
    if family is not None:
        raise NotAModelError(f"{path} is {family}: {SUPPORTED}")
    missing = [what for prefix, what in _PARTS if not any(k.startswith(prefix) for k in shapes)]
    if missing:
        raise NotAModelError(
            f"{path} is not a complete SD 1.x checkpoint: it has no {' and no '.join(missing)} ({SUPPORTED})"
        )
    return shapes


_PARTS = (
    (UNET, "UNet (model.diffusion_model.*)"),
    (VAE, "VAE (first_stage_model.*)"),
    (CLIP, "CLIP text encoder (cond_stage_model.transformer.*)"),
)


def _family(shapes: dict[str, list[int]]) -> str | None:
    """What the file is when it is not an SD 1.x text-to-image checkpoint; None when it may be one."""
    if any(k.startswith("conditioner.embedders.") for k in shapes):
        return "an SDXL checkpoint (conditioner.embedders.*)"
    if any(k.startswith("cond_stage_model.model.") for k in shapes):
        return "an SD 2.x checkpoint (OpenCLIP text encoder, cond_stage_model.model.*)"
    infer_diffusers_model_type = _diffusers().loaders.single_file_utils.infer_diffusers_model_type

    try:
        kind = infer_diffusers_model_type({k: _Shape(v) for k, v in shapes.items()})
    except Exception:  # diffusers looks at values of a few exotic families: none of them is SD 1.x
        kind = "unknown"
    if kind == "v1":
        if not any(k.startswith(UNET + "input_blocks.") for k in shapes) and any(k.startswith(UNET) for k in shapes):
            return "not an SD UNet (model.diffusion_model.* without input_blocks: a DiT such as SD3 or Flux)"
        return None
    return FAMILIES.get(kind, f"a {kind} checkpoint (as diffusers classifies it)")


def _diffusers() -> Any:
    try:
        import diffusers.loaders.single_file_utils  # noqa: F401  (the submodule, for the attribute path)
    except ImportError as exc:
        raise InputError(
            f"converting a single-file SD checkpoint needs the export extra: pip install 'ovbatch[export]' ({exc})"
        ) from exc
    return diffusers


# -- configs from shapes --------------------------------------------------------------------
def _shipped(component: str) -> dict[str, Any]:
    data = resources.files(__package__).joinpath("sd15", component, "config.json").read_text()
    config: dict[str, Any] = json.loads(data)
    return config


def _indices(shapes: dict[str, list[int]], prefix: str) -> list[int]:
    found = {k[len(prefix) :].split(".")[0] for k in shapes if k.startswith(prefix)}
    return sorted(int(i) for i in found if i.isdigit())


def _need(shapes: dict[str, list[int]], key: str, path: Path) -> list[int]:
    if key not in shapes:
        raise NotAModelError(f"{path}: tensor {key} is missing, which every SD 1.x checkpoint has ({SUPPORTED})")
    return shapes[key]


def unet_config(shapes: dict[str, list[int]], path: Path) -> dict[str, Any]:
    config = _shipped("unet")
    conv_in = _need(shapes, UNET + "input_blocks.0.0.weight", path)
    n_inputs = len(_indices(shapes, UNET + "input_blocks."))
    levels = 1 + sum(UNET + f"input_blocks.{i}.0.op.weight" in shapes for i in range(n_inputs))
    per_level = n_inputs // levels  # layers_per_block resnets + one downsampler (or conv_in) per level
    if per_level < 2 or n_inputs != levels * per_level:
        raise NotAModelError(f"{path}: {n_inputs} UNet input blocks over {levels} levels is no SD 1.x UNet layout")
    firsts = [k * per_level + 1 for k in range(levels)]
    attention = [UNET + f"input_blocks.{i}.1.proj_in.weight" in shapes for i in firsts]
    up_attention = [UNET + f"output_blocks.{k * per_level}.1.proj_in.weight" in shapes for k in range(levels)]
    to_k = sorted(k for k in shapes if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    if not to_k:
        raise NotAModelError(f"{path}: the UNet has no cross-attention, so it is not a text-to-image SD 1.x UNet")
    first_attn = (
        UNET + f"input_blocks.{firsts[attention.index(True)]}.1." if any(attention) else UNET + "middle_block.1."
    )
    config.update(
        in_channels=conv_in[1],
        out_channels=_need(shapes, UNET + "out.2.weight", path)[0],
        block_out_channels=[_need(shapes, UNET + f"input_blocks.{i}.0.out_layers.3.weight", path)[0] for i in firsts],
        layers_per_block=per_level - 1,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
        cross_attention_dim=shapes[to_k[0]][1],
        transformer_layers_per_block=len(_indices(shapes, first_attn + "transformer_blocks.")),
        use_linear_projection=len(_need(shapes, first_attn + "proj_in.weight", path)) == 2,
    )
    _check_widths(config["block_out_channels"], config["attention_head_dim"], config["norm_num_groups"], path)
    return config


def _check_widths(widths: list[int], heads: int, groups: int, path: Path) -> None:
    # head count and group count are not in the weights: SD 1.x fixes them, and the widths must fit them
    odd = [w for w in widths if w % heads or w % groups]
    if odd:
        raise NotAModelError(
            f"{path}: UNet widths {widths} do not split into SD 1.x's {heads} attention heads and {groups} "
            f"norm groups ({SUPPORTED})"
        )


def vae_config(shapes: dict[str, list[int]], path: Path) -> dict[str, Any]:
    config = _shipped("vae")
    levels = len(_indices(shapes, VAE + "encoder.down."))
    config.update(
        in_channels=_need(shapes, VAE + "encoder.conv_in.weight", path)[1],
        out_channels=_need(shapes, VAE + "decoder.conv_out.weight", path)[0],
        block_out_channels=[
            _need(shapes, VAE + f"encoder.down.{i}.block.0.conv1.weight", path)[0] for i in range(levels)
        ],
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=len(_indices(shapes, VAE + "encoder.down.0.block.")),
        latent_channels=_need(shapes, VAE + "post_quant_conv.weight", path)[0],
    )
    if config["latent_channels"] != unet_latents(shapes):
        raise NotAModelError(
            f"{path}: the VAE makes {config['latent_channels']} latent channels, the UNet takes {unet_latents(shapes)}"
        )
    return config


def unet_latents(shapes: dict[str, list[int]]) -> int:
    return shapes[UNET + "input_blocks.0.0.weight"][1]


def text_encoder_config(shapes: dict[str, list[int]], path: Path) -> dict[str, Any]:
    config = _shipped("text_encoder")
    prefix = CLIP + "text_model."
    vocab, hidden = _need(shapes, prefix + "embeddings.token_embedding.weight", path)
    if vocab != CLIP_VOCAB_SIZE or hidden % CLIP_HEAD_WIDTH:
        raise NotAModelError(
            f"{path}: the text encoder has {vocab} tokens x {hidden} wide; SD 1.x's CLIP has {CLIP_VOCAB_SIZE} "
            f"tokens and a width that is a multiple of {CLIP_HEAD_WIDTH} ({SUPPORTED})"
        )
    config.update(
        vocab_size=vocab,
        hidden_size=hidden,
        projection_dim=hidden,
        num_attention_heads=hidden // CLIP_HEAD_WIDTH,
        num_hidden_layers=len(_indices(shapes, prefix + "encoder.layers.")),
        intermediate_size=_need(shapes, prefix + "encoder.layers.0.mlp.fc1.weight", path)[0],
        max_position_embeddings=_need(shapes, prefix + "embeddings.position_embedding.weight", path)[0],
    )
    return config


# -- conversion -----------------------------------------------------------------------------
def _normalise_clip_keys(shapes: dict[str, list[int]]) -> dict[str, str]:
    """File key -> key in the transformers >= 4.21 layout (old files lack the ``text_model.`` level)."""
    renames = {k: k for k in shapes}
    if not any(k.startswith(CLIP + "text_model.") for k in shapes):
        renames.update({k: CLIP + "text_model." + k[len(CLIP) :] for k in shapes if k.startswith(CLIP)})
    return renames


def _load(path: Path, renames: dict[str, str]) -> dict[str, Any]:
    """The UNet, VAE and text encoder tensors (EMA copies and training buffers stay unread), as float32."""
    from safetensors import safe_open

    wanted = [k for k, new in renames.items() if new.startswith((UNET, VAE, CLIP))]
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {renames[k]: f.get_tensor(k) for k in wanted}
    except Exception as exc:
        raise CorruptModelError(f"{path} is corrupt: safetensors cannot read it ({exc})") from exc
    return {k: t.float() if t.is_floating_point() else t for k, t in tensors.items()}


def _check_against(build: Callable[[], Any], state: dict[str, Any], what: str, path: Path) -> None:
    """Every tensor the diffusers/transformers model expects, in its shape, and nothing else."""
    import torch

    with torch.device("meta"):  # shapes only: no memory, no random init
        model = build()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if state.get(k) is None)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(k for k in expected if state.get(k) is not None and tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CorruptModelError(f"{path}: its {what} does not convert to an SD 1.x {what} ({detail})")


def convert_state(path: Path, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """Configs and diffusers-layout state dicts of the checkpoint's UNet, VAE and text encoder."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    renames = _normalise_clip_keys(shapes)
    normalised = {renames[k]: v for k, v in shapes.items()}
    configs = {
        "unet": unet_config(normalised, path),
        "vae": vae_config(normalised, path),
        "text_encoder": text_encoder_config(normalised, path),
    }
    if configs["unet"]["cross_attention_dim"] != configs["text_encoder"]["hidden_size"]:
        raise NotAModelError(
            f"{path}: the UNet attends to {configs['unet']['cross_attention_dim']}-wide text features, the text "
            f"encoder makes {configs['text_encoder']['hidden_size']}-wide ones"
        )
    checkpoint = _load(path, renames)
    states = {
        "unet": convert_ldm_unet_checkpoint(checkpoint, configs["unet"]),
        "vae": convert_ldm_vae_checkpoint(checkpoint, configs["vae"]),
        "text_encoder": convert_ldm_clip_checkpoint(checkpoint),
    }
    states["text_encoder"].pop("text_model.embeddings.position_ids", None)  # a buffer, rebuilt by transformers
    return {"configs": configs, "states": states}


def convert_to_diffusers(path: Path, out: Path) -> dict[str, Any]:
    """Write the checkpoint at ``path`` as a diffusers StableDiffusionPipeline folder ``out``; return its configs."""
    _diffusers()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from ovbatch.registry.sd.clip_vocab import clip_tokenizer

    converted = convert_state(path, check_single_file(path))
    configs, states = converted["configs"], converted["states"]
    text_config = CLIPTextConfig(**{k: v for k, v in configs["text_encoder"].items() if k != "architectures"})
    _check_against(lambda: UNet2DConditionModel.from_config(configs["unet"]), states["unet"], "UNet", path)
    _check_against(lambda: AutoencoderKL.from_config(configs["vae"]), states["vae"], "VAE", path)
    _check_against(lambda: CLIPTextModel(text_config), states["text_encoder"], "text encoder", path)

    sd15 = resources.files(__package__).joinpath("sd15")
    out.mkdir(parents=True)
    (out / "model_index.json").write_text(sd15.joinpath("model_index.json").read_text())
    (out / "scheduler").mkdir()
    (out / "scheduler" / "scheduler_config.json").write_text(
        sd15.joinpath("scheduler", "scheduler_config.json").read_text()
    )
    weights = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors"}
    for component, state in states.items():
        folder = out / component
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(configs[component], indent=2, sort_keys=True))
        tensors = {k: v.contiguous() for k, v in state.items()}
        save_file(tensors, str(folder / weights.get(component, "model.safetensors")))
    clip_tokenizer(model_max_length=configs["text_encoder"]["max_position_embeddings"]).save_pretrained(
        out / "tokenizer"
    )
    return configs
