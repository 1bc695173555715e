"""ImageEngine against diffusers on the same tiny random weights and seeds, plus cancel, LoRA, pool, release.

genai converts the VAE output to uint8 by truncation, diffusers (``numpy_to_pil``) by rounding: at f32
the engine's pixels equal ``floor(diffusers * 255)``, so about half of them are 1 below diffusers' PNG.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovbatch.errors import InputError, JobCancelled, ModelRetired, WrongModelKindError
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.storage.file import FileStore
from ovbatch.tasks.imagegen.components import (
    CONFIGS,
    SCHEDULER_OVERRIDES,
    SCHEDULERS,
    UnknownSchedulerError,
)
from ovbatch.tasks.imagegen.engine import GenerationAborted, ImageEngine, ImageRequest
from tests.tasks.imagegen.conftest import TINY_SIZE, ImagegenHome, MakeEngine, lora_targets, tiny_lora

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # diffusers' schedulers call np.array on torch tensors, which numpy 2 warns about; not ours to fix
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

SIZE = {"width": TINY_SIZE, "height": TINY_SIZE}
LCM = ImageRequest(prompt="a photo of a cat", seed=42, steps=4, guidance=8.5, **SIZE)
SD = ImageRequest(prompt="a photo of a cat", negative_prompt="blurry", seed=7, steps=8, guidance=7.5, **SIZE)
BASE = {"lcm": LCM, "stable-diffusion": SD}
# the engine's memory files (memfd): one per JSON config genai reads by path, and the scheduler variants
MEMORY_FILES = [role.replace("/", "-") for role in CONFIGS] + [f"scheduler-{n}" for n in SCHEDULER_OVERRIDES]
DIFFUSERS_SCHEDULERS = {
    "lcm": "LCMScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
}


def reference(pipe: Any, request: ImageRequest) -> np.ndarray:
    """diffusers' image for ``request`` as float pixels (0..255), before its rounding to uint8."""
    import diffusers
    import torch

    if request.scheduler is not None:
        cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[request.scheduler])
        overrides = SCHEDULER_OVERRIDES.get(request.scheduler, {})
        pipe = type(pipe)(**{**pipe.components, "scheduler": cls.from_config(pipe.scheduler.config, **overrides)})
        pipe.set_progress_bar_config(disable=True)
    extra = {"negative_prompt": request.negative_prompt} if request.negative_prompt else {}
    out = pipe(
        request.prompt,
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=torch.Generator().manual_seed(request.seed),
        output_type="np",
        **extra,
    )
    return np.asarray(out.images[0], dtype=np.float64) * 255


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float, int]:
    """(share of pixels within 1 LSB of diffusers' rounded image, PSNR in dB, largest difference)."""
    assert ours.shape == theirs.shape and ours.dtype == np.uint8, f"got {ours.dtype} {ours.shape}, want {theirs.shape}"
    diff = np.abs(ours.astype(np.int64) - np.round(theirs).astype(np.int64))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)
    return float(np.mean(diff <= 1)), psnr, int(diff.max())


