"""Benchmark runs as a job kind: one job per (model part, configuration, repeat), on the device's queue.

``exclusive``: a worker that takes a benchmark finishes its running jobs first and takes no other
job until the run is over, so the figures are the model's, not its neighbours'.
"""

from __future__ import annotations

from ovbatch.jobs import Unit
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.tasks.benchmark import batch, job
from ovbatch.tasks.benchmark.spec import BenchmarkJob

# every registry model holds OpenVINO IR files a benchmark can measure
MODEL_KINDS = ("generic", "whisper", "lcm", "stable-diffusion")


def load_benchmarker(load: EngineLoad) -> Loaded:
    """Nothing is decrypted or compiled here: each run decrypts and compiles, and times both."""
    bench = job.Benchmarker(load.registry, load.ref, load.manifest, load.core, load.device, dict(load.config))
    return Loaded(bench, 0)


def _commands() -> tuple[object, ...]:
    from ovbatch.tasks.benchmark.cli import benchmark

    return (benchmark,)


KIND = JobKind(
    name="benchmark",
    spec=BenchmarkJob,
    unit=Unit("runs", "runs", "runs/min", 60),
    run=job.run,
    finished=job.finished,
    engines=dict.fromkeys(MODEL_KINDS, load_benchmarker),
    finish_batch=batch.finish,
    commands=_commands,
    exclusive=True,
)
