"""Tiny random Stable Diffusion 1.x pipelines, built offline from configs, and their single-file form.

No pretrained diffusion weights can be had here (shared/OFFLINE.md), so tests build the SD 1.x
architecture at toy width with random weights and the real CLIP tokenizer. ``ldm_state_dict`` writes
such a pipeline in the original (LDM / A1111 / civitai) single-file key layout: the inverse of
diffusers' ``convert_ldm_*_checkpoint``, generalised from diffusers' script
``scripts/convert_diffusers_to_original_stable_diffusion.py`` to any number of levels and layers.

The tiny configs follow the SD 1.x conventions that weights cannot show (8 attention heads per UNet
transformer, 32 norm groups, 64-wide CLIP heads), so a converted checkpoint computes what the
original pipeline computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
VAE_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
}
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49_408,  # the real CLIP vocabulary, so the real tokenizer's ids fit
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
PNDM_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def tiny_sd_components(seed: int = 0) -> dict[str, Any]:
    """UNet, VAE, text encoder, tokenizer and PNDM scheduler of a tiny SD 1.x, random weights from ``seed``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ovbatch.registry.sd.clip_vocab import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    for model in (unet, vae, text_encoder):
        model.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "scheduler": PNDMScheduler(**PNDM_CONFIG),
    }


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """A diffusers ``StableDiffusionPipeline`` folder (model_index.json + components)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **tiny_sd_components(seed), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return folder


# -- diffusers -> LDM single-file layout --------------------------------------------------
_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTN = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))


def _unet_prefixes(config: Any) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) for every block of a UNet2DConditionModel config."""
    n = config.layers_per_block
    levels = len(config.block_out_channels)
    pairs = [("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0.")]
    pairs += [("time_embedding.linear_2.", "time_embed.2."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]
    pairs += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1.")]
    pairs += [("mid_block.resnets.1.", "middle_block.2.")]
    for k in range(levels):
        for j in range(n):
            pairs.append((f"down_blocks.{k}.resnets.{j}.", f"input_blocks.{k * (n + 1) + j + 1}.0."))
            pairs.append((f"down_blocks.{k}.attentions.{j}.", f"input_blocks.{k * (n + 1) + j + 1}.1."))
        pairs.append((f"down_blocks.{k}.downsamplers.0.conv.", f"input_blocks.{(k + 1) * (n + 1)}.0.op."))
        has_attention = config.up_block_types[k].startswith("CrossAttn")
        for j in range(n + 1):
            pairs.append((f"up_blocks.{k}.resnets.{j}.", f"output_blocks.{k * (n + 1) + j}.0."))
            pairs.append((f"up_blocks.{k}.attentions.{j}.", f"output_blocks.{k * (n + 1) + j}.1."))
        pairs.append((f"up_blocks.{k}.upsamplers.0.", f"output_blocks.{k * (n + 1) + n}.{2 if has_attention else 1}."))
    return pairs


def _rename(key: str, prefixes: list[tuple[str, str]]) -> str:
    for hf, ldm in prefixes:
        if key.startswith(hf):
            return ldm + key[len(hf) :]
    raise KeyError(f"no LDM name for diffusers key {key!r}")


def unet_to_ldm(unet: Any) -> dict[str, Any]:
    prefixes = _unet_prefixes(unet.config)
    out = {}
    for key, tensor in unet.state_dict().items():
        new = _rename(key, prefixes)
        if ".resnets." in key:
            for hf, ldm in _RESNET:
                new = new.replace(f".{hf}.", f".{ldm}.")
        out["model.diffusion_model." + new] = tensor
    return out


def vae_to_ldm(vae: Any) -> dict[str, Any]:
    levels = len(vae.config.block_out_channels)
    prefixes = [
        ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
        ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
    ]
    for part in ("encoder", "decoder"):
        prefixes += [(f"{part}.mid_block.resnets.{i}.", f"{part}.mid.block_{i + 1}.") for i in range(2)]
        prefixes += [(f"{part}.conv_norm_out.", f"{part}.norm_out.")]
    for i in range(levels):
        prefixes += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")]
        prefixes += [(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")]
        prefixes += [(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")]
        prefixes += [(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")]
    out = {}
    for key, tensor in vae.state_dict().items():
        new = _rename(key, prefixes + [("", "")])
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new:
            for hf, ldm in _VAE_ATTN:
                new = new.replace(f".attn_1.{hf}", f".attn_1.{ldm}")
            if tensor.ndim == 2:  # LDM keeps the attention projections as 1x1 convolutions
                tensor = tensor[:, :, None, None]
        out["first_stage_model." + new] = tensor
    return out


def text_encoder_to_ldm(text_encoder: Any) -> dict[str, Any]:
    import torch

    out = {"cond_stage_model.transformer." + k: v for k, v in text_encoder.state_dict().items()}
    positions = text_encoder.config.max_position_embeddings
    # real SD 1.x files carry this buffer; the converter must drop it
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return out


def ldm_state_dict(components: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's weights under the original SD 1.x single-file key names (as A1111/civitai ship them)."""
    import torch

    state = unet_to_ldm(components["unet"]) | vae_to_ldm(components["vae"])
    state |= text_encoder_to_ldm(components["text_encoder"])
    state["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)  # LDM training buffers ride along in real files
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def write_tiny_sd_checkpoint(path: Path, seed: int = 0, dtype: Any = None) -> tuple[Path, dict[str, Any]]:
    """Write a tiny SD 1.x single-file ``.safetensors``; return it and the components it was made from."""
    from safetensors.torch import save_file

    components = tiny_sd_components(seed)
    state = ldm_state_dict(components)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path, components