def assert_parity(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    within, psnr, worst = compare(ours, theirs)
    exact = float(np.mean(ours == np.floor(theirs)))
    print(f"{what}: {within:.4%} within 1 LSB, {exact:.2%} equal to floor(diffusers), PSNR {psnr:.1f} dB")
    assert within >= 0.999, f"{what}: only {within:.3%} of pixels within 1 LSB of diffusers (max diff {worst})"


@pytest.mark.parametrize("kind", ["lcm", "stable-diffusion"])
@pytest.mark.parametrize("seed", [0, 123456])
def test_f32_matches_diffusers(
    kind: str, seed: int, f32_engines: dict[str, ImageEngine], diffusers_pipeline: Any
) -> None:
    request = replace(BASE[kind], seed=seed)
    image = f32_engines[kind].generate(request)
    assert_parity(image.pixels, reference(diffusers_pipeline(kind), request), f"{kind} f32 seed {seed}")


@pytest.mark.parametrize("scheduler", sorted(set(SCHEDULERS) - {"lcm"}))
def test_stable_diffusion_schedulers_match_diffusers(
    scheduler: str, f32_engines: dict[str, ImageEngine], diffusers_pipeline: Any
) -> None:
    request = replace(SD, scheduler=scheduler, guidance=3.0)
    image = f32_engines["stable-diffusion"].generate(request)
    assert_parity(image.pixels, reference(diffusers_pipeline("stable-diffusion"), request), f"scheduler {scheduler}")


@pytest.mark.parametrize("kind", ["lcm", "stable-diffusion"])
def test_default_precision_is_close_to_diffusers(kind: str, make_engine: MakeEngine, diffusers_pipeline: Any) -> None:
    """bf16 on CPUs that have it: not exact, but far above what an eye sees (35 dB)."""
    engine = make_engine(kind, config={})
    within, psnr, worst = compare(engine.generate(BASE[kind]).pixels, reference(diffusers_pipeline(kind), BASE[kind]))
    print(f"{kind} default precision: PSNR {psnr:.1f} dB, {within:.2%} within 1 LSB, max diff {worst}")
    assert psnr >= 35.0, f"{kind} at default precision: PSNR {psnr:.1f} dB against diffusers (max diff {worst})"


def test_one_seed_gives_one_image(f32_engines: dict[str, ImageEngine]) -> None:
    engine = f32_engines["lcm"]
    first, again = engine.generate(LCM), engine.generate(LCM)
    other = engine.generate(replace(LCM, seed=LCM.seed + 1))
    assert np.array_equal(first.pixels, again.pixels), "the same seed gave two different images"
    assert not np.array_equal(first.pixels, other.pixels), "two seeds gave the same image"
    assert set(first.timings_s) >= {"text_encoder", "unet_first_step", "unet_other_steps_avg", "vae_decode", "total"}
    assert first.timings_s["total"] > 0 and first.timings_s["unet_first_step"] > 0, first.timings_s


def test_numpy_noise_gives_the_torch_image(make_engine: MakeEngine, f32_engines: dict[str, ImageEngine]) -> None:
    """Without torch: LCM draws noise at every step too, so every draw must match."""
    ours = make_engine("lcm", noise_kind="numpy").generate(LCM).pixels
    torch_noise = f32_engines["lcm"].generate(LCM).pixels
    assert np.mean(np.abs(ours.astype(int) - torch_noise.astype(int)) <= 1) >= 0.999


def test_on_step_true_stops_within_a_step(f32_engines: dict[str, ImageEngine]) -> None:
    engine = f32_engines["stable-diffusion"]
    seen: list[tuple[int, int]] = []

    def stop_at_2(done: int, total: int) -> bool:
        seen.append((done, total))
        return done >= 2

    request = replace(SD, steps=20)
    with pytest.raises(GenerationAborted) as aborted:
        engine.generate(request, stop_at_2)
    assert seen[:2] == [(1, 20), (2, 20)], seen
    assert aborted.value.steps_done <= 3, f"ran {aborted.value.steps_done} UNet steps after being told to stop at 2"
    assert np.array_equal(engine.generate(SD).pixels, engine.generate(SD).pixels), "the engine broke after an abort"


def test_on_step_exception_stops_and_is_raised(f32_engines: dict[str, ImageEngine]) -> None:
    """A cancel raised inside the callback (which genai runs on its own thread) reaches the caller."""

    def cancelled(done: int, total: int) -> bool:
        raise JobCancelled("batch cancelled")

    with pytest.raises(JobCancelled, match="batch cancelled"):
        f32_engines["lcm"].generate(replace(LCM, steps=20), cancelled)


def test_bad_requests_say_what_is_right(f32_engines: dict[str, ImageEngine]) -> None:
    lcm, sd = f32_engines["lcm"], f32_engines["stable-diffusion"]
    with pytest.raises(UnknownSchedulerError, match="valid schedulers: ddim, euler, euler-ancestral, lcm, pndm"):
        sd.generate(replace(SD, scheduler="karras"))
    cases: list[tuple[ImageEngine, ImageRequest, str]] = [
        (lcm, replace(LCM, scheduler="euler"), "lcm scheduler only"),
        (lcm, replace(LCM, negative_prompt="ugly"), "negative prompt needs"),
        (sd, replace(SD, guidance=1.0), "negative prompt needs"),
        (sd, replace(SD, seed=2**32), "seed 4294967296 is out of range"),
        (sd, replace(SD, width=63), "multiples of 2"),
        (sd, replace(SD, adapters=(("style", 1.0),)), r"\['style'\] were not loaded .*loaded: none"),
    ]
    for engine, request, message in cases:
        with pytest.raises(InputError, match=message):
            engine.generate(request)


def test_static_size_gives_the_same_image_and_refuses_others(
    make_engine: MakeEngine, f32_engines: dict[str, ImageEngine]
) -> None:
    static = make_engine("stable-diffusion", static_size=(TINY_SIZE, TINY_SIZE))
    assert np.array_equal(static.generate(SD).pixels, f32_engines["stable-diffusion"].generate(SD).pixels)
    with pytest.raises(InputError, match=f"makes {TINY_SIZE}x{TINY_SIZE} images, not 96x{TINY_SIZE}"):
        static.generate(replace(SD, width=96))
    with pytest.raises(InputError, match="shaped for guidance above 1"):
        static.generate(replace(SD, guidance=1.0, negative_prompt=""))
    dynamic = f32_engines["stable-diffusion"].generate(replace(SD, width=96, height=32))
    assert dynamic.pixels.shape == (32, 96, 3)


def merged_lora(pipe: Any, tensors: dict[str, Any], weight: float) -> Any:
    """``pipe`` with the LoRA merged into its weights the kohya / diffusers way: w * alpha / rank * up @ down."""
    import torch

    merged = copy.deepcopy(pipe)
    with torch.no_grad():
        for key, module in lora_targets(merged):
            down, up = tensors[key + ".lora_down.weight"], tensors[key + ".lora_up.weight"]
            module.weight += weight * float(tensors[key + ".alpha"]) / down.shape[0] * (up @ down)
    return merged


def test_lora_weights_match_merged_weights_and_switch(make_engine: MakeEngine, diffusers_pipeline: Any) -> None:
    from safetensors.torch import save

    pipe = diffusers_pipeline("stable-diffusion")
    tensors = tiny_lora(pipe)
    # static, as workers build them: the adapters' slots must survive the reshape
    engine = make_engine("stable-diffusion", adapters={"style": save(tensors)}, static_size=(TINY_SIZE, TINY_SIZE))
    images: dict[float, np.ndarray] = {}
    for weight in (0.0, 1.0, 0.5, 0.0, 1.0):  # back and forth: alphas switch without a rebuild
        pixels = engine.generate(replace(SD, adapters=(("style", weight),))).pixels
        if weight in images:
            assert np.array_equal(pixels, images[weight]), f"LoRA weight {weight} gave another image the second time"
        images[weight] = pixels
        assert_parity(pixels, reference(merged_lora(pipe, tensors, weight), SD), f"LoRA weight {weight}")
    assert engine.size_bytes > 0
    assert np.mean(np.abs(images[1.0].astype(int) - images[0.0].astype(int))) > 2, "the LoRA changed nothing"


def test_lora_without_kohya_names_is_refused(make_engine: MakeEngine) -> None:
    import torch
    from safetensors.torch import save

    peft = save({"unet.down_blocks.1.attn1.to_q.lora_A.weight": torch.zeros(4, 32)})
    with pytest.raises(InputError, match="no kohya-style tensor names"):
        make_engine("stable-diffusion", adapters={"peft": peft})


def test_pool_gives_each_thread_its_own_pipeline(make_engine: MakeEngine) -> None:
    engine = make_engine("lcm", pool_size=2)
    requests = [replace(LCM, seed=s) for s in (1, 2, 3, 4)]
    alone = [engine.generate(r).pixels for r in requests]
    together: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(requests))

    def run(i: int) -> None:
        start.wait()
        together[i] = engine.generate(requests[i]).pixels

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(together) == len(requests), "a generate call failed in a thread"
    for i, pixels in together.items():
        assert np.array_equal(pixels, alone[i]), f"seed {requests[i].seed}: another image when run beside others"
    assert engine.pipelines_built == 2, f"{engine.pipelines_built} pipelines built for 4 jobs in a pool of 2"


