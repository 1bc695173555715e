"""Diffusion quantization on the tiny random LCM and Stable Diffusion pipelines: UNet inputs captured
from real denoising runs, int8-hybrid and int8-weights end to end through ``ovbatch quantize --local``,
the PSNR/SSIM gate, and the new versions generating images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovbatch.jobs import Watch
from ovbatch.ov import make_core
from ovbatch.registry.loader import DecryptedVersion, decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.tasks.imagegen.components import ROLES, TEXT_ENCODER, UNET, VAE_DECODER
from ovbatch.tasks.quantize import diffusion, imagegate
from tests.tasks.imagegen.conftest import TINY_SIZE, tiny_registry

pytestmark = [
    pytest.mark.timeout(300),
    # diffusers' schedulers call np.array on torch tensors, which numpy 2 warns about; not ours to fix
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
KINDS = ("lcm", "stable-diffusion")
PROMPTS = ["a photo of a cat", "a red fox in the snow", "a bowl of fruit on a table"]
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry holding the tiny LCM and SD pipelines (a copy of the session's: the export is slow)."""
    root = tmp_path_factory.mktemp("diffusion-quantize")
    registry = tiny_registry(tmp_path_factory, root).registry
    ring = registry.keyring
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    env = {
        **os.environ,
        "OVBATCH_STORAGE_URL": (root / "storage").as_uri(),
        "OVBATCH_KEYRING": str(ring.path),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",  # unreachable: --local is what runs
    }
    return {"registry": registry, "env": env, "root": root, "prompts": str(prompts)}


@pytest.fixture
def parent(home: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[DecryptedVersion]:
    version = decrypt_version(home["registry"], ModelRef(f"tiny-{request.param}", "1"))
    yield version
    version.wipe()


def ovbatch(home: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OVBATCH, *args], env=home["env"], capture_output=True, text=True, timeout=600, cwd=str(home["root"])
    )


def report(home: dict[str, Any], ref: str, slug: str) -> dict[str, Any]:
    path = Path(home["root"]) / "storage" / "quantize-reports" / ref / f"{slug}.json"
    assert path.is_file(), f"no report at {path}"
    return json.loads(path.read_text())


def op_counts(version: DecryptedVersion, role: str) -> tuple[int, int]:
    """(FakeQuantize ops, int8/uint8 constants) in one model's IR."""
    xml = version.text(role)
    return len(re.findall(r'type="FakeQuantize"', xml)), len(re.findall(r'element_type="[iu]8"', xml))


def never_stopped() -> Watch:
    return Watch("test", None, None, lambda: False)


# --- the capture -----------------------------------------------------------------------------------


