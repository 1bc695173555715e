"""Image generation: ovbatch end to end against diffusers PyTorch, side by side in one run.

    .venv/bin/python -m benchmarks.imagegen_bench [--kinds lcm,sd] [--images N] [--rss-images N]

Models: the real SD 1.5 and LCM Dreamshaper v7 architectures with random weights
(benchmarks/imagegen_models.py; built, exported and imported once under .cache/bench/). The same
prompts and seeds for every engine; LCM 4 steps guidance 8, SD 20 steps guidance 7.5 (PNDM), 512x512.
Measured, per kind:
  ovbatch     end to end: `ovbatch txt2img --wait` -> Redis -> one worker pinned to 2 cores ->
              encrypted registry -> PNG + JSON sidecar in a file:// store. A one-image batch first
              (the worker starts cold: fetch, decrypt, compile), then a batch of N warm images;
              per-stage times from the sidecars (openvino_genai's ImageGenerationPerfMetrics)
  diffusers   PyTorch fp32 on the same weights, 2 threads, torch.Generator().manual_seed(seed);
              stages timed with forward hooks (a 2-step warm-up image first, not counted)
  acquire     WorkerContext.engine() cold (fetch + decrypt + compile) and warm (cache hit), in-process
  lora        a random rank-8 kohya LoRA on every UNet attention projection: one image without it,
              then on one cached engine alpha 1.0, 0.5 and 1.0 again (genai updates state, no recompile)
  f32 engine  one image in an ImageEngine compiled with INFERENCE_PRECISION_HINT=f32 (no worker
              setting chooses the precision), stages from genai's metrics
Once (first kind): the VAE decoder at bf16 / f32, static / dynamic shapes, in the engine and in plain
OpenVINO with other settings (THROUGHPUT hint, CPU pinning, INT8 weights, INT8 quantized on random
calibration inputs: speed only); one UNet step in plain OpenVINO at bf16, f32 and INT8; and a
worker's RSS over --rss-images LCM images at --rss-size, sampled every 10 images (plot in
benchmarks/out/imagegen_rss.png). Results: a markdown table on stdout, benchmarks/out/imagegen_bench.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.imagegen_models import BenchRegistry, bench_registry, pipeline_folder
from ovbatch.process import die_with_parent

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
THREADS = 2
PROMPTS = (
    "a red fox in the snow, golden hour, detailed fur",
    "a lighthouse on a cliff at dusk, oil painting",
    "a bowl of ramen on a wooden table, studio photo",
    "an astronaut riding a horse on mars, digital art",
    "a watercolor of a quiet harbour with small boats",
    "a cyberpunk street at night, neon signs, rain",
    "a portrait of an old sailor, dramatic lighting",
    "a cozy cabin in a pine forest, morning fog",
)
STAGES = ("text_encoder", "unet_first_step", "unet_other_steps_avg", "vae_decode")
VAE_DECODER = "vae_decoder/openvino_model.xml"
UNET = "unet/openvino_model.xml"


@dataclass(frozen=True)
class Setting:
    """What one image is asked for (the same for every engine)."""

    kind: str
    steps: int
    guidance: float
    width: int = 512
    height: int = 512

    @property
    def latent_shape(self) -> list[int]:
        return [1, 4, self.height // 8, self.width // 8]


SETTINGS = {"lcm": Setting("lcm", 4, 8.0), "sd": Setting("sd", 20, 7.5)}


def images_for(n: int, first_seed: int = 0) -> list[tuple[str, int]]:
    """(prompt, seed) pairs: prompts in turn, one seed each."""
    return [(PROMPTS[i % len(PROMPTS)], first_seed + i) for i in range(n)]


@contextlib.contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Record how long a part of the benchmark took (for the report)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[name] = round(time.perf_counter() - t0, 1)
        print(f"# {name}: {into[name]} s", file=sys.stderr, flush=True)


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def stage_means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {stage: mean([r[stage] for r in rows]) for stage in STAGES}


# ---------------------------------------------------------------------------------------------
# ovbatch end to end: Redis and one worker process


class Worker:
    """`ovbatch worker` on 2 pinned cores against the benchmark registry, and `ovbatch txt2img --wait`."""

    def __init__(self, reg: BenchRegistry, redis_url: str, work: Path):
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
        self.env.update(reg.env, OVBATCH_BROKER_URL=redis_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.batches = 0

    def start(self) -> None:
        import redis

        cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:THREADS])
        log = open(self.work / "worker.log", "ab")  # noqa: SIM115
        cmd = [OVBATCH, "worker", "--device", "CPU", "--cpus", cpus]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        client = redis.Redis.from_url(self.env["OVBATCH_BROKER_URL"])
        for _ in range(600):
            if any(
                json.loads(client.get(k) or b"{}").get("pid") == self.proc.pid
                for k in client.scan_iter("ovbatch:worker:*")
            ):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"worker did not start; see {self.work / 'worker.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=120)
        self.proc = None

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def txt2img(self, model: str, setting: Setting, images: list[tuple[str, int]]) -> dict[str, Any]:
        """One batch through Redis; wall seconds from the command's start to its end, the sidecars."""
        self.batches += 1
        rows, out = self.work / f"prompts-{self.batches}.jsonl", self.work / f"out-{self.batches}"
        rows.write_text("".join(json.dumps({"prompt": p, "seeds": [s]}) + "\n" for p, s in images))
        cmd = [OVBATCH, "txt2img", str(rows), "--model", model, "--out", str(out), "--wait"]
        cmd += ["--steps", str(setting.steps), "--guidance", str(setting.guidance)]
        cmd += ["--width", str(setting.width), "--height", str(setting.height)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0 or "Redis" in done.stderr:
            raise RuntimeError(f"`ovbatch txt2img` failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
        sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("batch-")]
        sidecars = [s for s in sidecars if "timings_s" in s]
        if len(sidecars) != len(images):
            raise RuntimeError(f"{len(images)} images asked, {len(sidecars)} sidecars in {out}")
        return {"wall_s": wall, "span_s": self.span_s(done.stdout), "sidecars": sidecars}

    def span_s(self, stdout: str) -> float:
        """The batch from its creation in Redis to its last job's end (`ovbatch status --json`): the
        command's own start-up and --wait's polling left out."""
        batch_id = stdout.split("batch ", 1)[1].split(":", 1)[0]
        status = subprocess.run([OVBATCH, "status", batch_id, "--json"], env=self.env, capture_output=True, text=True)
        summary = json.loads(status.stdout)["summary"]
        return float(summary["ended_s"]) - float(summary["created_s"])


def ovbatch_e2e(worker: Worker, model: str, setting: Setting, n: int) -> dict[str, Any]:
    """A cold one-image batch (the worker's first job loads the model), then n warm images."""
    cold = worker.txt2img(model, setting, [("warm-up: a plain grey square", 10_000)])
    warm = worker.txt2img(model, setting, images_for(n))
    timings = [s["timings_s"] for s in warm["sidecars"]]
    per_image = warm["span_s"] / n
    return {
        "images": n,
        "cold_batch_of_1_s": round(cold["span_s"], 2),
        "cold_load_s": round(cold["span_s"] - per_image, 2),  # the first job's extra: fetch, decrypt, compile
        "warm_batch_span_s": round(warm["span_s"], 2),
        "warm_command_wall_s": round(warm["wall_s"], 2),  # with the CLI's start-up and --wait polling
        "s_per_image": round(per_image, 3),
        "engine_generate_s": mean([t["wall"] for t in timings]),
        # the worker runs 8 jobs at once in threads, waiting for its one pipeline: this counts the wait
        "job_processing_s": mean([s["processing_s"] for s in warm["sidecars"]]),
        "stages_s": stage_means(timings),
    }


# ---------------------------------------------------------------------------------------------
# diffusers PyTorch fp32


class TorchStages:
    """Per-call seconds of the text encoder and UNet (forward hooks) and of the VAE decode (wrapped)."""

    def __init__(self, pipe: Any):
        self.calls: dict[str, list[float]] = {"text_encoder": [], "unet": [], "vae_decode": []}
        for name in ("text_encoder", "unet"):
            self._hook(getattr(pipe, name), self.calls[name])
        decode, into = pipe.vae.decode, self.calls["vae_decode"]

        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = decode(*args, **kwargs)
            into.append(time.perf_counter() - t0)
            return result

        pipe.vae.decode = timed_decode

    @staticmethod
    def _hook(module: Any, into: list[float]) -> None:
        start: list[float] = []
        module.register_forward_pre_hook(lambda *_: start.append(time.perf_counter()))
        module.register_forward_hook(lambda *_: into.append(time.perf_counter() - start.pop()))

    def take(self) -> dict[str, float]:
        """The stages of the image just made, as genai reports them; then start afresh."""
        unet = self.calls["unet"]
        row = {
            "text_encoder": sum(self.calls["text_encoder"]),
            "unet_first_step": unet[0],
            "unet_other_steps_avg": statistics.fmean(unet[1:]) if len(unet) > 1 else float("nan"),
            "vae_decode": sum(self.calls["vae_decode"]),
        }
        for calls in self.calls.values():
            calls.clear()
        return row


def diffusers_fp32(kind: str, setting: Setting, n: int, tiny: bool) -> dict[str, Any]:
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(pipeline_folder(kind, tiny), torch_dtype=torch.float32)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    stages = TorchStages(pipe)
    args = {"num_inference_steps": setting.steps, "guidance_scale": setting.guidance}
    args.update(width=setting.width, height=setting.height)
    with torch.inference_mode():
        pipe(
            "warm-up: a plain grey square",
            **{**args, "num_inference_steps": 2},
            generator=torch.Generator().manual_seed(1),
        )
        stages.take()
        walls, rows = [], []
        for prompt, seed in images_for(n):
            t0 = time.perf_counter()
            pipe(prompt, **args, generator=torch.Generator().manual_seed(seed))
            walls.append(time.perf_counter() - t0)
            rows.append(stages.take())
    del pipe
    gc.collect()
    return {"images": n, "load_s": round(load_s, 2), "s_per_image": mean(walls), "stages_s": stage_means(rows)}


# ---------------------------------------------------------------------------------------------
# in-process: engine acquire, LoRA switch, the VAE decoder


def engine_options_for(setting: Setting, loras: tuple[tuple[str, float], ...] = ()) -> dict[str, Any]:
    """The worker's engine options for an image job of ``setting`` (tasks/imagegen/kind.py)."""
    from ovbatch.tasks.imagegen.kind import engine_options

    uses = tuple(SimpleNamespace(model=m, alpha=a) for m, a in loras)
    spec = SimpleNamespace(width=setting.width, height=setting.height, guidance=setting.guidance, loras=uses)
    return engine_options(spec)  # type: ignore[arg-type]


def request_for(setting: Setting, prompt: str, seed: int, adapters: tuple[tuple[str, float], ...] = ()) -> Any:
    from ovbatch.tasks.imagegen.engine import ImageRequest

    return ImageRequest(
        prompt=prompt,
        seed=seed,
        steps=setting.steps,
        guidance=setting.guidance,
        width=setting.width,
        height=setting.height,
        adapters=adapters,
    )


def embedded_context(reg: BenchRegistry) -> Any:
    from ovbatch.settings import Settings
    from ovbatch.workers.main import build_embedded_context

    return build_embedded_context(Settings.from_env(reg.env), "CPU")


def acquire(ctx: Any, model: str, options: dict[str, Any], repeats: int = 20) -> dict[str, Any]:
    """``WorkerContext.engine`` cold, then warm (median of ``repeats``)."""
    t0 = time.perf_counter()
    engine = ctx.engine("txt2img", model, "CPU", options)
    cold = time.perf_counter() - t0
    hits = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        again = ctx.engine("txt2img", model, "CPU", options)
        hits.append(time.perf_counter() - t0)
        assert again is engine, "a warm acquire must return the cached engine"
    warm = statistics.median(hits)
    return {
        "engine": engine,
        "cold_s": round(cold, 3),
        "warm_ms": round(warm * 1000, 3),
        "warm_over_cold_pct": round(warm / cold * 100, 4),
    }


def warm_up(engine: Any, setting: Setting, adapters: tuple[tuple[str, float], ...] = ()) -> None:
    """A one-step image: a new engine's first inference allocates its buffers."""
    engine.generate(request_for(replace(setting, steps=1), PROMPTS[1], 1, adapters))


def lora_switch(reg: BenchRegistry, kind: str, setting: Setting) -> dict[str, Any]:
    """An image without LoRA, then on one LoRA engine alpha 1.0, 0.5, 1.0 (each engine warmed up with
    a one-step image at alpha 0): seconds each, the LoRA engine's cold acquire, and whether the alphas
    changed the pixels (they must)."""
    import numpy as np

    ctx = embedded_context(reg)
    model, lora = reg.models[kind], reg.loras[kind]
    prompt, seed = PROMPTS[0], 0
    plain = acquire(ctx, model, engine_options_for(setting))
    out: dict[str, Any] = {k: v for k, v in plain.items() if k != "engine"}
    warm_up(plain["engine"], setting)
    image = plain["engine"].generate(request_for(setting, prompt, seed))
    out["no_lora_s"] = round(image.timings_s["wall"], 3)
    release_all(ctx)  # one model in memory at a time
    loaded = acquire(ctx, model, engine_options_for(setting, ((lora, 1.0),)), repeats=3)
    out["lora_engine_cold_s"] = loaded["cold_s"]
    warm_up(loaded["engine"], setting, ((lora, 0.0),))
    pixels = []
    for name, alpha in (("alpha_1_first_s", 1.0), ("alpha_0.5_s", 0.5), ("alpha_1_again_s", 1.0)):
        image = loaded["engine"].generate(request_for(setting, prompt, seed, ((lora, alpha),)))
        out[name] = round(image.timings_s["wall"], 3)
        pixels.append(image.pixels)
    out["alpha_changes_pixels"] = bool(not np.array_equal(pixels[0], pixels[1]))
    out["same_alpha_same_pixels"] = bool(np.array_equal(pixels[0], pixels[2]))
    release_all(ctx)
    return out


def release_all(ctx: Any) -> None:
    """Drop every engine the context cached (wipes their plaintext)."""
    cache = ctx.cache
    with cache._lock:  # noqa: SLF001
        entries = list(cache._entries.values())  # noqa: SLF001
        cache._entries.clear()  # noqa: SLF001
    for entry in entries:
        release = getattr(entry.value, "release", None)
        if release is not None:
            release()
    gc.collect()


def decrypt(reg: BenchRegistry, kind: str, roles: tuple[str, ...] | None = None) -> Any:
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.tasks.imagegen.components import ROLES

    return decrypt_version(reg.registry, ModelRef.parse(reg.models[kind]), roles=roles or ROLES)


def engine_image(reg: BenchRegistry, kind: str, setting: Setting, config: dict[str, Any]) -> dict[str, Any]:
    """One full image in an ImageEngine built as a worker builds it (static shapes), after a one-step
    warm-up image: seconds and stages (for the precision the worker does not offer a setting for)."""
    from ovbatch.tasks.imagegen.engine import ImageEngine

    size = (setting.width, setting.height)
    engine = ImageEngine.from_version(decrypt(reg, kind), "CPU", config, static_size=size, noise_kind="numpy")
    try:
        warm_up(engine, setting)
        timings = engine.generate(request_for(setting, PROMPTS[0], 0)).timings_s
    finally:
        engine.release()
        gc.collect()
    return {"s_per_image": round(timings["wall"], 3), "stages_s": {k: round(timings[k], 4) for k in STAGES}}


def engine_vae(reg: BenchRegistry, kind: str, setting: Setting, config: dict[str, Any], static: bool) -> float:
    """VAE decode seconds inside an ImageEngine (genai's metrics), 1-step images, median of 3."""
    from ovbatch.tasks.imagegen.engine import ImageEngine

    size = (setting.width, setting.height) if static else None
    engine = ImageEngine.from_version(decrypt(reg, kind), "CPU", config, static_size=size, noise_kind="numpy")
    try:
        one_step = replace(setting, steps=1)
        engine.generate(request_for(one_step, PROMPTS[1], 1))  # first inference: buffers, not counted
        times = [engine.generate(request_for(one_step, PROMPTS[1], s)).timings_s["vae_decode"] for s in (2, 3, 4)]
    finally:
        engine.release()
        gc.collect()
    return round(statistics.median(times), 3)


F32 = {"INFERENCE_PRECISION_HINT": "f32"}
PLAIN = {"ENABLE_CPU_PINNING": False, "INFERENCE_NUM_THREADS": THREADS}  # as the engine compiles
# (label, form of the model, compile config): the VAE decoder's candidates, then the UNet's
VAE_VARIANTS = (
    ("bf16 static (engine default)", "static", PLAIN),
    ("bf16 dynamic", "dynamic", PLAIN),
    ("f32 static", "static", {**PLAIN, **F32}),
    ("bf16 static, PERFORMANCE_HINT=THROUGHPUT", "static", {**PLAIN, "PERFORMANCE_HINT": "THROUGHPUT"}),
    ("bf16 static, CPU pinning on", "static", {**PLAIN, "ENABLE_CPU_PINNING": True}),
    ("INT8 weights (nncf.compress_weights), f32 rest", "int8-weights", {**PLAIN, **F32}),
    ("INT8 quantized (nncf.quantize), f32 rest", "int8-quantized", {**PLAIN, **F32}),
    ("INT8 quantized (nncf.quantize), bf16 rest", "int8-quantized", PLAIN),
)
UNET_VARIANTS = (
    ("bf16 static (engine default)", "static", PLAIN),
    ("f32 static", "static", {**PLAIN, **F32}),
    ("INT8 weights (nncf.compress_weights), f32 rest", "int8-weights", {**PLAIN, **F32}),
    ("INT8 quantized (nncf.quantize), f32 rest", "int8-quantized", {**PLAIN, **F32}),
)


def static_shapes(model: Any, role: str, setting: Setting) -> dict[str, list[int]]:
    """The shapes the engine reshapes a model to (the UNet holds 2 rows with classifier-free guidance)."""
    if role == VAE_DECODER:
        return {model.inputs[0].any_name: setting.latent_shape}
    rows = 2 if setting.kind == "sd" and setting.guidance > 1 else 1
    shapes = {"sample": [rows, *setting.latent_shape[1:]], "timestep": [1]}
    for port in model.inputs:
        if port.any_name in ("encoder_hidden_states", "timestep_cond"):
            width = port.get_partial_shape()[-1].get_length()  # the text encoder's or time condition's width
            shapes[port.any_name] = [rows, 77, width] if port.any_name == "encoder_hidden_states" else [rows, width]
    return {port.any_name: shapes[port.any_name] for port in model.inputs}


def random_inputs(model: Any, seed: int) -> dict[str, Any]:
    """Inputs for a static model: normal noise (values do not change the speed), timesteps 500."""
    import numpy as np

    rng, feeds = np.random.default_rng(seed), {}
    for port in model.inputs:
        shape, dtype = list(port.get_shape()), port.get_element_type().to_dtype()
        feeds[port.any_name] = (rng.standard_normal(shape) if dtype.kind == "f" else np.full(shape, 500)).astype(dtype)
    return feeds


class ComponentForms:
    """One decrypted model (VAE decoder or UNet) in the forms the variants compile: static, dynamic,
    INT8 weights, INT8 quantized (calibrated on 3 random inputs: speed only, not accuracy)."""

    def __init__(self, reg: BenchRegistry, kind: str, role: str, setting: Setting):
        import openvino as ov

        self.role, self.setting, self.core = role, setting, ov.Core()
        self.version = decrypt(reg, kind, (role, role[:-4] + ".bin"))
        self.made: dict[str, Any] = {}

    def model(self, form: str) -> Any:
        if form in self.made:
            return self.made[form]
        import nncf

        m = self.version.read_model(self.core, self.role)
        if form != "dynamic":
            m.reshape(static_shapes(m, self.role, self.setting))
        if form == "int8-weights":
            m = nncf.compress_weights(m)
        elif form == "int8-quantized":
            data = nncf.Dataset([random_inputs(m, seed) for seed in (1, 2, 3)])
            unet = {"model_type": nncf.ModelType.TRANSFORMER} if "unet" in self.role else {}
            m = nncf.quantize(m, data, subset_size=3, fast_bias_correction=True, **unet)
        if form.startswith("int8"):
            self.made[form] = m  # made once, compiled under several configs
        return m

    def infer_s(self, form: str, config: dict[str, Any], repeats: int = 2) -> dict[str, Any]:
        """Median seconds per inference after a first one, and what the plugin chose."""
        model = self.model(form)
        compiled = self.core.compile_model(model, "CPU", config)
        feeds = random_inputs(self.model("static") if form == "dynamic" else model, 0)
        request = compiled.create_infer_request()
        request.infer(feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            request.infer(feeds)
            times.append(time.perf_counter() - t0)
        chosen = {p: _text(compiled.get_property(p)) for p in ("INFERENCE_PRECISION_HINT", "NUM_STREAMS")}
        del request, compiled
        gc.collect()
        return {"s": round(statistics.median(times), 3), **chosen}

    def close(self) -> None:
        self.made.clear()
        self.version.wipe()
        gc.collect()


def _text(value: Any) -> str:
    """An OpenVINO property as text: ``bf16`` rather than ``<Type: 'bfloat16'>``."""
    return str(value.get_type_name()) if hasattr(value, "get_type_name") else str(value)


def plain_openvino(reg: BenchRegistry, kind: str, role: str, setting: Setting, variants: tuple[Any, ...]) -> Any:
    forms = ComponentForms(reg, kind, role, setting)
    try:
        return {label: forms.infer_s(form, config) for label, form, config in variants}
    finally:
        forms.close()


def vae_study(reg: BenchRegistry, kind: str, setting: Setting) -> dict[str, Any]:
    return {
        "size": f"{setting.width}x{setting.height}",
        "engine_s": {
            "bf16 static (worker default)": engine_vae(reg, kind, setting, {}, static=True),
            "bf16 dynamic": engine_vae(reg, kind, setting, {}, static=False),
            "f32 static": engine_vae(reg, kind, setting, F32, static=True),
        },
        "plain_openvino": plain_openvino(reg, kind, VAE_DECODER, setting, VAE_VARIANTS),
    }


def unet_study(reg: BenchRegistry, kind: str, setting: Setting) -> dict[str, Any]:
    """One UNet step in plain OpenVINO: precisions and INT8 (what the VAE study found, for the UNet)."""
    return {
        "size": f"{setting.width}x{setting.height}",
        "plain_openvino": plain_openvino(reg, kind, UNET, setting, UNET_VARIANTS),
    }


# ---------------------------------------------------------------------------------------------
# worker memory over many images


def worker_rss(worker: Worker, model: str, setting: Setting, n: int, every: int = 10) -> dict[str, Any]:
    """RSS after a warm-up image, then after every ``every`` images (each group a new batch)."""
    worker.start()
    try:
        worker.txt2img(model, setting, [("warm-up: a plain grey square", 10_000)])
        series = [{"images": 0, "rss_mib": worker.rss_mib()}]
        t0 = time.perf_counter()
        for done in range(0, n, every):
            group = images_for(min(every, n - done), first_seed=done)
            worker.txt2img(model, setting, group)
            series.append({"images": done + len(group), "rss_mib": worker.rss_mib()})
            print(json.dumps(series[-1]), file=sys.stderr, flush=True)
        wall = time.perf_counter() - t0
    finally:
        worker.stop()
    return {
        "size": f"{setting.width}x{setting.height}",
        "steps": setting.steps,
        "images": n,
        "s_per_image": round(wall / max(n, 1), 3),
        "first_after_warm_up_mib": series[0]["rss_mib"],
        "after_first_10_mib": series[1]["rss_mib"] if len(series) > 1 else None,
        "last_mib": series[-1]["rss_mib"],
        "series": series,
    }


def plot_rss(rss: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"# matplotlib is not installed: no plot at {path}", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["images"] for p in rss["series"]]
    ys = [p["rss_mib"] for p in rss["series"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, ys, marker="o", markersize=3)
    ax.set_xlabel(f"images after the warm-up image ({rss['size']}, LCM {rss['steps']} steps)")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_title("ovbatch worker RSS over txt2img jobs")
    low, high = min(ys), max(ys)
    ax.set_ylim(low - max(50, (high - low)), high + max(50, (high - low)))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# the run and the report


def run_kind(
    reg: BenchRegistry, kind: str, args: argparse.Namespace, work: Path, parts: dict[str, float]
) -> dict[str, Any]:
    setting = replace(SETTINGS[kind], width=args.size, height=args.size)
    result: dict[str, Any] = {"setting": setting.__dict__}
    worker = Worker(reg, args.redis_url, work)
    with timed(parts, f"{kind}: ovbatch end to end"):
        worker.start()
        try:
            result["ovbatch"] = ovbatch_e2e(worker, reg.models[kind], setting, args.images)
        finally:
            worker.stop()
    with timed(parts, f"{kind}: acquire + LoRA"):
        result["acquire_and_lora"] = lora_switch(reg, kind, setting)
    with timed(parts, f"{kind}: f32 engine"):
        result["engine_f32"] = engine_image(reg, kind, setting, F32)
    if not args.skip_torch:
        with timed(parts, f"{kind}: diffusers"):
            result["diffusers"] = diffusers_fp32(kind, setting, args.images, args.tiny)
        torch_s = result["diffusers"]["s_per_image"]
        result["speedup"] = round(torch_s / result["ovbatch"]["s_per_image"], 2)
        result["speedup_f32_engine"] = round(torch_s / result["engine_f32"]["s_per_image"], 2)
    return result


NAN_RUN = {"s_per_image": float("nan"), "stages_s": dict.fromkeys(STAGES, float("nan"))}


def kind_table(kind: str, r: dict[str, Any]) -> list[str]:
    s, ov, dif = r["setting"], r["ovbatch"], r.get("diffusers", NAN_RUN)
    lines = [
        f"\n### {kind}: {s['width']}x{s['height']}, {s['steps']} steps, guidance {s['guidance']}\n",
        "| seconds | ovbatch (bf16) | diffusers fp32 | diffusers / ovbatch |",
        "| --- | --- | --- | --- |",
        _row("per image, end to end (warm)", ov["s_per_image"], dif["s_per_image"]),
        _row("per image, engine generate", ov["engine_generate_s"], dif["s_per_image"]),
    ]
    lines += [_row(stage, ov["stages_s"][stage], dif["stages_s"][stage]) for stage in STAGES]
    f32 = r["engine_f32"]
    lines += [_row("f32 engine: per image", f32["s_per_image"], dif["s_per_image"])]
    lines += [_row(f"f32 engine: {stage}", f32["stages_s"][stage], dif["stages_s"][stage]) for stage in STAGES]
    a = r["acquire_and_lora"]
    vae_share = ov["stages_s"]["vae_decode"] / ov["engine_generate_s"] * 100
    lines += [
        f"\ncold first image {ov['cold_batch_of_1_s']} s (load {ov['cold_load_s']} s); VAE {vae_share:.0f} % "
        f"of an image; acquire cold {a['cold_s']} s, warm {a['warm_ms']} ms ({a['warm_over_cold_pct']} %); "
        f"LoRA: none {a['no_lora_s']} s, alpha 1 {a['alpha_1_first_s']} s, 0.5 {a['alpha_0.5_s']} s, "
        f"1 again {a['alpha_1_again_s']} s (LoRA engine cold {a['lora_engine_cold_s']} s)"
    ]
    return lines


def study_table(title: str, study: dict[str, Any]) -> list[str]:
    lines = [f"\n### {title}, {study['size']}\n", "| variant | seconds |", "| --- | --- |"]
    lines += [f"| engine: {k} | {s} |" for k, s in study.get("engine_s", {}).items()]
    lines += [f"| plain OpenVINO: {k} | {d['s']} |" for k, d in study["plain_openvino"].items()]
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for kind, r in results["kinds"].items():
        lines += kind_table(kind, r)
    if "vae" in results:
        lines += study_table("VAE decode", results["vae"])
        lines += study_table("One UNet step", results["unet"])
    if "rss" in results:
        r = results["rss"]
        lines.append(
            f"\nworker RSS over {r['images']} images ({r['size']}, {r['s_per_image']} s each): after the warm-up "
            f"image {r['first_after_warm_up_mib']}, after 10 {r['after_first_10_mib']}, last {r['last_mib']} MiB"
        )
    return "\n".join(lines)


def _row(name: str, ours: float, theirs: float) -> str:
    ratio = theirs / ours if ours and ours == ours and theirs == theirs else float("nan")
    return f"| {name} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x |"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kinds", default="lcm,sd", help="comma-separated: lcm, sd")
    parser.add_argument("--images", type=int, default=3, help="warm images per kind and engine")
    parser.add_argument("--size", type=int, default=512, help="width and height")
    parser.add_argument("--rss-images", type=int, default=200, help="0: skip the worker RSS run")
    parser.add_argument("--rss-size", type=int, default=128, help="128: 200 images in about 10 minutes here")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-vae", action="store_true", help="skip the VAE and UNet studies")
    parser.add_argument("--tiny", action="store_true", help="small stand-in models, to try the code")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(args.kinds) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}: use {', '.join(SETTINGS)}")
    return args


def environment() -> dict[str, Any]:
    import openvino as ov
    import openvino_genai as genai

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "threads": THREADS,
        "openvino": ov.get_version(),
        "openvino_genai": genai.__version__,
    }


def rss_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    reg = bench_registry(("lcm",), args.tiny)  # cached: only builds when --kinds left LCM out
    setting = replace(SETTINGS["lcm"], width=args.rss_size, height=args.rss_size)
    return worker_rss(Worker(reg, args.redis_url, work), reg.models["lcm"], setting, args.rss_images)


def main() -> None:
    args = parse_args()
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    parts: dict[str, float] = {}
    with timed(parts, "models (build, export, import; cached)"):
        reg = bench_registry(args.kinds, args.tiny)
    results: dict[str, Any] = {
        "environment": environment(),
        "args": {**vars(args), "kinds": list(args.kinds)},
        "kinds": {},
    }
    results["parts_s"] = parts
    work = Path(tempfile.mkdtemp(prefix="ovbatch-imagegen-bench-"))
    for kind in args.kinds:
        results["kinds"][kind] = run_kind(reg, kind, args, work, parts)
    first = args.kinds[0]
    setting = replace(SETTINGS[first], width=args.size, height=args.size)
    if not args.skip_vae:
        with timed(parts, f"{first}: VAE study"):
            results["vae"] = vae_study(reg, first, setting)
        with timed(parts, f"{first}: UNet study"):
            results["unet"] = unet_study(reg, first, setting)
    OUT.mkdir(exist_ok=True)
    if args.rss_images > 0:
        with timed(parts, "worker RSS"):
            results["rss"] = rss_run(args, work)
        plot_rss(results["rss"], OUT / "imagegen_rss.png")
    shutil.rmtree(work, ignore_errors=True)
    (OUT / "imagegen_bench.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
