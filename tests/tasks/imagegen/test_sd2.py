"""The other SD families the issue names, built tiny from their configs' conventions, imported as
diffusers folders and compared with diffusers at f32: SD 2.x (v-prediction, linear attention
projections, GELU text encoder, DDIM) and SD-turbo (trailing Euler, one step, no guidance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.tasks.imagegen.components import ROLES
from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest
from tests.tasks.imagegen.conftest import F32, TINY_SIZE, ImagegenHome, _text_encoder, _vae
from tests.tasks.imagegen.test_engine import assert_parity, reference

pytestmark = [
    pytest.mark.slow,
    # torch's Tensor.__array__ under numpy 2 when diffusers' DDIM/Euler schedulers index their arrays
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def _pipeline(family: str) -> Any:
    import torch
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from ovbatch.registry.sd.clip_vocab import clip_tokenizer

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 2,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),  # SD 2.x: a head count per block (5, 10, 20, 20 in the real one)
        use_linear_projection=True,
        norm_num_groups=32,
    )
    text_encoder = _text_encoder()
    text_encoder.config.hidden_act = "gelu"  # OpenCLIP ViT-H's activation
    schedule = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if family == "sd2":
        scheduler: Any = DDIMScheduler(**schedule, prediction_type="v_prediction", clip_sample=False,
                                       set_alpha_to_one=False)  # fmt: skip
    else:
        scheduler = EulerDiscreteScheduler(**schedule, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("family", "request_"),
    [
        ("sd2", ImageRequest(prompt="a castle on a hill", seed=4, steps=3, guidance=7.5, width=64, height=64)),
        ("sd-turbo", ImageRequest(prompt="a castle on a hill", seed=4, steps=1, guidance=0.0, width=64, height=64)),
    ],
)
def test_sd2_and_turbo_folders_import_and_match_diffusers(
    family: str, request_: ImageRequest, imagegen_home: ImagegenHome, tmp_path: Path
) -> None:
    pipe = _pipeline(family)
    folder = tmp_path / family
    pipe.save_pretrained(folder, safe_serialization=True)
    manifest = imagegen_home.registry.import_folder(folder, f"tiny-{family}")
    assert manifest["kind"] == "stable-diffusion", manifest["kind"]
    version = decrypt_version(imagegen_home.registry, ModelRef(manifest["name"], manifest["version"]), roles=ROLES)
    engine = ImageEngine.from_version(version, "CPU", F32, static_cfg=request_.guidance > 1)
    try:
        ours = engine.generate(request_).pixels
    finally:
        engine.release()
    assert_parity(ours, reference(pipe, request_), f"{family} f32")
