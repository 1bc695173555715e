"""One benchmark run: decrypt one IR of a registry version into memory (with its extension libraries,
loaded from memory: ``ovbatch/registry/memload.py``), measure it as benchmark_app does
(``measure.py``), write ``<run-id>.json`` and ``<run-id>/benchmark_report.csv``, then the marker.

The run holds its worker alone (the kind is ``exclusive``: the worker finishes its running jobs and
takes no other while it measures), and the report says whether the machine was otherwise busy.
Decryption is timed apart from reading and compiling; inference runs on the compiled model only,
so the in-memory path adds nothing to what is measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ovbatch.errors import BadInputError, InputError
from ovbatch.jobs import STOPS, JobEnv, Outcome, Watch, begin, named, read_marker, stopped, write_marker
from ovbatch.registry import extensions
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.storage import ObjectStore
from ovbatch.tasks.benchmark import machine, measure, report
from ovbatch.tasks.benchmark.spec import BenchmarkJob
from ovbatch.workers.cache import content_digest


@dataclass
class Benchmarker:
    """What a worker keeps for benchmark jobs of one model version: the registry, its Core and device
    settings (nothing decrypted: each run decrypts, measures and wipes)."""

    registry: Any
    ref: ModelRef
    manifest: dict[str, Any]
    core: Any
    device: str
    config: dict[str, Any]  # the worker's compile options (threads for its pinned cores)


def finished(job: BenchmarkJob, store: ObjectStore) -> Outcome | None:
    return read_marker(job, store)


def config_of(job: BenchmarkJob) -> measure.Config:
    return measure.Config(
        device=job.device,
        hint=job.hint,
        nireq=job.nireq,
        nstreams=job.nstreams,
        batch=job.batch,
        shape=job.shape,
        data_shape=job.data_shape,
        time_s=job.time_s,
        niter=job.niter,
        infer_precision=job.infer_precision,
        api=job.api,
        percentiles=tuple(job.percentiles),
        counters=job.counters,
    )


def run(job: BenchmarkJob, env: JobEnv) -> Outcome:
    out = begin(job, env, finished, "this run")
    if isinstance(out, Outcome):
        return out
    bench: Benchmarker = env.engine_for(job)
    watch = env.watch(job, cancel_check_s=1.0)
    t0 = time.perf_counter()
    try:
        data = measure_job(job, bench, env, watch)
    except InputError as exc:
        error = named(job.display, exc)
        failed = {
            "run_id": job.run_id,
            "status": "failed",
            "model": job.model,
            "part": job.part,
            "config": job.configuration(),
            "sweep": dict(job.sweep),
            "error": error,
        }
        out.put_bytes(job.report_key, json.dumps(failed, indent=2).encode())
        return Outcome("failed", [job.report_key], error=error, processing_s=time.perf_counter() - t0)
    except STOPS as exc:
        return stopped(exc, t0)
    out.put_bytes(job.csv_key, report.benchmark_app_csv(data).encode())
    out.put_bytes(job.report_key, json.dumps(data, indent=2).encode())
    processing_s = time.perf_counter() - t0
    res = data["results"]
    extra = {
        "throughput_fps": round(res["throughput_fps"], 3),
        "latency_median_ms": round(res["latency_ms"]["median"], 3),
    }
    outcome = Outcome("done", [job.report_key, job.csv_key], 1.0, processing_s, extra=extra)
    write_marker(out, job, outcome)
    return outcome


def measure_job(job: BenchmarkJob, bench: Benchmarker, env: JobEnv, watch: Watch) -> dict[str, Any]:
    """Decrypt, read, measure; the run's report (without writing it)."""
    if content_digest(bench.manifest) != job.model_digest:
        raise InputError(f"{job.model} changed since submission (its files differ): submit again")
    roles = {f["role"] for f in bench.manifest["files"]}
    bin_role = job.part[:-4] + ".bin"
    if job.part not in roles or bin_role not in roles:
        raise InputError(f"{job.model} has no OpenVINO model {job.part}")
    blocker = extensions.gpu_blocker(bench.manifest, job.device)
    if blocker is not None:
        raise BadInputError(blocker)
    cfg = config_of(job)
    device_info = measure.check_device(bench.core, cfg)
    env.stage(f"{job.display}: decrypting in memory")
    load_before = machine.load()
    started_s = time.time()
    with machine.OtherCpu() as other:
        t0 = time.perf_counter()
        version = decrypt_version(bench.registry, bench.ref, roles=[job.part, bin_role])
        try:
            decrypt_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            model = version.read_model(bench.core, job.part)
            read_ms = (time.perf_counter() - t0) * 1000
            watch.check("the model was being read")
            result = measure.measure(
                bench.core,
                model,
                cfg,
                bench.config,
                lambda: watch.check("this benchmark was measuring"),
                job.display,
                on_stage=lambda text: env.stage(f"{job.display}: {text}"),
            )
            del model
        finally:
            version.wipe()
    load_after = machine.load()
    info = machine.describe(job.device, device_info)
    info.update(
        load_before=load_before,
        load_after=load_after,
        **other.report(),
        worker_config={k: str(v) for k, v in bench.config.items()},
    )
    data: dict[str, Any] = {
        "run_id": job.run_id,
        "batch_id": job.batch_id,
        "status": "done",
        "model": job.model,
        "model_digest": job.model_digest,
        "model_kind": bench.manifest.get("kind"),
        "model_precision": bench.manifest.get("precision"),
        "part": job.part,
        "extensions": [e["role"] for e in extensions.of(bench.manifest, extensions.EXTENSION)],
        "repeat": job.repeat,
        "sweep": dict(job.sweep),
        "config": job.configuration(),
        "inputs": result.inputs,
        "results": {**result.results, "read_ms": read_ms, "decrypt_ms": decrypt_ms},
        "compiled": result.compiled,
        "counters": result.counters,
        "latency_quantiles_ms": result.latency_quantiles,
        "machine": info,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_s)),
        "started_s": started_s,  # wall clock: runs of one worker never overlap (the kind is exclusive)
        "ended_s": time.time(),
    }
    # the top-level figures the issue names, and benchmark_app's own -json_stats sections
    data.update(
        throughput_fps=data["results"]["throughput_fps"],
        latency_ms=data["results"]["latency_ms"],
        compile_ms=data["results"]["compile_ms"],
        first_inference_ms=data["results"]["first_inference_ms"],
        iterations=data["results"]["iterations"],
        duration_s=data["results"]["duration_s"],
    )
    data.update(report.benchmark_app_sections(data))
    return data
