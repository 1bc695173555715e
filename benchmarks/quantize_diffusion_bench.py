"""Diffusion quantization recipes through ``ovbatch quantize --local``, one process per recipe (so
that its peak RSS is its own): quantization time, peak RSS, size before/after, seconds per image of
the parent and the quantized pipeline (made side by side in the same job, same prompts and seeds) and
the gate's PSNR/SSIM against the parent's images.

    .venv/bin/python -m benchmarks.quantize_diffusion_bench [--tiny] [--kinds sd,lcm] [--unet-samples N]
        [--speed-images N [--only-speed]]

Models: the SD 1.5 architecture (and LCM Dreamshaper v7's, with ``--kinds lcm``) with random
weights from benchmarks/imagegen_models.py (``--tiny``: small stand-ins of the same layout, for
trying the benchmark code; still 512 px: 24 minutes for both kinds on 2 cores, of which SD
``int8-hybrid`` took 16, NNCF's two statistics passes over 200 UNet calls most of it). Random
weights measure speed and the recipes' distortion of one network against its float self, not image
quality. Calibration: the first ``--calib-prompts`` prompts below; evaluation: the others,
``--eval-images`` images. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import imagegen_bench
from benchmarks.imagegen_models import MANIFEST_KIND, bench_registry, cache_root
from ovbatch.tasks.quantize import recipes

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
RECIPES = ("int8-hybrid", "int8-weights")
# imagegen_bench's prompts (but its last) and more: calibration takes the first, evaluation the rest
PROMPTS = imagegen_bench.PROMPTS[:-1] + (
    "a field of sunflowers under a stormy sky",
    "a cozy library with a fireplace, warm light",
    "a macro photo of a dew drop on a leaf",
    "a medieval castle on a hill, misty morning",
    "a cat sleeping on a windowsill in the sun",
    "a snowy mountain village at night, lanterns",
    "a plate of sushi, top view, soft light",
    "a sailing ship in a storm, dramatic waves",
    "a robot painting a canvas in a studio",
    "a desert road at sunset with a vintage car",
    "a bouquet of tulips in a glass vase",
)


def _write_sets(folder: Path, calib: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    calib_file, eval_file = folder / "calibration.txt", folder / "evaluation.txt"
    calib_file.write_text("\n".join(PROMPTS[:calib]) + "\n")
    eval_file.write_text("\n".join(PROMPTS[calib:]) + "\n")
    return calib_file, eval_file


def run_recipe(
    env: dict[str, str], model: str, recipe: str, sets: tuple[Path, Path], out: Path, params: dict[str, Any]
) -> float:
    """One ``ovbatch quantize --local`` process; its wall time in seconds."""
    calib, evaluation = sets
    command = [OVBATCH, "quantize", model, "--recipe", recipe, "--eval", str(evaluation), "--out", str(out)]
    if recipe == "int8-hybrid":
        command += ["--calibration", str(calib)]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [*command, "--target", f"{model.split('@')[0]}-q", "--local"], env=env, text=True, capture_output=True
    )
    if done.returncode not in (0, 1):  # 1: a failed gate, which the table shows
        print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"ovbatch quantize {model} {recipe} failed (exit {done.returncode})")
    return time.perf_counter() - t0


def row(kind: str, report: dict[str, Any], wall_s: float) -> str:
    m, s, size = report["metrics"], report["seconds"], report["size_bytes"]
    parent_s, child_s = m["speed"]["parent_s_per_image"], m["speed"]["quantized_s_per_image"]
    gen = m["generation"]
    best = f"; best images {m['speed']['speedup_best']:.2f}x" if m["speed"].get("speedup_best") else ""
    return (
        f"| {kind} {gen['size']}px {gen['steps']} steps | {report['recipe']} | "
        f"{'pass' if report['gate']['passed'] else 'FAIL'} | "
        f"{s.get('calibrate', 0):.0f} / {s['quantize']:.0f} / {s['total']:.0f} s ({wall_s:.0f} s wall) | "
        f"{report['peak_rss_mib']:.0f} MiB | {size['before'] / 2**20:.0f} -> {size['after'] / 2**20:.0f} MiB | "
        f"{parent_s:.2f} / {child_s:.2f} s ({parent_s / max(child_s, 1e-9):.2f}x{best}) | "
        f"{m['psnr_db']['mean']:.1f} / {m['psnr_db']['min']:.1f} dB | "
        f"{m['ssim']['mean']:.3f} / {m['ssim']['min']:.3f} |"
    )


def side_by_side(bench: Any, kind: str, children: list[str], images: int, size: int) -> list[str]:
    """Seconds per image of the parent and each quantized version, one image of each in turn
    (parent, child, child, parent, ...), ``images`` rounds in one process on a quiet machine: the
    job's own speed figures time the parent's images before the child's, so anything else running
    meanwhile moves the ratio. Each call compiles its engine (not timed) and generates one image."""
    from ovbatch.jobs import Watch
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.tasks.quantize import diffusion, imagegate

    refs = [bench.models[kind], *children]
    versions = {ref: decrypt_version(bench.registry, ModelRef.parse(ref)) for ref in refs}
    gen = diffusion.generation_for(versions[refs[0]], {"size": size})
    watch = Watch("speed check", None, None, lambda: False)
    seconds: dict[str, list[float]] = {ref: [] for ref in refs}
    for n in range(images):
        for ref in refs if n % 2 == 0 else refs[::-1]:
            own = imagegate.private_version(versions[ref].manifest, versions[ref].buffers)
            todo = [(PROMPTS[-1 - n % len(PROMPTS)], n)]
            seconds[ref].append(imagegate.generate(own, "CPU", {}, gen, todo, watch, lambda _n: None).seconds_per_image)
    parent_s = sum(seconds[refs[0]]) / images
    return [
        f"| {kind} {gen.size}px {gen.steps} steps | {ref} | {sum(seconds[ref]) / images:.2f} s | "
        f"{parent_s / (sum(seconds[ref]) / images):.2f}x |"
        for ref in refs
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="small stand-in models (minutes, not hours)")
    parser.add_argument("--kinds", default="sd", help="sd, lcm or both (comma-separated)")
    parser.add_argument("--calib-prompts", type=int, default=10)
    parser.add_argument("--unet-samples", type=int, default=200, help="int8-hybrid's calibration UNet calls")
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=0, help="image side in pixels (0: the model's own, 512)")
    parser.add_argument(
        "--speed-images",
        type=int,
        default=0,
        help="then time this many images of the parent and each registered quantized version, in turn",
    )
    parser.add_argument("--only-speed", action="store_true", help="skip quantizing: time the versions already made")
    args = parser.parse_args()
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    bench = bench_registry(kinds, tiny=args.tiny)
    env = {**os.environ, **bench.env, "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    home = cache_root(args.tiny) / "quantize"
    sets = _write_sets(home, args.calib_prompts)
    out = home / f"reports-{int(time.time())}"
    rows = []
    for kind in kinds if not args.only_speed else ():
        model = bench.models[kind]
        for name in RECIPES:
            recipe = recipes.get(MANIFEST_KIND[kind], name)
            given = {"unet_samples": args.unet_samples, "eval_images": args.eval_images, "size": args.size}
            params = {k: v for k, v in given.items() if k in recipe.defaults and v != recipe.defaults[k]}
            wall_s = run_recipe(env, model, name, sets, out, params)
            path = out / model / f"{recipes.slug(recipe, recipes.params_for(recipe, params))}.json"
            if not path.is_file():
                raise SystemExit(f"no report at {path}")
            rows.append(row(kind, json.loads(path.read_text()), wall_s))
            print(rows[-1], file=sys.stderr, flush=True)
    if rows:
        print(
            "| model | recipe | gate | calibrate / quantize / total | peak RSS | size | s per image, parent / "
            "quantized (speedup) | PSNR mean / min | SSIM mean / min |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))
    if args.speed_images:
        print("\n| model | version | s per image | speedup |\n| --- | --- | --- | --- |")
        for kind in kinds:
            target = f"{bench.models[kind].split('@')[0]}-q"
            children = [f"{target}@{v}" for v in bench.registry.versions(target)]
            print("\n".join(side_by_side(bench, kind, children, args.speed_images, args.size)), flush=True)


if __name__ == "__main__":
    main()
