"""Pipeline benchmark jobs (``ovbatch benchmark MODEL --pipeline SRC``) through Redis and one worker,
checked against what the job kinds themselves measure, side by side in one run.

    .venv/bin/python -m benchmarks.pipeline_bench [--int8] [--images real|tiny|none] [--redis-url URL]

A real deployment in miniature (benchmarks/transcribe_bench.Ovbatch: Redis, one worker pinned to 2
cores, an encrypted file:// registry holding the real Whisper base):

  transcription  the 36-clip espeak set and the two long files, one pipeline run each (with --int8
                 also the int8-hybrid version, quantized first: a sweep of model=whisper-base@1,@2);
                 then, for the same files, `ovbatch transcribe --wait` end to end (its wall time from
                 submission to the batch's end: the pipeline's RTFx should be at or above it, as it
                 leaves out queueing, file decoding and writing outputs) and a single-IR benchmark of
                 the encoder at the pipeline's batch (8 windows, latency hint): its latency / 8 beside
                 the pipeline's encoder ms per window.
  images         LCM (SD 1.5 architecture, random weights: benchmarks/imagegen_models.py) at 512x512,
                 4 steps, over 4 prompts: s per image and genai's stage timings; then the same prompts
                 through `ovbatch txt2img --wait` (its sidecars' per-stage timings) for comparison.

Results: a markdown table on stdout, benchmarks/out/pipeline_bench.json, and each batch's index.html,
pipeline_runs.csv and stages.png under benchmarks/out/pipeline/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speech import make_clips
from benchmarks.transcribe_bench import OUT, OVBATCH, SPEECH, Ovbatch, audio_seconds, long_files

PROMPTS = [
    "a lighthouse on a cliff at dusk, oil painting",
    "a red bicycle leaning on a brick wall, photograph",
    "a bowl of ramen, studio lighting",
    "a snowy mountain village at night, watercolor",
]


def cli(ov: Ovbatch, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([OVBATCH, *args], env=ov.env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ovbatch {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("batch-")]


def keep_batch_pages(out: Path, name: str) -> None:
    dest = OUT / "pipeline" / name
    shutil.rmtree(dest, ignore_errors=True)
    for folder in out.iterdir():
        if (folder / "index.html").exists():
            shutil.copytree(folder, dest)


def pipeline_runs(ov: Ovbatch, name: str, source: Path, models: list[str], *extra: str) -> list[dict[str, Any]]:
    out = ov.work / f"pipeline-{name}"
    args = ["benchmark", models[0], "--pipeline", str(source), "--out", str(out), "--wait", *extra]
    if len(models) > 1:
        args += ["--sweep", f"model={','.join(models)}"]
    cli(ov, *args)
    keep_batch_pages(out, name)
    return reports(out)


def end_to_end_rtfx(ov: Ovbatch, paths: list[Path], model: str) -> float:
    t0 = time.perf_counter()
    ov.run(paths, model)
    return audio_seconds(paths) / (time.perf_counter() - t0)


def encoder_single_ir(ov: Ovbatch, model: str, precision: str | None) -> float:
    """ms per window of the encoder IR alone at 8 windows a call (benchmark_app's method), computing
    in the precision the transcription engine compiled it in."""
    out = ov.work / f"encoder-{model.replace('@', '-')}"
    extra = ["--infer-precision", precision] if precision in ("f32", "bf16", "f16") else []
    cli(
        ov,
        "benchmark",
        model,
        *extra,
        "--part",
        "encoder",
        "--shape",
        "[8,80,3000]",
        "--hint",
        "latency",
        "--time",
        "15",
        "--out",
        str(out),
        "--wait",
    )
    (run,) = reports(out)
    return float(run["latency_ms"]["median"]) / 8


def speech_rows(ov: Ovbatch, models: list[str]) -> list[dict[str, Any]]:
    clips_dir = SPEECH / "clips"
    make_clips(clips_dir)
    clips = sorted(clips_dir.glob("*.wav"))
    longs = [p for p, _ in long_files()]
    rows = []
    for name, paths in (("clips", clips), ("long", longs)):
        src = Path(tempfile.mkdtemp(prefix=f"pipe-{name}-", dir=ov.work))
        for p in paths:
            shutil.copy(p, src / p.name)
        runs = pipeline_runs(ov, f"whisper-{name}", src, models, "--language", "en")
        for run in runs:
            res = run["results"]
            model = run["model"]
            e2e = end_to_end_rtfx(ov, paths, model)
            rows.append(
                {
                    "set": name,
                    "model": model,
                    "files": res["files"],
                    "audio_s": round(res["audio_s"], 1),
                    "pipeline_rtfx": round(res["rtfx"], 1),
                    "end_to_end_rtfx": round(e2e, 1),
                    "encoder_ms_per_window": round(res["encoder_ms_per_window"], 1),
                    "decoder_ms_per_token": round(res["decoder_ms_per_token"], 2),
                    "decoder_step_ms": round(res["decoder_step_ms"], 2),
                    "decoder_first_call_ms": round(res["decoder_first_call_ms"], 1),
                    "windows": res["windows"],
                    "tokens": res["tokens"],
                    "seconds": {k: round(v, 2) for k, v in res["seconds"].items()},
                    "load_s": res["load_s"],
                    "inference_precision": run.get("inference_precision"),
                    "busy": run["machine"]["busy"],
                }
            )
    for model in models:
        computes = next((r["inference_precision"] for r in rows if r["model"] == model), None)
        single = encoder_single_ir(ov, model, computes)
        for row in rows:
            if row["model"] == model:
                row["encoder_single_ir_ms_per_window"] = round(single, 1)
    return rows


def image_rows(ov: Ovbatch, tiny: bool) -> list[dict[str, Any]]:
    from benchmarks.imagegen_models import pipeline_folder

    folder = pipeline_folder("lcm", tiny=tiny)
    t0 = time.perf_counter()
    cli(ov, "models", "import", str(folder), "--name", "lcm")
    print(f"LCM imported in {time.perf_counter() - t0:.0f} s", flush=True)
    size = 64 if tiny else 512
    prompts = ov.work / "prompts.csv"
    lines = ["prompt,seeds,steps,guidance,width,height"]
    lines += [f'"{p}",{i},4,8,{size},{size}' for i, p in enumerate(PROMPTS)]
    prompts.write_text("\n".join(lines) + "\n")
    (run,) = pipeline_runs(ov, "lcm", prompts, ["lcm"])
    res = run["results"]
    # the image kind's own engine (its cache key is not the pipeline kind's): one image loads it, then
    # the timed batch of the same prompts runs warm, as the pipeline run's images did
    cli(
        ov,
        "txt2img",
        "a warm-up image",
        "--model",
        "lcm",
        "--width",
        str(size),
        "--height",
        str(size),
        "--steps",
        "4",
        "--out",
        str(ov.work / "txt2img-warmup"),
        "--wait",
    )
    out = ov.work / "txt2img"
    t0 = time.perf_counter()
    cli(ov, "txt2img", str(prompts), "--model", "lcm", "--out", str(out), "--wait")
    wall = time.perf_counter() - t0
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("batch-")]
    timings = [s.get("timings_s") or {} for s in sidecars]

    def median_ms(key: str) -> float | None:
        values = [t[key] * 1000 for t in timings if key in t]
        return round(statistics.median(values), 1) if values else None

    return [
        {
            "model": "lcm (SD 1.5 architecture, random weights)" if not tiny else "tiny lcm",
            "size": f"{size}x{size}",
            "images": res["images"],
            "pipeline_s_per_image": round(res["seconds_per_image"], 3),
            "txt2img_batch_s_per_image": round(wall / len(PROMPTS), 3),
            "text_encoder_ms": round(res["text_encoder_ms"], 1),
            "unet_first_step_ms": round(res["unet_first_step_ms"], 1),
            "unet_other_steps_avg_ms": round(res["unet_other_steps_avg_ms"], 1),
            "vae_decode_ms": round(res["vae_decode_ms"], 1),
            "txt2img_sidecar_unet_other_steps_avg_ms": median_ms("unet_other_steps_avg"),
            "txt2img_sidecar_vae_decode_ms": median_ms("vae_decode"),
            "load_s": res["load_s"],
            "busy": run["machine"]["busy"],
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--int8", action="store_true", help="also the int8-hybrid Whisper version (quantized first)")
    parser.add_argument("--images", choices=("real", "tiny", "none"), default="real")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ovbatch-pipeline-bench-"))
    ov = Ovbatch(work, args.redis_url)
    models = ["whisper-base@1"]
    if args.int8:
        v2 = ov.quantize_int8()
        if v2:
            models.append(v2)
    ov.start_worker()
    try:
        speech = speech_rows(ov, models)
        images = image_rows(ov, args.images == "tiny") if args.images != "none" else []
    finally:
        ov.stop()
    result = {
        "speech": speech,
        "images": images,
        "command": "python -m benchmarks.pipeline_bench "
        + " ".join(a for a in ("--int8" if args.int8 else "", f"--images {args.images}") if a),
    }
    (OUT / "pipeline_bench.json").write_text(json.dumps(result, indent=2))
    print(
        "\n| set | model | files | audio s | pipeline RTFx | transcribe end to end RTFx | encoder ms/window "
        "(single IR) | decoder ms/token | decoder step ms | first call ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in speech:
        print(
            f"| {r['set']} | {r['model']} | {r['files']} | {r['audio_s']} | {r['pipeline_rtfx']} | "
            f"{r['end_to_end_rtfx']} | {r['encoder_ms_per_window']} ({r.get('encoder_single_ir_ms_per_window')}) | "
            f"{r['decoder_ms_per_token']} | {r['decoder_step_ms']} | {r['decoder_first_call_ms']} |"
        )
    if images:
        print(
            "\n| model | size | images | pipeline s/image | txt2img batch s/image | text encoder ms | "
            "UNet first step ms | UNet other steps ms (txt2img) | VAE decode ms (txt2img) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in images:
            print(
                f"| {r['model']} | {r['size']} | {r['images']} | {r['pipeline_s_per_image']} | "
                f"{r['txt2img_batch_s_per_image']} | {r['text_encoder_ms']} | {r['unet_first_step_ms']} | "
                f"{r['unet_other_steps_avg_ms']} ({r['txt2img_sidecar_unet_other_steps_avg_ms']}) | "
                f"{r['vae_decode_ms']} ({r['txt2img_sidecar_vae_decode_ms']}) |"
            )
    print(f"\nbenchmarks/out/pipeline_bench.json; pages in {OUT / 'pipeline'}")


if __name__ == "__main__":
    main()
