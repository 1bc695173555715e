"""Single-file SD 1.x checkpoints (A1111/civitai .safetensors): converted offline and exported; others refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ovbatch.errors import CorruptModelError, NotAModelError
from ovbatch.registry import safetensors_io
from ovbatch.registry.loader import decrypt_version, verify
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.registry.sd import single_file
from tests.registry.conftest import SDHome, TinySD, run_ovbatch


def _write(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    path.write_bytes(safetensors_io.dumps({k: np.zeros(s, np.float16) for k, s in shapes.items()}))
    return path


SD1_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (32, 3, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (8, 8),
}


@pytest.mark.slow
def test_converted_weights_equal_the_original_pipeline(tiny_sd: TinySD, tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    configs = single_file.convert_to_diffusers(tiny_sd.checkpoint, tmp_path / "hf")
    unet = configs["unet"]
    assert (unet["block_out_channels"], unet["layers_per_block"], unet["cross_attention_dim"]) == ([32, 64], 1, 64)
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D", "DownBlock2D"], "block types come from the shapes"
    assert configs["text_encoder"]["num_attention_heads"] == 1 and configs["vae"]["layers_per_block"] == 1

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "hf")
    for component in ("unet", "vae", "text_encoder"):
        original = tiny_sd.components[component].state_dict()
        converted = getattr(pipe, component).state_dict()
        assert converted.keys() == original.keys(), f"{component}: keys differ: {converted.keys() ^ original.keys()}"
        differing = [k for k in original if not torch.allclose(original[k], converted[k], rtol=0, atol=0)]
        assert not differing, f"{component}: converted weights differ from the original: {differing[:5]}"
    ids = pipe.tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], "the tokenizer is not the real CLIP one"


@pytest.mark.slow
def test_sd15_sized_checkpoint_derives_the_shipped_configs() -> None:
    """SD 1.5's real architecture (on the meta device: shapes only) gives back SD 1.5's configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.sd_tiny import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm

    shipped = {c: single_file._shipped(c) for c in ("unet", "vae", "text_encoder")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(shipped["unet"])
        vae = AutoencoderKL.from_config(shipped["vae"])
        text = CLIPTextModel(
            CLIPTextConfig(**{k: v for k, v in shipped["text_encoder"].items() if k != "architectures"})
        )
    state = unet_to_ldm(unet) | vae_to_ldm(vae) | text_encoder_to_ldm(text)
    shapes = {k: list(v.shape) for k, v in state.items()}
    path = Path("sd15.safetensors")
    assert single_file._family(shapes) is None
    assert single_file.unet_config(shapes, path) == shipped["unet"]
    assert single_file.vae_config(shapes, path) == shipped["vae"]
    assert single_file.text_encoder_config(shapes, path) == shipped["text_encoder"]


@pytest.mark.slow
def test_fp16_checkpoint_converts_to_float32(tmp_path: Path) -> None:
    import torch

    from tests.sd_tiny import write_tiny_sd_checkpoint

    path, components = write_tiny_sd_checkpoint(tmp_path / "half.safetensors", seed=3, dtype=torch.float16)
    states = single_file.convert_state(path, single_file.check_single_file(path))["states"]
    expected = components["unet"].state_dict()["down_blocks.0.attentions.0.proj_in.weight"].half().float()
    got = states["unet"]["down_blocks.0.attentions.0.proj_in.weight"]
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.slow
def test_single_file_import_round_trip(sd_home: SDHome, tiny_sd: TinySD) -> None:
    """`ovbatch models import x.safetensors`: exported, encrypted, and the IR computes what the original does."""
    import openvino as ov
    import torch

    assert "imported sd-tiny@1: stable-diffusion" in sd_home.import_output, sd_home.import_output
    registry = sd_home.registry
    manifest = registry.manifest(ModelRef.parse("sd-tiny@1"))
    assert manifest["source"]["type"] == "sd1-single-file"
    roles = {f["role"] for f in manifest["files"]}
    assert {"unet/openvino_model.xml", "text_encoder/openvino_model.xml", "vae_decoder/openvino_model.xml"} <= roles
    assert "tokenizer/openvino_tokenizer.xml" in roles
    assert json.loads(registry.store.get_bytes("models/sd-tiny/1/manifest.json"))["kind"] == "stable-diffusion"
    report = verify(registry, ModelRef.parse("sd-tiny@1"), "CPU")
    assert "unet/openvino_model.xml" in report["models"]

    version = decrypt_version(registry, ModelRef.parse("sd-tiny@1"))
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ids = np.array([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70], dtype=np.int64)
    text = core.compile_model(version.read_model(core, "text_encoder/openvino_model.xml"), "CPU", f32)
    hidden_ir = text({"input_ids": ids})[0]
    with torch.no_grad():
        hidden_pt = tiny_sd.components["text_encoder"](torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden_ir, hidden_pt, atol=1e-4, err_msg="text encoder IR differs from the original")

    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    unet = core.compile_model(version.read_model(core, "unet/openvino_model.xml"), "CPU", f32)
    inputs = {"sample": latents, "timestep": np.array([500], np.int64), "encoder_hidden_states": hidden_pt}
    noise_ir = unet(inputs)[0]
    with torch.no_grad():
        noise_pt = tiny_sd.components["unet"](
            torch.from_numpy(latents), 500, encoder_hidden_states=torch.from_numpy(hidden_pt)
        ).sample.numpy()
    np.testing.assert_allclose(noise_ir, noise_pt, atol=1e-4, err_msg="UNet IR differs from the original")
    version.wipe()


@pytest.mark.slow
def test_a_single_file_model_makes_the_original_pipelines_images(
    sd_home: SDHome, tiny_sd: TinySD, tmp_path: Path
) -> None:
    """The imported checkpoint through `ovbatch txt2img` (default precision) and an f32 engine: the
    images of a diffusers pipeline of the weights the file was written from."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from ovbatch.tasks.imagegen.components import ROLES
    from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest
    from tests.tasks.imagegen.test_engine import assert_parity, compare, reference

    pipe = StableDiffusionPipeline(
        **tiny_sd.components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    request = ImageRequest(prompt="a red fox in the snow", seed=5, steps=3, guidance=7.5, width=64, height=64)
    theirs = reference(pipe, request)

    out = tmp_path / "out"
    size = ("--width", "64", "--height", "64", "--steps", "3", "--guidance", "7.5", "--seeds", "5")
    run_ovbatch(
        sd_home.env, sd_home.cwd, "txt2img", request.prompt, "--model", "sd-tiny", *size, "--out", str(out), "--local"
    )
    with Image.open(out / "0001-5-a-red-fox-in-the-snow.png") as png:
        made = np.asarray(png.convert("RGB"))
    _, psnr, worst = compare(made, theirs)
    assert psnr >= 35.0, f"`ovbatch txt2img` with the single-file model: PSNR {psnr:.1f} dB (max diff {worst})"

    version = decrypt_version(sd_home.registry, ModelRef.parse("sd-tiny@1"), roles=ROLES)
    engine = ImageEngine.from_version(version, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    try:
        assert_parity(engine.generate(request).pixels, theirs, "single-file import f32")
    finally:
        engine.release()


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {
                "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
                "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (8,),
                "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
            },
            "is an SDXL checkpoint",
        ),
        (
            {"cond_stage_model.model.token_embedding.weight": (8, 8), **SD1_KEYS},
            "is an SD 2.x checkpoint (OpenCLIP",
        ),
        ({**SD1_KEYS, "model.diffusion_model.input_blocks.0.0.weight": (32, 9, 3, 3)}, "SD 1.x inpainting"),
        ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (8, 8)}, "not an SD UNet"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32)}, "--lora"),
        (
            {k: v for k, v in SD1_KEYS.items() if not k.startswith("first_stage")},
            "not a complete SD 1.x checkpoint: it has no VAE (first_stage_model.*)",
        ),
    ],
    ids=["sdxl", "sd2", "inpainting", "sd3", "lora", "no-vae"],
)
def test_other_checkpoints_are_refused_by_name(
    registry: Registry, tmp_path: Path, keys: dict[str, tuple[int, ...]], expected: str
) -> None:
    path = _write(tmp_path / "model.safetensors", keys)
    with pytest.raises(NotAModelError) as caught:
        registry.import_folder(path, "x")
    message = str(caught.value)
    assert expected in message and str(path) in message, message
    assert "--lora" in message or "only SD 1.x single-file .safetensors checkpoints are supported" in message
    assert list(registry.store.list()) == [], "a refused import left objects in storage"


def test_ckpt_is_refused_and_never_unpickled(registry: Registry, tmp_path: Path) -> None:
    import pickle

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('unpickled!')",))

    for name in ("model.ckpt", "renamed.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"state_dict": Boom()}, protocol=4))
        with pytest.raises(NotAModelError, match="never unpickles") as caught:
            registry.import_folder(path, "x")
        assert str(path) in str(caught.value)
    assert list(registry.store.list()) == []


def test_truncated_or_garbage_file_is_corrupt(registry: Registry, tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.safetensors", SD1_KEYS).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(CorruptModelError, match=r"is truncated: its header promises \d+ bytes of tensor data"):
        registry.import_folder(cut, "x")
    header_cut = tmp_path / "header.safetensors"
    header_cut.write_bytes(whole[:40])
    with pytest.raises(CorruptModelError, match="truncated or not a safetensors file") as caught:
        registry.import_folder(header_cut, "x")
    assert str(header_cut) in str(caught.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CorruptModelError, match="header does not parse"):
        registry.import_folder(garbage, "x")
    assert list(registry.store.list()) == []


def test_cli_refuses_a_ckpt_in_one_line(tmp_path: Path, registry: Registry) -> None:
    import os

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 a zip that torch.load would unpickle")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env |= {"OVBATCH_STORAGE_URL": registry.store.url, "OVBATCH_KEYRING": str(registry.keyring.path)}
    err = run_ovbatch(env, tmp_path, "models", "import", str(ckpt), "--name", "x", ok=False).stderr
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]  # (pip metadata noise aside)
    assert len(errors) == 1 and "never unpickles" in errors[0] and str(ckpt) in errors[0], err
