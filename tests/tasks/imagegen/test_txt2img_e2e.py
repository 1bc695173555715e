"""``ovbatch txt2img`` end to end with tiny random SD/LCM models imported through the real path:
embedded mode, Redis + workers, resubmission, reproducibility across workers, cancel and SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.tasks.imagegen.conftest import ImagegenHome
from tests.workers.test_worker_e2e import Workers, batch_id_of, cli, status, wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def env(redis_url: str, imagegen_home: ImagegenHome) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    return {
        **base,
        "OVBATCH_STORAGE_URL": imagegen_home.registry.store.url,
        "OVBATCH_KEYRING": str(imagegen_home.registry.keyring.path),
        "OVBATCH_BROKER_URL": redis_url,
        "OVBATCH_VISIBILITY_TIMEOUT_S": "20",
        "OVBATCH_JOB_TIME_LIMIT_S": "15",
    }


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(env, tmp_path)
    yield w
    w.stop()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def parameters(path: Path) -> str:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return str(image.info["parameters"])


def prompts_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "night.csv"
    path.write_text(
        "prompt,seeds,steps,width,height\n"
        "a red fox in the snow,0-1,2,64,64\n"
        "a lighthouse at dusk,7,3,64,96\n"
        "a bad size,0,2,500,64\n"
    )
    return path


def test_embedded_batch_writes_pngs_sidecars_sheets_gallery_and_a_bad_row_fails_alone(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("txt2img", str(prompts_csv(tmp_path)), "--model", "tiny-lcm", "--out", str(out), "--local")
    done = cli(env, *args, ok=False)  # one row fails: exit 1
    assert "3 done" in done.stdout and "1 failed" in done.stdout, done.stdout
    assert "night.csv:4: width 500 is not a multiple of 8" in done.stderr, done.stderr
    fox = out / "0001-0-a-red-fox-in-the-snow.png"
    assert pixels(fox).shape == (64, 64, 3)
    assert pixels(out / "0002-7-a-lighthouse-at-dusk.png").shape == (96, 64, 3), "width 64, height 96"
    text = parameters(fox)
    assert text.startswith("a red fox in the snow\n"), text
    assert "Steps: 2, " in text and "Seed: 0, Size: 64x64" in text and "Model: tiny-lcm@1" in text, text
    assert "Sampler: LCM, " in text, f"the model's own LCM scheduler ran and is named: {text}"
    sidecar = json.loads((out / "0001-0-a-red-fox-in-the-snow.json").read_text())
    assert sidecar["seed"] == 0 and sidecar["steps"] == 2 and sidecar["sampler"] == "LCM", sidecar
    stages = {"text_encoder", "unet_first_step", "unet_other_steps_avg", "vae_decode", "wall"}
    assert stages <= set(sidecar["timings_s"]) and sidecar["timings_s"]["wall"] > 0, sidecar["timings_s"]
    assert (out / "0001-contact-a-red-fox-in-the-snow.png").is_file(), "row 1 has two seeds: a contact sheet"
    page = (out / "index.html").read_text()
    assert "0001-0-a-red-fox-in-the-snow.png" in page and "width 500 is not a multiple of 8" in page
    report = json.loads(next(out.glob("batch-*.json")).read_text())
    assert report["summary"]["done"] == 3 and report["summary"]["failed"] == 1, report["summary"]
    before = fox.stat().st_mtime_ns
    again = cli(env, *args, ok=False)
    assert "0 done, 3 skipped" in again.stdout, f"resubmission must skip finished images: {again.stdout}"
    assert fox.stat().st_mtime_ns == before, "a skipped image is not written again"


def test_two_workers_and_embedded_mode_make_the_same_image_in_any_order(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    local, on_a, on_b = tmp_path / "local", tmp_path / "a", tmp_path / "b"
    common = ("--model", "tiny-stable-diffusion", "--steps", "3", "--width", "64", "--height", "64")
    cli(env, "txt2img", "a small boat", "--seeds", "5,3", *common, "--out", str(local), "--local")
    workers.start(name="a")
    done = cli(env, "txt2img", "a small boat", "--seeds", "3-5", *common, "--out", str(on_a), "--wait")
    s = status(env, batch_id_of(done.stdout))
    assert s["summary"]["done"] == 3, s["summary"]
    assert s["summary"]["work"] == 9.0, "3 images of 3 denoising steps each were counted while they ran"
    workers.stop()  # worker b alone makes the second batch, its seeds in another order
    workers.start(name="b")
    done = cli(env, "txt2img", "a small boat", "--seeds", "5,4,3", *common, "--out", str(on_b), "--wait")
    assert status(env, batch_id_of(done.stdout))["summary"]["done"] == 3
    for seed in (3, 5):
        name = f"0001-{seed}-a-small-boat.png"
        assert np.array_equal(pixels(local / name), pixels(on_a / name)), f"seed {seed}: worker a != embedded"
    for seed in (3, 4, 5):
        name = f"0001-{seed}-a-small-boat.png"
        assert np.array_equal(pixels(on_a / name), pixels(on_b / name)), f"seed {seed}: worker a != worker b"
    assert not np.array_equal(pixels(on_a / "0001-3-a-small-boat.png"), pixels(on_a / "0001-4-a-small-boat.png"))


def test_an_image_overwritten_by_another_batch_is_made_again_on_resubmission(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The file name holds the row, seed and prompt, not the steps: a batch with other settings into the
    same --out fails that row at submission, naming the first batch, unless --overwrite; once replaced,
    resubmitting the first batch must not count the image as done."""
    out = tmp_path / "out"
    common = (
        "txt2img",
        "a cat",
        "--model",
        "tiny-lcm",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        str(out),
        "--local",
    )
    png = out / "0001-0-a-cat.png"
    cli(env, *common, "--steps", "1")
    refused = cli(env, *common, "--steps", "2", ok=False)
    assert "0001-0-a-cat.png already holds the output of" in refused.stderr, refused.stderr
    assert "Steps: 1, " in parameters(png), "another batch's settings must never replace the image silently"
    cli(env, *common, "--steps", "2", "--overwrite")
    assert "Steps: 2, " in parameters(png)
    again = cli(env, *common, "--steps", "1", "--overwrite")
    assert "1 done" in again.stdout, f"the 1-step image was replaced, so it must be made again: {again.stdout}"
    assert "Steps: 1, " in parameters(png), parameters(png)
    assert "0 done, 1 skipped" in cli(env, *common, "--steps", "1").stdout, "now it is there: skipped"


