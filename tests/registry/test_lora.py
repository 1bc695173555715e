"""LoRA adapters: kohya and PEFT/diffusers files stored as equivalent kohya tensors, checked against a base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovbatch.errors import AdapterMismatchError, CorruptModelError, NotAModelError
from ovbatch.registry import lora, safetensors_io
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from tests.registry.conftest import SDHome, TinySD, run_ovbatch

ATTENTION = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v")
ATTENTION += ("attn2.to_out.0",)
TEXT = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
Target = tuple[str, str, int, int]  # component, module path, in features, out features


def _linears(model: Any) -> dict[str, tuple[int, int]]:
    import torch

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            found[name] = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            found[name] = (module.in_channels, module.out_channels)
    return found


@pytest.fixture(scope="module")
def targets(tiny_sd: TinySD) -> list[Target]:
    """The tiny pipeline's attention projections (UNet) and self-attention projections (text encoder)."""
    found = []
    for component, suffixes in (("unet", ATTENTION), ("text_encoder", TEXT)):
        for path, (i, o) in _linears(tiny_sd.components[component]).items():
            if path.endswith(suffixes):
                found.append((component, path, i, o))
    return found


def ir_like_optimum(model: Any) -> str:
    """An IR with one MatMul/Convolution per layer of ``model``, named as optimum-intel's export names them."""
    import tempfile

    import openvino as ov
    import openvino.opset13 as ops
    import torch

    params, results = [], []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear):
            x = ops.parameter([1, module.in_features], np.float32)
            node = ops.matmul(x, ops.constant(weight.detach().numpy()), False, True)
            node.set_friendly_name(f"__module.{name}/aten::linear/MatMul")
        elif isinstance(module, torch.nn.Conv2d):
            x = ops.parameter([1, module.in_channels, 8, 8], np.float32)
            k = module.kernel_size[0] // 2
            node = ops.convolution(x, ops.constant(weight.detach().numpy()), [1, 1], [k, k], [k, k], [1, 1])
            node.set_friendly_name(f"__module.{name}/aten::_convolution/Convolution")
        else:
            continue
        params.append(x)
        results.append(node)
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(ov.Model(results, params, "tiny"), Path(tmp) / "m.xml", compress_to_fp16=True)
        return (Path(tmp) / "m.xml").read_text()


@pytest.fixture(scope="module")
def tiny_base(tiny_sd: TinySD) -> dict[str, str]:
    return {c: ir_like_optimum(tiny_sd.components[c]) for c in ("unet", "text_encoder")}


def kohya_name(component: str, path: str) -> str:
    return lora.KOHYA_PREFIXES[component] + path.replace(".", "_")


