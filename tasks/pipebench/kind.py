"""Pipeline benchmarks as a job kind: one job per (model, configuration, repeat) runs a job kind's
whole pipeline over a set of real inputs and times its stages.

``exclusive`` as benchmark runs: the worker finishes its running jobs first and takes no other job
until the run is over. Engines are loaded as the transcription and image kinds load theirs (same
precision rules, same static shapes), timed; the kind name is part of the worker's cache key, so
they are never another kind's cached engine.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from ovbatch.jobs import Unit
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.tasks.pipebench import job
from ovbatch.tasks.pipebench.spec import PipelineJob


@dataclass
class Pipeline:
    """A cached pipeline engine, and what loading it took (reported by the first run that used it)."""

    engine: Any
    kind: str  # "transcribe" or "txt2img"
    load_s: float
    phases_s: dict[str, float]
    full_device_name: str
    capabilities: list[str]
    precision: str = ""  # the version's weights (the registry manifest's precision)
    inference_precision: str = ""  # what the engine computes in (INFERENCE_PRECISION_HINT after compile)
    runs: int = 0


def _device_info(load: EngineLoad) -> tuple[str, list[str]]:
    try:
        name = str(load.core.get_property(load.device, "FULL_DEVICE_NAME"))
        caps = [str(c) for c in load.core.get_property(load.device, "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError:
        return load.device, []
    return name, caps


def _compiled_precision(compiled: Any) -> str:
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        return str(value.to_string() if hasattr(value, "to_string") else value)  # "f32", "bf16"
    except RuntimeError:  # a device without the property
        return ""


def load_speech(load: EngineLoad) -> Loaded:
    from ovbatch.registry.loader import Timings
    from ovbatch.tasks.transcribe.engine import WhisperEngine
    from ovbatch.tasks.transcribe.precision import load_whisper_models

    timings = Timings()
    t0 = time.perf_counter()
    version, compiled, careful = load_whisper_models(load, timings)  # as a transcription worker loads it
    engine = WhisperEngine.from_loaded(version, compiled, careful=careful)
    load_s = time.perf_counter() - t0
    size = sum(int(b.nbytes) for b in version.buffers.values())
    name, caps = _device_info(load)
    precision = str(load.manifest.get("precision", ""))
    computes = _compiled_precision(next(iter(compiled.values())))
    pipeline = Pipeline(engine, "transcribe", load_s, dict(timings.seconds), name, caps, precision, computes)
    return Loaded(pipeline, size, release=version.wipe)


def load_images(load: EngineLoad) -> Loaded:
    from ovbatch.tasks.imagegen.kind import load_image_engine

    t0 = time.perf_counter()
    loaded = load_image_engine(dataclasses.replace(load, concurrency=1))  # one pipeline: runs are measured alone
    name, caps = _device_info(load)
    load_s = time.perf_counter() - t0
    pipeline = Pipeline(loaded.engine, "txt2img", load_s, {}, name, caps, str(load.manifest.get("precision", "")))
    return Loaded(pipeline, loaded.size_bytes, release=loaded.release)


def engine_options(spec: PipelineJob) -> dict[str, Any]:
    if spec.pipeline == "txt2img":  # what the image kind compiles for: size, guidance rows, no adapters
        return {"size": [spec.width, spec.height], "cfg": spec.cfg, "adapters": []}
    return {}


def _commands() -> tuple[object, ...]:
    return ()  # `ovbatch benchmark MODEL --pipeline SRC` (tasks/benchmark/cli.py) submits these


KIND = JobKind(
    name="pipeline",
    spec=PipelineJob,
    unit=Unit("runs", "runs", "runs/min", 60),
    run=job.run,
    finished=job.finished,
    engines={"whisper": load_speech, "lcm": load_images, "stable-diffusion": load_images},
    engine_options=engine_options,
    finish_batch=job.finish_batch,
    commands=_commands,
    exclusive=True,
)