def test_unknown_loras_and_what_lcm_cannot_do_fail_their_rows_before_queueing(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    common = ("--model", "tiny-lcm", "--width", "64", "--height", "64", "--steps", "1", "--out", out, "--local")
    err = cli(env, "txt2img", "a cat", "--lora", "nope", *common, ok=False)
    assert "inline 1: model 'nope' is not in the registry" in err.stderr, err.stderr
    err = cli(env, "txt2img", "a cat", "--negative-prompt", "dogs", *common, ok=False)
    assert "inline 1: an LCM model has no negative prompt" in err.stderr, err.stderr
    err = cli(env, "txt2img", "a cat", "--seeds", "1", "--images-per-prompt", "2", *common, ok=False)
    assert "--seeds" in err.stderr and "--images-per-prompt" in err.stderr, err.stderr


def test_a_lora_imported_through_the_cli_styles_images_and_alpha_0_is_the_plain_image(
    env: dict[str, str], tmp_path: Path, diffusers_pipeline: Any
) -> None:
    from safetensors.torch import save_file

    from tests.tasks.imagegen.conftest import tiny_lora

    save_file(tiny_lora(diffusers_pipeline("lcm")), str(tmp_path / "style.safetensors"))
    done = cli(
        env, "models", "import", str(tmp_path / "style.safetensors"), "--name", "style", "--lora", "--base", "tiny-lcm"
    )
    assert "style@" in done.stdout, done.stdout
    common = ("a harbour", "--model", "tiny-lcm", "--width", "64", "--height", "64", "--steps", "2", "--local")
    images = {}
    for label, extra in (("plain", ()), ("zero", ("--lora", "style:0")), ("styled", ("--lora", "style:1.0"))):
        cli(env, "txt2img", *common, *extra, "--out", str(tmp_path / label))
        images[label] = pixels(tmp_path / label / "0001-0-a-harbour.png")
    close = (np.abs(images["plain"].astype(int) - images["zero"]) <= 1).mean()
    assert close >= 0.999, f"alpha 0 must give the image without the LoRA: {close:.2%} of pixels within 1 LSB"
    assert np.abs(images["styled"].astype(int) - images["plain"]).mean() > 1, "the LoRA must change the image"
    assert "<lora:style@1:1>" in parameters(tmp_path / "styled" / "0001-0-a-harbour.png")


def test_cancel_stops_a_running_image_at_its_next_steps(env: dict[str, str], workers: Workers, tmp_path: Path) -> None:
    env["OVBATCH_JOB_TIME_LIMIT_S"] = "19"  # cancel must come first
    workers.start()
    out = tmp_path / "out"
    args = ("a slow one", "--model", "tiny-lcm", "--steps", "200", "--width", "256", "--height", "256")
    bid = batch_id_of(cli(env, "txt2img", *args, "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["work"] >= 2, 120)
    t0 = time.time()
    cli(env, "cancel", bid)
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 120)
    took = time.time() - t0
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "cancelled", record
    assert "batch cancelled while this image was being generated" in record["error"], record
    assert took < 10, f"the image went on for {took:.0f} s after cancel (it asks its batch after every step)"
    assert s["summary"]["work"] < 200, "it stopped before its last step"
    assert not list(out.glob("*.png")), "a cancelled image writes nothing"


def test_a_worker_killed_mid_image_leaves_it_to_the_next_which_makes_it_once(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    # 12 steps: 24 took over 15 s of the time limit on a 2-core AVX2 machine (the limit must stay
    # below the fixture's 20 s visibility timeout)
    env["OVBATCH_JOB_TIME_LIMIT_S"] = "19"
    first = workers.start(name="doomed")
    out = tmp_path / "out"
    args = ("a kept promise", "--model", "tiny-lcm", "--steps", "12", "--width", "256", "--height", "256")
    bid = batch_id_of(cli(env, "txt2img", *args, "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["work"] >= 1, 120)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert not list(out.glob("*.png")), "killed mid-image: nothing written yet"
    workers.start(name="next")
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 180)
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "done" and record["worker"].startswith("next"), (record, record.get("error"))
    assert [p.name for p in out.glob("*.png")] == ["0001-0-a-kept-promise.png"], "exactly one image"
    local = tmp_path / "local"
    cli(env, "txt2img", *args, "--out", str(local), "--local")
    assert np.array_equal(pixels(out / "0001-0-a-kept-promise.png"), pixels(local / "0001-0-a-kept-promise.png"))


def test_sigterm_hands_a_running_image_back_to_its_queue_and_the_time_limit_fails_it_alone(
    env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    import redis

    # no grace period: the running image must stop at its next step (the graceful stop is
    # tests/workers/test_worker_e2e.py::test_sigterm_lets_a_running_job_finish_within_the_grace_period)
    env.update(OVBATCH_VISIBILITY_TIMEOUT_S="3600", OVBATCH_JOB_TIME_LIMIT_S="600", OVBATCH_STOP_GRACE_S="1")
    first = workers.start(name="leaving")
    out = tmp_path / "out"
    args = ("a long one", "--model", "tiny-lcm", "--steps", "200", "--width", "256", "--height", "256")
    bid = batch_id_of(cli(env, "txt2img", *args, "--out", str(out)).stdout)
    wait_for(env, bid, lambda s: s["summary"]["work"] >= 1, 120)
    t0 = time.time()
    first.terminate()
    first.wait(timeout=60)
    assert time.time() - t0 < 20, "the worker should stop its running image at the next step"
    s = status(env, bid)
    assert (s["summary"]["queued"], s["summary"]["running"], s["summary"]["failed"]) == (1, 0, 0), s["summary"]
    assert redis.Redis.from_url(env["OVBATCH_BROKER_URL"]).llen("ovbatch.CPU") == 1, "the message is back in its queue"
    # the next worker has a 3 s time limit: the image stops at a step and fails alone, retryable
    env["OVBATCH_JOB_TIME_LIMIT_S"] = "3"
    workers.start(name="strict")
    s = wait_for(env, bid, lambda s: s["summary"]["ended_s"] is not None, 180)
    record = next(iter(s["jobs"].values()))
    assert record["status"] == "failed" and record["retryable"], record
    assert "stopped after the job time limit of 3 s" in record["error"], record
    assert not list(out.glob("*.png")), "a stopped image writes nothing"


def test_an_openvino_ir_folder_imported_by_the_cli_makes_the_diffusers_folders_images(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The third import path: a user's own optimum-intel export of the pipeline is imported as it is
    and gives the images of the same weights imported as a diffusers folder."""
    import warnings

    from optimum.exporters.openvino import main_export

    from tests.tasks.imagegen.conftest import tiny_pipeline_folder

    ir = tmp_path / "tiny-lcm-ov"
    with warnings.catch_warnings():  # torch's tracer warns on every Python branch; pytest makes warnings errors
        warnings.simplefilter("ignore")
        main_export(
            model_name_or_path=str(tiny_pipeline_folder("lcm")), output=ir, task="text-to-image", convert_tokenizer=True
        )
    imported = cli(env, "models", "import", str(ir), "--name", "tiny-lcm-ir")
    assert "imported tiny-lcm-ir@1: lcm" in imported.stdout, imported.stdout
    common = ("a lighthouse at dusk", "--seeds", "3", "--steps", "2", "--width", "64", "--height", "64", "--local")
    for model in ("tiny-lcm", "tiny-lcm-ir"):
        cli(env, "txt2img", *common, "--model", model, "--out", str(tmp_path / model))
    name = "0001-3-a-lighthouse-at-dusk.png"
    assert np.array_equal(pixels(tmp_path / "tiny-lcm" / name), pixels(tmp_path / "tiny-lcm-ir" / name)), (
        "the IR-folder import makes another image than the diffusers-folder import of the same weights"
    )


def test_a_lora_made_for_another_base_fails_its_row_alone(env: dict[str, str], tmp_path: Path) -> None:
    """An SDXL adapter imported with no --base: nothing checks it until a worker builds the engine;
    then its row fails, named, and the rows around it are made."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for name, (fan_in, fan_out) in {  # SDXL layers: ten transformer blocks, two text encoders
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_7_attn2_to_k": (2048, 640),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
    }.items():
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((4, fan_in)).astype(np.float32)
        tensors[f"{name}.lora_up.weight"] = np.zeros((fan_out, 4), np.float32)
    save_file(tensors, str(tmp_path / "xl-style.safetensors"))
    cli(env, "models", "import", str(tmp_path / "xl-style.safetensors"), "--name", "xl-style", "--lora")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"prompt": "a red fox", "seeds": [1]}\n'
        '{"prompt": "a styled fox", "seeds": [1], "loras": ["xl-style:0.8"]}\n'
        '{"prompt": "a blue fox", "seeds": [1]}\n'
    )
    out = tmp_path / "out"
    done = cli(env, "txt2img", str(rows), "--model", "tiny-lcm", "--steps", "1", "--width", "64", "--height", "64",
               "--out", str(out), "--local", ok=False)  # fmt: skip
    assert "2 done" in done.stdout and "1 failed" in done.stdout, done.stdout
    assert "rows.jsonl:2" in done.stderr and "matches none of the" in done.stderr, done.stderr
    assert (out / "0001-1-a-red-fox.png").is_file() and (out / "0003-1-a-blue-fox.png").is_file()
    assert not (out / "0002-1-a-styled-fox.png").exists()
