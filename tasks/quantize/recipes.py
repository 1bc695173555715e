"""The named recipes, per model family, with their options and gate defaults.

A recipe's options are typed by their defaults: a plan or ``--param k=v`` may set only options the
recipe has, with values of the same type. ``max_drop`` is the largest accepted loss in the gate's
metric (WER points for Whisper, output-agreement points for any IR, SSIM points for diffusion).

Diffusion (``lcm`` and ``stable-diffusion`` models; sets are prompts): the gate compares the quantized
pipeline's images with the parent's, same prompts and seeds (``eval_images`` of them, from ``--eval``
or else the calibration prompts): the mean SSIM, in points (100 x SSIM), may drop at most
``max_drop`` (default 15: mean SSIM at least 0.85) and the mean PSNR must be at least ``min_psnr_db``
(default 20 dB). Measured here (no real diffusion weights exist offline): on random weights both
recipes keep SSIM >= 0.996 and PSNR >= 36 dB (the tiny test pipelines at 64 px and the SD 1.5 block
layout at 512 px, LCM 4 and SD 20 steps), while an unrelated image of the same model (another seed)
scores SSIM 0.04-0.10 and 13 dB. The defaults sit well below the first, for real weights where INT8
moves fine detail, and far above the second; set them per job (``--max-drop``,
``--param min_psnr_db=``). Generation options: ``steps`` and ``guidance`` 0 mean the model's own
defaults (LCM 4 steps, guidance 8; Stable Diffusion 20 steps, 7.5), ``size`` 0 the UNet's native
size; ``seeds`` images per prompt (seeds 0 .. seeds-1), the same for calibration and the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ovbatch.errors import BadInputError

FAMILIES = {"whisper": "whisper", "generic": "ir", "lcm": "diffusion", "stable-diffusion": "diffusion"}
DATASETS = {"whisper": "audio", "ir": "tensors", "diffusion": "prompts"}
# what diffusion recipes generate with, for calibration and the gate (0: the model's own default)
DIFFUSION_OPTIONS: dict[str, bool | int | float | str] = {
    "steps": 0,
    "guidance": 0.0,
    "size": 0,
    "seeds": 1,
    "eval_images": 16,
    "min_psnr_db": 20.0,
}
DIFFUSION_MAX_DROP = 15.0  # SSIM points


@dataclass(frozen=True)
class Recipe:
    family: str
    name: str
    summary: str
    defaults: dict[str, bool | int | float | str] = field(default_factory=dict)
    calibration: str = "none"  # none, optional, required
    max_drop: float = 0.5
    precision: str = "int8"  # what the new version's manifest says (weights of the largest share)


RECIPES: dict[tuple[str, str], Recipe] = {
    (r.family, r.name): r
    for r in (
        Recipe(
            "whisper",
            "int8-hybrid",
            "encoder INT8 PTQ (SmoothQuant on MatMuls) + decoder INT8 weights",
            {"smooth_quant_alpha": 0.5, "encoder_samples": 128, "keep_float": "stem,layer0,layer1"},
            calibration="required",
        ),
        Recipe("whisper", "int8-weights", "INT8 weights (encoder and decoder), activations in float"),
        Recipe(
            "whisper",
            "int4-weights",
            "decoder INT4 weights (group-wise; AWQ / scale estimation with calibration audio), encoder INT8 weights",
            {"ratio": 1.0, "group_size": 64, "symmetric": False, "awq": False, "scale_estimation": False},
            calibration="optional",
            precision="int4",
        ),
        Recipe(
            "whisper",
            "int8-full",
            "INT8 PTQ of encoder and decoder (the seed post's recipe; breaks long-form decoding)",
            {"smooth_quant_alpha": 0.5, "encoder_samples": 128, "decoder_samples": 300},
            calibration="required",
        ),
        Recipe(
            "diffusion",
            "int8-hybrid",
            "UNet INT8 PTQ (mixed preset, transformer, no bias correction) on UNet inputs captured from "
            "generation runs over the calibration prompts + text encoder and VAE decoder INT8 weights",
            {"unet_samples": 200, **DIFFUSION_OPTIONS},
            calibration="required",
            max_drop=DIFFUSION_MAX_DROP,
        ),
        Recipe(
            "diffusion",
            "int8-weights",
            "INT8 weights (text encoder, UNet, VAE decoder), activations in float",
            dict(DIFFUSION_OPTIONS),
            max_drop=DIFFUSION_MAX_DROP,
        ),
        Recipe(
            "ir",
            "int8",
            "INT8 PTQ from .npz calibration tensors",
            {"preset": "performance", "model_type": "none", "fast_bias_correction": True},
            calibration="required",
            max_drop=2.0,
        ),
        Recipe("ir", "int8-weights", "INT8 weights, activations in float", max_drop=2.0),
        Recipe(
            "ir",
            "int4-weights",
            "INT4 weights (group-wise)",
            {"ratio": 1.0, "group_size": 64, "symmetric": False},
            max_drop=2.0,
            precision="int4",
        ),
        Recipe(
            "ir",
            "int8-accuracy",
            "INT8 PTQ with accuracy control: layers go back to float until the agreement drop fits max_drop",
            {"preset": "performance", "model_type": "none", "max_layers": 50},
            calibration="required",
            max_drop=2.0,
        ),
    )
}


def family_of(model_kind: str) -> str:
    if model_kind not in FAMILIES:
        raise BadInputError(f"models of kind {model_kind!r} cannot be quantized (kinds: {', '.join(FAMILIES)})")
    return FAMILIES[model_kind]


def get(model_kind: str, name: str) -> Recipe:
    family = family_of(model_kind)
    recipe = RECIPES.get((family, name))
    if recipe is None:
        names = ", ".join(n for f, n in RECIPES if f == family)
        raise BadInputError(f"no recipe {name!r} for {model_kind} models; recipes: {names}")
    return recipe


def params_for(recipe: Recipe, given: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The recipe's defaults overridden by ``given``, each checked against its default's type."""
    params = dict(recipe.defaults)
    for key, value in given.items():
        if key not in recipe.defaults:
            known = ", ".join(sorted(recipe.defaults)) or "none"
            raise BadInputError(f"recipe {recipe.name}: no option {key!r} (options: {known})")
        default = recipe.defaults[key]
        params[key] = _coerce(recipe.name, key, value, default)
    return params


def _coerce(recipe: str, key: str, value: Any, default: bool | int | float | str) -> bool | int | float | str:
    problem = f"recipe {recipe}: option {key}={value!r} must be a {type(default).__name__}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise BadInputError(problem)
    if isinstance(default, int):
        text = str(value).strip()
        if isinstance(value, float) or not text.lstrip("-").isdigit():
            raise BadInputError(problem)
        if int(text) < 0 or (int(text) == 0 and default != 0):  # 0 where it is the default: "the model's own"
            raise BadInputError(f"recipe {recipe}: option {key} must be positive, not {text}")
        return int(text)
    if isinstance(default, float):
        try:
            number_f = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number_f = None
        if number_f is None or number_f != number_f:
            raise BadInputError(problem)
        if number_f < 0:
            raise BadInputError(f"recipe {recipe}: option {key} must be 0 or more, not {value!r}")
        return number_f
    return str(value)


def slug(recipe: Recipe, params: dict[str, Any]) -> str:
    """``int4-weights`` or ``int4-weights-group_size128-ratio0.8``: the options set away from the defaults."""
    changed = sorted((k, v) for k, v in params.items() if recipe.defaults.get(k) != v)
    return recipe.name + "".join(f"-{k}{v}" for k, v in changed)