@pytest.mark.parametrize("parent", KINDS, indirect=True)
def test_the_capture_records_one_sample_per_unet_call_with_the_unet_inputs(parent: DecryptedVersion) -> None:
    core = make_core()
    gen = diffusion.generation_for(parent, {"steps": 3, "guidance": 0.0, "size": 0, "seeds": 2})
    assert gen.size == TINY_SIZE and gen.guidance == diffusion.KIND_DEFAULTS[parent.manifest["kind"]]["guidance"]
    prompted: list[int] = []
    captured = diffusion.capture(parent, core, "CPU", {}, PROMPTS[:2], gen, 1000, never_stopped(), prompted.append)
    assert len(captured.unet) == 2 * 2 * 3 and captured.complete and captured.runs == 4, "prompts x seeds x steps"
    assert prompted == [1, 1]
    unet = parent.read_model(core, UNET)
    names = [p.get_any_name() for p in unet.inputs]
    rows = 2 if gen.cfg else 1  # Stable Diffusion: the empty negative prompt and the prompt in one batch
    expected = {
        "sample": ((rows, 4, TINY_SIZE // 2, TINY_SIZE // 2), np.float32),
        "timestep": ((1,), np.int64),
        "encoder_hidden_states": ((rows, 77, 32), np.float32),
        "timestep_cond": ((rows, 32), np.float32),  # LCM's guidance embedding
    }
    for sample in captured.unet:
        assert list(sample) == names
        for name, array in sample.items():
            assert (array.shape, array.dtype) == expected[name], name
    assert ("timestep_cond" in names) == (parent.manifest["kind"] == "lcm")
    assert len({int(s["timestep"][0]) for s in captured.unet}) == 3, "each step has its own timestep"
    # a limit stops the runs early, and the capture says it is not the whole set
    few = diffusion.capture(parent, core, "CPU", {}, PROMPTS, gen, 4, never_stopped(), lambda _n: None)
    assert len(few.unet) == 4 and not few.complete and few.runs == 2
    assert few.enough_for(4) and not few.enough_for(5)


@pytest.mark.parametrize("parent", KINDS, indirect=True)
def test_the_capture_loop_makes_the_image_genai_makes(parent: DecryptedVersion) -> None:
    """The Python denoising loop is what the deployed genai pipeline runs: decoded, its latents give
    genai's image (f32: LCM exactly, Stable Diffusion within 1 LSB), so the UNet is calibrated on the
    inputs it really sees."""
    from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest

    core = make_core()
    gen = diffusion.generation_for(parent, {"steps": 0, "guidance": 0.0, "size": 0, "seeds": 1})
    latents = diffusion.Denoiser(parent, core, "CPU", F32).run(PROMPTS[0], 5, gen, lambda _inputs: True)
    assert latents is not None
    vae = core.compile_model(parent.read_model(core, VAE_DECODER), "CPU", F32)
    scaling = json.loads(parent.text("vae_decoder/config.json"))["scaling_factor"]
    decoded = vae(latents / scaling)[0][0].transpose(1, 2, 0)
    ours = np.floor(np.clip(decoded / 2 + 0.5, 0, 1) * 255)  # genai truncates to uint8
    own = imagegate.private_version(parent.manifest, {r: parent.buffers[r] for r in ROLES})
    engine = ImageEngine.from_version(own, "CPU", F32, noise_kind="numpy")
    try:
        request = ImageRequest(
            prompt=PROMPTS[0], seed=5, steps=gen.steps, guidance=gen.guidance, width=gen.size, height=gen.size
        )
        theirs = engine.generate(request).pixels.astype(np.float64)
    finally:
        engine.release()
    assert np.abs(ours - theirs).max() <= 1, "the capture loop does not make genai's image"


def test_a_worker_without_diffusers_is_told_which_extra_the_capture_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from ovbatch.errors import ConfigError

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    with pytest.raises(ConfigError, match=r"int8-hybrid recipe .* install the export extra"):
        diffusion.Denoiser(None, None, "CPU", {})  # fails before it reads the version


# --- the gate's metrics ----------------------------------------------------------------------------


def test_psnr_and_ssim_match_their_definitions() -> None:
    """Values computed by scikit-image 0.26 (``structural_similarity(luma, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)``, ``peak_signal_noise_ratio``)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    a = gaussian_filter((rng.random((64, 64, 3)) * 255).astype(np.uint8).astype(float), (2, 2, 0))
    a = a.clip(0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    assert imagegate.ssim(a, b) == pytest.approx(0.6148772358355464, abs=1e-9)
    assert imagegate.psnr_db(a, b) == pytest.approx(26.91281062586555, abs=1e-9)
    assert imagegate.ssim(a, a) == pytest.approx(1.0) and imagegate.psnr_db(a, a) == imagegate.MAX_PSNR_DB


# --- end to end ------------------------------------------------------------------------------------


def check_generates(registry: Registry, ref: str) -> None:
    from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest

    engine = ImageEngine.from_version(decrypt_version(registry, ModelRef.parse(ref), roles=ROLES), "CPU")
    try:
        kind = engine.files.kind
        settings = diffusion.KIND_DEFAULTS[kind]
        request = ImageRequest(prompt="a cat", seed=1, width=TINY_SIZE, height=TINY_SIZE, **settings)
        pixels = engine.generate(request).pixels
    finally:
        engine.release()
    assert pixels.shape == (TINY_SIZE, TINY_SIZE, 3) and pixels.std() > 0, f"{ref} made a blank image"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_int8_hybrid_registers_a_version_with_a_quantized_unet_and_its_lineage(home: dict[str, Any], kind: str) -> None:
    registry: Registry = home["registry"]
    target = f"hybrid-{kind}"
    prompts = home["prompts"]
    plan = Path(home["root"]) / f"plan-{kind}.json"
    # a sweep over unet_samples: the second job reuses the first's capture and the parent's images
    entry = {"models": [f"tiny-{kind}@1"], "recipes": ["int8-hybrid"], "calibration": [prompts], "target": target}
    plan.write_text(json.dumps({"jobs": [{**entry, "params": {"unet_samples": [8, 4]}}]}))
    done = ovbatch(home, "quantize", "--plan", str(plan), "--local")
    assert done.returncode == 0 and "2 done" in done.stdout, f"{done.stdout}\n{done.stderr}"
    first = report(home, f"tiny-{kind}@1", "int8-hybrid-unet_samples8")
    second = report(home, f"tiny-{kind}@1", "int8-hybrid-unet_samples4")
    metrics = first["metrics"]
    assert metrics["metric"] == "ssim_points" and metrics["before"] == 100.0 and metrics["images"] == len(PROMPTS)
    assert 90 < metrics["after"] <= 100 and metrics["psnr_db"]["mean"] > 25, metrics
    assert metrics["captured"]["unet_samples"] == 8 and metrics["evaluated_on"] == "calibration"
    assert second["metrics"]["captured"] == {**metrics["captured"], "unet_samples": 4}, "the capture was not reused"
    assert second["metrics"]["speed"]["parent_s_per_image"] == metrics["speed"]["parent_s_per_image"]
    speed = metrics["speed"]  # the best image of each: noise from other work only slows an image
    assert 0 < speed["parent_best_s"] <= speed["parent_s_per_image"], speed
    assert 0 < speed["quantized_best_s"] <= speed["quantized_s_per_image"], speed
    assert speed["speedup_best"] == pytest.approx(speed["parent_best_s"] / speed["quantized_best_s"], rel=0.01), speed
    assert first["size_bytes"]["after"] < first["size_bytes"]["before"] * 0.7 and first["precision"] == "int8"
    assert {first["version"], second["version"]} == {f"{target}@1", f"{target}@2"}
    lineage = registry.manifest(ModelRef(target, "1"))["lineage"]
    assert lineage["parent"] == f"tiny-{kind}@1" and lineage["recipe"] == "int8-hybrid"
    assert lineage["params"]["unet_samples"] == 8 and lineage["gate"]["passed"]
    assert {"psnr_db", "ssim", "generation"} <= set(lineage["metrics"])
    assert lineage["calibration_sha256"] == first["calibration"]["sha256"]
    quantized = decrypt_version(registry, ModelRef(target, "1"))
    try:
        fake_quantize, int8 = op_counts(quantized, UNET)
        assert fake_quantize > 20 and int8 > 20, "the UNet's activations and weights are not INT8"
        for role in (TEXT_ENCODER, VAE_DECODER):  # weights only
            assert op_counts(quantized, role)[0] == 0 and op_counts(quantized, role)[1] > 0, role
    finally:
        quantized.wipe()
    check_generates(registry, f"{target}@1")


@pytest.mark.slow
def test_int8_weights_compresses_all_three_models_and_the_gate_can_refuse(home: dict[str, Any]) -> None:
    registry: Registry = home["registry"]
    prompts = home["prompts"]
    args = ["quantize", "tiny-lcm@1", "--recipe", "int8-weights", "--eval", prompts, "--target", "w8-lcm"]
    done = ovbatch(home, *args, "--local")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    passed = report(home, "tiny-lcm@1", "int8-weights")
    assert passed["version"] == "w8-lcm@1" and passed["metrics"]["evaluated_on"] == "evaluation"
    quantized = decrypt_version(registry, ModelRef("w8-lcm", "1"))
    try:
        for role in (TEXT_ENCODER, UNET, VAE_DECODER):
            fake_quantize, int8 = op_counts(quantized, role)
            assert fake_quantize == 0 and int8 > 0, role
    finally:
        quantized.wipe()
    check_generates(registry, "w8-lcm@1")
    # gates it cannot meet: nothing registered, the report says why
    for extra, reason in (
        (["--max-drop", "0"], "mean SSIM"),
        (["--param", "min_psnr_db=99"], "mean PSNR"),
    ):
        failed = ovbatch(home, *args, "--target", "w8-never", *extra, "--local")
        assert failed.returncode == 1 and "gate failed on images against the parent's" in failed.stderr, failed.stderr
        assert reason in failed.stderr
    assert "w8-never" not in registry.names()


def test_prompts_are_required_where_the_recipe_needs_them(home: dict[str, Any]) -> None:
    for args, message in (
        (["tiny-lcm@1", "--recipe", "int8-hybrid"], "recipe int8-hybrid calibrates on data: give --calibration"),
        (["tiny-stable-diffusion@1", "--recipe", "int8-weights"], "a diffusion gate compares images made from prompts"),
        (["tiny-lcm@1", "--recipe", "int8-hybrid", "--param", "smooth_quant_alpha=0.5"], "no option"),
    ):
        done = ovbatch(home, "quantize", *args, "--local")
        assert done.returncode != 0 and message in done.stdout + done.stderr, (args, done.stdout, done.stderr)


@pytest.mark.slow
def test_diffusion_quantization_writes_no_plaintext_to_disk(home: dict[str, Any], tmp_path: Path) -> None:
    """int8-hybrid under strace: the capture (diffusers' scheduler, genai's tokenizer), NNCF and the
    gate's engines write nothing outside storage but memory files; no model plaintext lies anywhere."""
    import shutil

    from tests.registry.test_no_plaintext import needles, run_traced, scan
    from tests.tasks.quantize.test_quantize import writes_outside_storage

    if not shutil.which("strace"):
        pytest.fail("strace is not installed: `make test` installs it (apt-get install strace)")
    user_home, tmp = tmp_path / "home", tmp_path / "tmp"
    user_home.mkdir()
    tmp.mkdir()
    env = {**home["env"], "HOME": str(user_home), "TMPDIR": str(tmp)}
    log = tmp_path / "strace.log"
    args = ["quantize", "tiny-lcm@1", "--recipe", "int8-hybrid", "--calibration", home["prompts"]]
    command = [OVBATCH, *args, "--target", "traced-lcm", "--param", "unet_samples=4", "--local"]
    run_traced(command, env, tmp_path, log)
    storage = Path(home["root"]) / "storage"
    unexpected = writes_outside_storage(log, user_home, storage)
    assert not unexpected, "quantization opened files for writing outside storage:\n" + "\n".join(unexpected)
    leak_dir = tmp_path / "needles"
    leak_dir.mkdir()
    for name in ("tiny-lcm", "traced-lcm"):  # the parent's and the quantized weights
        version = decrypt_version(home["registry"], ModelRef(name, "1"))
        for role in (TEXT_ENCODER, UNET, VAE_DECODER):
            (leak_dir / f"{name}-{role.split('/')[0]}.bin").write_bytes(version.data(role[:-4] + ".bin"))
        version.wipe()
    samples = needles(leak_dir)
    shutil.rmtree(leak_dir)
    hits = scan([storage, tmp, user_home, Path("/dev/shm")], samples)
    assert not hits, "plaintext model bytes found on disk:\n" + "\n".join(hits)