def random_modules(targets: list[Target], rank: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(down/A, up/B) per (component, path), small random values."""
    rng = np.random.default_rng(seed)
    return {
        f"{c}:{p}": (
            rng.standard_normal((rank, i)).astype(np.float32) * 0.1,
            rng.standard_normal((o, rank)).astype(np.float32) * 0.1,
        )
        for c, p, i, o in targets
    }


def kohya_file(path: Path, modules: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float | None, dtype: Any) -> Path:
    tensors = {}
    for key, (down, up) in modules.items():
        name = kohya_name(*key.split(":"))
        tensors |= {f"{name}.lora_down.weight": down.astype(dtype), f"{name}.lora_up.weight": up.astype(dtype)}
        if alpha is not None:
            tensors[f"{name}.alpha"] = np.asarray(alpha, dtype)
    path.write_bytes(safetensors_io.dumps(tensors))
    return path


def peft_keys(form: str, component: str, path: str) -> tuple[str, str]:
    if form == "peft":
        return f"{component}.{path}.lora_A.weight", f"{component}.{path}.lora_B.weight"
    if form == "base_model.model":
        return f"base_model.model.{path}.lora_A.weight", f"base_model.model.{path}.lora_B.weight"
    if form == "diffusers-old":
        return f"{component}.{path}.lora.down.weight", f"{component}.{path}.lora.up.weight"
    if component == "text_encoder":  # attention processors: the text encoder used lora_linear_layer
        return f"text_encoder.{path}.lora_linear_layer.down.weight", f"text_encoder.{path}.lora_linear_layer.up.weight"
    block, proj = path.rsplit(".to_", 1)
    proj = "to_" + proj.replace(".0", "")
    return f"unet.{block}.processor.{proj}_lora.down.weight", f"unet.{block}.processor.{proj}_lora.up.weight"


def peft_tensors(form: str, modules: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    tensors = {}
    for key, (down, up) in modules.items():
        a, b = peft_keys(form, *key.split(":"))
        tensors |= {a: down, b: up}
    return tensors


def delta(down: np.ndarray, up: np.ndarray, scale: float) -> np.ndarray:
    return scale * (up.astype(np.float64) @ down.astype(np.float64))


def stored_delta(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
    rank = down.shape[0]
    assert float(tensors[f"{name}.alpha"]) == rank, f"{name}: the stored alpha must equal the rank"
    return delta(down, up, float(tensors[f"{name}.alpha"]) / rank)


def test_kohya_adapter_is_stored_with_its_scale_folded(targets: list[Target], tmp_path: Path) -> None:
    modules = random_modules(targets)
    src = kohya_file(tmp_path / "style.safetensors", modules, alpha=2.0, dtype=np.float16)
    converted = lora.convert_adapter(src)
    assert converted.info == {
        "source_format": "kohya",
        "ranks": [4],
        "targets": ["text_encoder", "unet"],
        "modules": len(targets),
        "keys": 3 * len(targets),
        "dtype": "float16",
        "scales_folded": [0.5],
    }
    for key, (down, up) in modules.items():
        name = kohya_name(*key.split(":"))
        expected = delta(down.astype(np.float16), up.astype(np.float16), 2.0 / 4)  # kohya: alpha / rank
        np.testing.assert_allclose(stored_delta(converted.tensors, name), expected, rtol=2e-3, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("form", ["peft", "base_model.model", "diffusers-old", "attn-procs"])
def test_peft_and_diffusers_forms_convert_to_equivalent_kohya(form: str, targets: list[Target], tmp_path: Path) -> None:
    modules = random_modules(targets, seed=1)
    tensors = peft_tensors(form, modules)
    metadata = None
    scales = {"unet": 1.0, "text_encoder": 1.0}  # no adapter config: PEFT's lora_alpha defaults to r
    if form == "peft":
        config = {"unet.r": 4, "unet.lora_alpha": 8, "text_encoder.r": 4, "text_encoder.lora_alpha": 2}
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(config)}
        scales = {"unet": 2.0, "text_encoder": 0.5}
    src = tmp_path / "peft.safetensors"
    src.write_bytes(safetensors_io.dumps(tensors, metadata))

    converted = lora.convert_adapter(src)
    assert set(converted.info["targets"]) == {"unet", "text_encoder"} and converted.info["modules"] == len(targets)
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in converted.tensors), "names must be kohya's"
    for key, (down, up) in modules.items():
        component, path = key.split(":")
        name = kohya_name(component, path)
        expected = delta(down, up, scales[component])  # PEFT: delta W = lora_alpha / r * B @ A
        np.testing.assert_allclose(stored_delta(converted.tensors, name), expected, rtol=1e-6, err_msg=name)


def test_match_check_counts_what_genai_applies(
    targets: list[Target], tiny_base: dict[str, str], tmp_path: Path
) -> None:
    modules = random_modules(targets)
    kohya = lora.convert_adapter(kohya_file(tmp_path / "k.safetensors", modules, 4.0, np.float32)).tensors
    assert lora.check_adapter_matches(kohya, tiny_base) == (len(targets), len(targets))
    assert lora.check_adapter_matches(list(kohya), tiny_base) == (len(targets), len(targets)), "names alone"

    raw_peft = peft_tensors("peft", modules)
    assert lora.check_adapter_matches(raw_peft, tiny_base) == (0, len(targets)), "genai drops unet./text_encoder. names"


def test_genai_leaves_kohya_time_emb_proj_unapplied(tiny_base: dict[str, str], tmp_path: Path) -> None:
    """genai's name mapping lacks diffusers' LyCORIS rules: a kohya time_emb_proj module matches no layer."""
    rng = np.random.default_rng(0)
    name = "lora_unet_down_blocks_0_resnets_0_time_emb_proj"
    keys = {f"{name}.lora_down.weight": rng.standard_normal((4, 128)), f"{name}.lora_up.weight": np.zeros((32, 4))}
    report = lora.match_report(keys, tiny_base)
    assert (report.matched, report.total, report.unmatched) == (0, 1, [name])


def test_adapter_for_another_architecture_is_refused(tiny_base: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    keys = {}
    for name, (i, o) in {  # SDXL: ten transformer blocks per attention, two text encoders
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_7_attn2_to_k": (2048, 640),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
    }.items():
        keys |= {f"{name}.lora_down.weight": rng.standard_normal((4, i)), f"{name}.lora_up.weight": np.zeros((o, 4))}
    layers = sum(len(lora.ir_layers(xml)) for xml in tiny_base.values())
    with pytest.raises(AdapterMismatchError) as caught:
        lora.require_match(keys, tiny_base, "style@1", "sd-tiny@1")
    expected = f"LoRA 'style@1' matches none of the {layers} layers of sd-tiny@1 (it was made for SDXL)"
    assert str(caught.value) == expected


def test_same_names_with_other_shapes_are_refused(tiny_base: dict[str, str]) -> None:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"  # tiny: 64 -> 32
    keys = {f"{name}.lora_down.weight": np.zeros((4, 768)), f"{name}.lora_up.weight": np.zeros((320, 4))}
    with pytest.raises(AdapterMismatchError, match=r"does not fit sd-tiny@1: 1 of its 1 modules name layers of other"):
        lora.require_match(keys, tiny_base, "big", "sd-tiny@1")


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        ({"lora_unet_x.hada_w1_a": np.zeros((4, 4))}, NotAModelError, "is LoHa"),
        ({"lora_unet_x.lora_down.weight": np.zeros((4, 8, 3, 3)), "lora_unet_x.lora_up.weight": np.zeros((8, 4, 1, 1))},
         NotAModelError, "3x3 convolution kernel; openvino_genai applies only 1x1"),
        ({"lora_unet_x.lora_down.weight": np.zeros((4, 8))}, CorruptModelError, r"has no up \(B\) matrix"),
        ({"model.diffusion_model.out.2.weight": np.zeros((4, 4))}, NotAModelError, "1 tensors are not LoRA weights"),
    ],
    ids=["loha", "conv3x3", "half", "not-lora"],
)  # fmt: skip
def test_unsupported_adapters_are_refused(tmp_path: Path, tensors: dict[str, Any], error: type, message: str) -> None:
    src = tmp_path / "bad.safetensors"
    src.write_bytes(safetensors_io.dumps({k: v.astype(np.float32) for k, v in tensors.items()}))
    with pytest.raises(error, match=message) as caught:
        lora.convert_adapter(src)
    assert str(src) in str(caught.value)


def test_lora_is_stored_encrypted_as_kind_lora(registry: Registry, targets: list[Target], tmp_path: Path) -> None:
    src = kohya_file(tmp_path / "style.safetensors", random_modules(targets), 2.0, np.float16)
    manifest = registry.import_lora(src, "style")
    assert (manifest["kind"], manifest["precision"], manifest["source"]["type"]) == ("lora", "fp16", "lora-kohya")
    assert [f["role"] for f in manifest["files"]] == [lora.ROLE]
    assert manifest["lora"]["modules"] == len(targets) and manifest["lora"]["ranks"] == [4]
    stored = registry.store.get_bytes(f"models/style/1/{lora.ROLE}.enc")
    plaintext = safetensors_io.dumps(lora.convert_adapter(src).tensors, {"format": "pt"})
    assert plaintext[-256:] not in stored, "the adapter's bytes are in storage in the clear"
    version = decrypt_version(registry, ModelRef.parse("style@1"), check_digests=True)
    assert version.data(lora.ROLE).tobytes() == plaintext
    pickled = tmp_path / "style.ckpt"
    pickled.write_bytes(b"PK\x03\x04")
    with pytest.raises(NotAModelError, match="must be a .safetensors file"):
        registry.import_lora(pickled, "x")
    assert registry.versions("x") == []


@pytest.mark.slow
def test_cli_lora_import_checks_the_real_base(
    sd_home: SDHome, targets: list[Target], tiny_base: dict[str, str], tmp_path: Path
) -> None:
    """`ovbatch models import --lora --base sd-tiny`: checked against the exported IR, refused for SDXL."""
    time_emb = ("unet", "down_blocks.0.resnets.0.time_emb_proj", 128, 32)  # genai has no name for it
    modules = random_modules([*targets, time_emb])
    src = kohya_file(tmp_path / "style.safetensors", modules, 2.0, np.float16)
    args = ("models", "import", str(src), "--name", "style", "--lora", "--base", "sd-tiny")
    out = run_ovbatch(sd_home.env, tmp_path, *args).stdout
    n, total = len(targets), len(targets) + 1
    assert f"imported style@1: lora (kohya, rank 4, text_encoder + unet, {total} modules, {3 * total} tensors)" in out
    assert f"applies to sd-tiny@1: {n} of {total} modules match its layers" in out, out
    assert "1 modules match no layer, so openvino_genai leaves them out: lora_unet_down_blocks_0_resnets_0_time" in out

    peft = tmp_path / "peft.safetensors"
    peft.write_bytes(safetensors_io.dumps(peft_tensors("peft", modules)))
    out = run_ovbatch(
        sd_home.env, tmp_path, "models", "import", str(peft), "--name", "pstyle", "--lora", "--base", "sd-tiny@1"
    )
    assert "lora (peft, rank 4" in out.stdout and f"{n} of {total} modules match" in out.stdout, out.stdout

    # job time: the stored adapter against the decrypted base's IR
    base = lora.decrypt_base(sd_home.registry, ModelRef.parse("sd-tiny"))
    stored = decrypt_version(sd_home.registry, ModelRef.parse("style"))
    adapter, _ = safetensors_io.loads(stored.data(lora.ROLE))
    assert lora.check_adapter_matches(adapter, base) == (n, total)
    real = {c: base.text(f"{c}/openvino_model.xml") for c in ("unet", "text_encoder")}
    layers = [len(lora.ir_layers(real[c])) for c in real]
    assert layers == [len(lora.ir_layers(tiny_base[c])) for c in real], "the synthetic IR has other layers"

    xl = tmp_path / "xl.safetensors"
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_7_attn2_to_k"
    down, up = np.zeros((4, 2048), np.float16), np.zeros((640, 4), np.float16)
    xl.write_bytes(safetensors_io.dumps({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}))
    args = ("models", "import", str(xl), "--name", "xl-style", "--lora", "--base", "sd-tiny")
    err = run_ovbatch(sd_home.env, tmp_path, *args, ok=False).stderr
    expected = f"LoRA 'xl-style' matches none of the {sum(layers)} layers of sd-tiny@1 (it was made for SDXL)"
    assert expected in err, err
    assert sd_home.registry.versions("xl-style") == []
    args = ("models", "import", str(src), "--name", "x", "--base", "sd-tiny")
    assert "use it with --lora" in run_ovbatch(sd_home.env, tmp_path, *args, ok=False).stderr