def test_release_wipes_plaintext_and_refuses_jobs(make_engine: MakeEngine) -> None:
    engine = make_engine("lcm")
    buffers = list(engine.files.version.buffers.values())
    engine.release()
    assert all(not buf.any() for buf in buffers), "plaintext left in memory after release"
    with pytest.raises(ModelRetired):
        engine.generate(LCM)


def test_on_step_sees_steps_in_order(f32_engines: dict[str, ImageEngine]) -> None:
    """genai runs the callback on its own thread and drops what is still queued when the loop ends, so
    the last steps may go unseen (more so when the callback is slower than a UNet step)."""
    seen: list[tuple[int, int]] = []

    def on_step(done: int, total: int) -> bool:
        seen.append((done, total))
        return False

    f32_engines["lcm"].generate(LCM, on_step)
    assert seen and seen == [(i + 1, LCM.steps) for i in range(len(seen))], seen


ENGINE_RUN = """
import sys
from pathlib import Path
from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from ovbatch.tasks.imagegen.components import ROLES
from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest

storage, keyring, name, version = sys.argv[1:5]
registry = Registry(FileStore(Path(storage)), Keyring.load(Path(keyring)))
engine = ImageEngine.from_version(decrypt_version(registry, ModelRef(name, version), roles=ROLES), "CPU")
image = engine.generate(ImageRequest(prompt="a cat", seed=1, steps=2, guidance=8.5, width=64, height=64))
engine.release()
print("made", image.pixels.shape)
"""


def test_engine_writes_no_file(tmp_path: Path, imagegen_home: ImagegenHome) -> None:
    """Under strace: no file opened for writing; the only memory files are the JSON configs genai reads."""
    from tests.registry.test_no_plaintext import TRACED, traced_writes

    if not shutil.which("strace"):
        pytest.fail("strace is not installed: `make test` installs it (apt-get install strace)")
    store = imagegen_home.registry.store
    assert isinstance(store, FileStore)
    ref = imagegen_home.refs["lcm"]
    home, log = tmp_path / "home", tmp_path / "strace.log"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    args = [str(store.root), str(imagegen_home.registry.keyring.path), ref.name, str(ref.version)]
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(log), sys.executable, "-c", ENGINE_RUN, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0 and "made (64, 64, 3)" in done.stdout, f"engine run failed:\n{done.stderr[-3000:]}"
    expected = [f'memfd_create("{name}"' for name in MEMORY_FILES]
    writes = [w for w in traced_writes(log, home) if not w.startswith(tuple(expected))]
    assert not writes, "the engine opened files for writing:\n" + "\n".join(writes)


def test_a_model_of_another_kind_is_refused() -> None:
    whisper = DecryptedVersion({"name": "whisper-base", "version": "1", "kind": "whisper"}, {})
    with pytest.raises(WrongModelKindError, match="whisper-base@1 is a 'whisper' model; image generation needs"):
        ImageEngine.from_version(whisper)
