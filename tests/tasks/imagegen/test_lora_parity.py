"""A LoRA imported into the registry (kohya or PEFT form) gives diffusers' image with that LoRA fused.

The adapter goes the production way: ``Registry.import_lora`` (checked against the base, converted to
kohya names with alpha == rank and its scale folded in, encrypted), decrypted, handed to the
``ImageEngine``. The reference is diffusers with ``w * alpha / rank * up @ down`` added to each
adapted weight, which is what ``fuse_lora`` does (diffusers' ``load_lora_weights`` needs peft, which
this environment lacks; where peft is installed the test uses it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovbatch.registry import lora
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.tasks.imagegen.engine import ImageRequest
from tests.tasks.imagegen.conftest import TINY_SIZE, ImagegenHome, MakeEngine, lora_targets, tiny_lora
from tests.tasks.imagegen.test_engine import reference

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

REQUEST = ImageRequest(prompt="a photo of a cat", seed=11, steps=4, guidance=7.5, width=TINY_SIZE, height=TINY_SIZE)


def fused(pipe: Any, kohya: dict[str, Any], weight: float) -> Any:
    """``pipe`` with the kohya LoRA fused at ``weight``: diffusers' fuse_lora, or its arithmetic without peft."""
    import torch

    merged = copy.deepcopy(pipe)
    try:
        import peft  # noqa: F401
    except ImportError:
        with torch.no_grad():
            for key, module in lora_targets(merged):
                down, up = kohya[key + ".lora_down.weight"], kohya[key + ".lora_up.weight"]
                module.weight += weight * float(kohya[key + ".alpha"]) / down.shape[0] * (up @ down)
        return merged
    merged.load_lora_weights(dict(kohya), adapter_name="style")
    merged.fuse_lora(lora_scale=weight)
    return merged


def peft_form(kohya: dict[str, Any], alpha: float, rank: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The same adapter as diffusers' save_lora_weights writes it: PEFT names, lora_alpha in the metadata."""
    tensors = {}
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            continue
        prefix, component = ("lora_unet_", "unet") if key.startswith("lora_unet_") else ("lora_te_", "text_encoder")
        layer, part = key[len(prefix) :].split(".", 1)
        tensors[f"{component}.{_dotted(layer, component)}.{'lora_A' if 'down' in part else 'lora_B'}.weight"] = value
    config = {f"{c}.{k}": v for c in ("unet", "text_encoder") for k, v in (("r", rank), ("lora_alpha", alpha))}
    return tensors, {"format": "pt", "lora_adapter_metadata": json.dumps(config)}


def _dotted(layer: str, component: str) -> str:
    """kohya's underscored module name back to the module path (module names hold underscores too)."""
    words = {"down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out"}
    words |= {"text_model", "self_attn", "q_proj", "v_proj", "k_proj", "out_proj"}
    parts, out = layer.split("_"), []
    while parts:
        pair = "_".join(parts[:2])
        if len(parts) > 1 and pair in words:
            out.append(pair)
            parts = parts[2:]
        else:
            out.append(parts.pop(0))
    return ".".join(out)


def assert_parity(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """genai truncates to uint8 where diffusers rounds: at f32, 99.9 % of pixels are within 1 of it."""
    diff = np.abs(ours.astype(np.int64) - np.round(theirs).astype(np.int64))
    assert np.mean(diff <= 1) >= 0.999, f"{what}: {np.mean(diff <= 1):.3%} of pixels within 1 (max {diff.max()})"


def test_kohya_and_peft_loras_match_diffusers_fused(
    imagegen_home: ImagegenHome, make_engine: MakeEngine, diffusers_pipeline: Any, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    pipe = diffusers_pipeline("stable-diffusion")
    kohya = tiny_lora(pipe, rank=4, alpha=2.0)  # alpha / rank = 0.5, which genai itself would not apply
    save_file(kohya, str(tmp_path / "style.safetensors"))
    peft, metadata = peft_form(kohya, alpha=2.0, rank=4)
    save_file(peft, str(tmp_path / "style-peft.safetensors"), metadata=metadata)

    registry, base = imagegen_home.registry, imagegen_home.refs["stable-diffusion"]
    stored = {}
    for name in ("style", "style-peft"):
        manifest = registry.import_lora(tmp_path / f"{name}.safetensors", f"parity-{name}", base=base)
        info = manifest["lora"]
        assert info["matched"] == info["modules"] == len(list(lora_targets(pipe))), info
        version = decrypt_version(registry, ModelRef(manifest["name"], manifest["version"]))
        stored[name] = version.data(lora.ROLE).tobytes()
    assert stored["style"] == stored["style-peft"], "the kohya and PEFT forms must store the same adapter"

    engine = make_engine("stable-diffusion", adapters={"style": stored["style"]})
    for weight in (1.0, 0.0, 0.7):  # one adapter: genai switches its alpha without a rebuild
        pixels = engine.generate(replace(REQUEST, adapters=(("style", weight),))).pixels
        assert_parity(pixels, reference(fused(pipe, kohya, weight), REQUEST), f"LoRA weight {weight}")
    plain = reference(pipe, REQUEST)
    with_lora = reference(fused(pipe, kohya, 1.0), REQUEST)
    assert np.mean(np.abs(with_lora - plain)) > 2, "the LoRA changes too little for this test to mean anything"
