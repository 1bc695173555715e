"""Pipeline benchmarks (``ovbatch benchmark MODEL --pipeline SRC``): the real Whisper base over spoken
clips and the tiny LCM over a prompt file, run through the CLI in embedded mode, with a bad input in
each set; the stage figures, llm_bench's CSV, the batch table, plot and page; and the refusals."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ovbatch.tasks.pipebench.report import LLM_BENCH_HEADER
from tests.tasks.imagegen.conftest import ImagegenHome, imagegen_home  # noqa: F401  (the fixture)
from tests.tasks.transcribe.test_engine import speak

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
NO_REDIS = {"OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0"}  # unreachable: --local is what runs


def ovbatch(env: dict[str, str], cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OVBATCH, *args], env={**os.environ, **NO_REDIS, **env}, capture_output=True, text=True, timeout=900, cwd=cwd
    )
    if ok:
        assert done.returncode == 0, f"ovbatch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def run_reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("batch-")]


def batch_folder(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir() and (p / "index.html").exists()]
    return folder


@pytest.mark.slow
def test_a_whisper_pipeline_run_reports_rtfx_encoder_and_decoder_figures(
    whisper_home: dict[str, str], tmp_path: Path
) -> None:
    audio, spoken = tmp_path / "audio", tmp_path / "spoken"
    audio.mkdir()
    spoken.mkdir()
    speak(spoken / "one.wav", "The quick brown fox jumps over the lazy dog.")
    speak(spoken / "two.wav", "Batch transcription of an archive runs on every worker of the fleet.", pad_s=1.0)
    for name in ("one.wav", "two.wav"):
        (spoken / name).rename(audio / name)
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt not really audio")
    out = tmp_path / "out"
    done = ovbatch(
        whisper_home,
        tmp_path,
        "benchmark",
        "whisper-base",
        "--pipeline",
        str(audio),
        "--out",
        str(out),
        "--language",
        "en",
        "--local",
    )
    (run,) = run_reports(out)
    assert run["status"] == "done" and run["pipeline"] == "transcribe", run
    (failure,) = run["failures"]
    assert failure["input"].endswith("broken.wav") and "broken.wav" in failure["error"], failure
    assert "failed_inputs 1" in done.stdout + done.stderr or run["results"]["failed_files"] == 1
    res = run["results"]
    assert res["files"] == 2, f"the two good clips should be measured: {res['files']} ({run['failures']})"
    assert 3 < res["audio_s"] < 15 and res["rtfx"] > 0.5, res
    assert res["rtfx_with_decode"] <= res["rtfx"], res
    assert res["windows"] == 1 and res["encoder_calls"] == 1, "two short clips share one packed window"
    assert 1 < res["encoder_ms_per_window"] < 5000, res
    assert res["tokens"] >= 15 and res["decoder_steps"] >= 10, res
    assert 0.1 < res["decoder_ms_per_token"] < res["decoder_first_call_ms"] + res["decoder_step_ms"], res
    stages = res["seconds"]
    assert abs(sum(stages.values()) - res["transcribe_s"]) < 0.01 * res["transcribe_s"] + 1e-3, (stages, res)
    assert res["load_s"] > 0 and res["engine_cached"] is False and res["peak_rss_mib"] > 200, res
    texts = {item["input"].split("/")[-1]: item["text"].lower() for item in run["items"]}
    assert "fox" in texts["one.wav"] and "worker" in texts["two.wav"], texts
    assert run["machine"]["cpu_model"] and "load_before" in run["machine"], run["machine"]
    rows = list(csv.DictReader(io.StringIO((out / run["run_id"] / "pipeline_report.csv").read_text())))
    assert tuple(rows[0])[: len(LLM_BENCH_HEADER)] == LLM_BENCH_HEADER, list(rows[0])
    assert float(rows[0]["generation_time(s)"]) == pytest.approx(res["transcribe_s"], abs=1e-3)
    assert int(rows[0]["output_size"]) == res["tokens"] and float(rows[0]["rtfx"]) == pytest.approx(res["rtfx"], 1e-3)
    folder = batch_folder(out)
    table = list(csv.DictReader(io.StringIO((folder / "pipeline_runs.csv").read_text())))
    assert [r["status"] for r in table].count("done") == 1 and float(table[0]["rtfx"]) > 0, table
    assert (folder / "stages.png").stat().st_size > 5000
    assert "encoder_ms_per_window" in (folder / "index.html").read_text()


@pytest.mark.slow
def test_an_image_pipeline_run_reports_llm_bench_stage_timings(
    imagegen_home: ImagegenHome,  # noqa: F811
    tmp_path: Path,
) -> None:
    registry = imagegen_home.registry
    env = {"OVBATCH_STORAGE_URL": registry.store.url, "OVBATCH_KEYRING": str(registry.keyring.path)}  # type: ignore[attr-defined]
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "prompt,seeds,width,height,scheduler\n"
        "a lighthouse at dusk,1-2,64,64,\n"
        "a red bicycle,3,64,64,LCM\n"  # a row naming a scheduler runs with it
        "a bad row,4,500,64,\n"  # not a multiple of 8: fails alone, named
        "another size,5,128,128,\n"  # one size per run: fails alone, named
    )
    out = tmp_path / "out"
    ref = str(imagegen_home.refs["lcm"])
    done = ovbatch(env, tmp_path, "benchmark", ref, "--pipeline", str(prompts), "--out", str(out), "--local", ok=False)
    said = done.stdout + done.stderr
    assert "prompts.csv:4" in said and "prompts.csv:5" in said, f"the refused rows are not named:\n{said}"
    (run,) = run_reports(out)
    res = run["results"]
    assert run["status"] == "done" and res["images"] == 3, (res, run.get("failures"))
    assert (res["width"], res["height"]) == (64, 64)
    for key in ("unet_first_step_ms", "unet_other_steps_avg_ms", "vae_decode_ms"):
        assert res[key] > 0, f"{key}: {res[key]}"
    # genai times the text encoder in whole milliseconds (duration_cast<milliseconds>): this tiny
    # model's can take under 1 ms on a fast CPU and read 0 (seen in CI); never negative or missing
    assert res["text_encoder_ms"] >= 0, f"text_encoder_ms: {res['text_encoder_ms']}"
    assert res["seconds_per_image_min"] <= res["seconds_per_image"] <= res["seconds_per_image_max"], res
    item = run["items"][0]
    assert item["steps"] == 4, "an LCM row gets the family's 4 steps"
    parts = item["text_encoder_ms"] + item["unet_first_step_ms"] + 3 * item["unet_other_steps_avg_ms"]
    assert parts + item["vae_decode_ms"] <= item["seconds"] * 1000 * 1.05, item
    rows = list(csv.DictReader(io.StringIO((out / run["run_id"] / "pipeline_report.csv").read_text())))
    assert len(rows) == 3 and tuple(rows[0])[: len(LLM_BENCH_HEADER)] == LLM_BENCH_HEADER
    assert float(rows[0]["1st_latency(ms)"]) == pytest.approx(item["unet_first_step_ms"], abs=1e-3)
    assert float(rows[0]["vae_decoder_latency(ms)"]) == pytest.approx(item["vae_decode_ms"], abs=1e-3)
    assert (batch_folder(out) / "stages.png").stat().st_size > 5000


def test_pipeline_runs_refuse_what_they_cannot_measure(tmp_path: Path) -> None:
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore
    from tests.conftest import build_tiny_ir

    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    Registry(FileStore(tmp_path / "storage"), ring).import_folder(build_tiny_ir(tmp_path / "src"), "tiny")
    env = {"OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    out = str(tmp_path / "out")
    cases = [
        (("tiny", "--pipeline", str(prompts)), "measure a single IR without --pipeline"),
        (("tiny", "--pipeline", str(prompts), "--nireq", "2"), "--nireq"),
        (("tiny", "--pipeline", str(prompts), "--sweep", "hint=latency,throughput"), "sweeps model and device only"),
        (("nosuch", "--pipeline", str(prompts)), "nosuch"),
    ]
    for args, expected in cases:
        done = ovbatch(env, tmp_path, "benchmark", *args, "--out", out, "--local", ok=False)
        said = done.stdout + done.stderr
        assert done.returncode != 0 and expected in said, f"{args}: expected {expected!r} in:\n{said}"
        assert "Traceback" not in said, said
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True
