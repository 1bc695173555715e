"""One pipeline benchmark run: the job kind's engine (from the worker's cache; its load is timed and
reported by the first run that used it), the pipeline over the inputs (``speech.py``, ``images.py``),
then ``<run-id>.json``, ``<run-id>/pipeline_report.csv`` (llm_bench's layout) and the marker."""

from __future__ import annotations

import json
import time
from typing import Any

from ovbatch.batches import BatchStore
from ovbatch.errors import InputError
from ovbatch.jobs import STOPS, JobEnv, Outcome, begin, named, read_marker, stopped, write_marker
from ovbatch.memory import PeakRss
from ovbatch.storage import ObjectStore
from ovbatch.tasks.benchmark import machine
from ovbatch.tasks.pipebench import images, report, speech
from ovbatch.tasks.pipebench.spec import PipelineJob


def finished(job: PipelineJob, store: ObjectStore) -> Outcome | None:
    return read_marker(job, store)


def run(job: PipelineJob, env: JobEnv) -> Outcome:
    out = begin(job, env, finished, "this run")
    if isinstance(out, Outcome):
        return out
    t0 = time.perf_counter()
    try:
        data = measure_job(job, env)
    except InputError as exc:
        error = named(job.display, exc)
        failed = {"run_id": job.run_id, "status": "failed", "model": job.model, "config": job.configuration()}
        out.put_bytes(
            job.report_key, json.dumps({**failed, "sweep": dict(job.sweep), "error": error}, indent=2).encode()
        )
        return Outcome("failed", [job.report_key], error=error, processing_s=time.perf_counter() - t0)
    except STOPS as exc:
        return stopped(exc, t0)
    out.put_bytes(job.csv_key, report.llm_bench_csv(data).encode())
    out.put_bytes(job.report_key, json.dumps(data, indent=2).encode())
    outcome = Outcome("done", [job.report_key, job.csv_key], 1.0, time.perf_counter() - t0, extra=report.headline(data))
    write_marker(out, job, outcome)
    return outcome


def measure_job(job: PipelineJob, env: JobEnv) -> dict[str, Any]:
    load_before = machine.load()
    started_s = time.time()
    with PeakRss() as rss, machine.OtherCpu() as other:
        pipeline = env.engine_for(job)
        if pipeline.kind != job.pipeline:
            raise InputError(f"{job.model} runs the {pipeline.kind} pipeline, not {job.pipeline}")
        first_use = pipeline.runs == 0
        pipeline.runs += 1
        watch = env.watch(job, cancel_check_s=1.0)
        check = lambda: watch.check("this pipeline benchmark was running")  # noqa: E731
        measure = speech.measure if job.pipeline == "transcribe" else images.measure
        measured = measure(job, pipeline.engine, env, check)
    load_after = machine.load()
    info = machine.describe(job.device, {"full_name": pipeline.full_device_name, "capabilities": pipeline.capabilities})
    info.update(load_before=load_before, load_after=load_after, **other.report())
    results = measured["results"]
    results.update(
        load_s=pipeline.load_s if first_use else None,  # decrypt + compile: only the run that loaded it paid it
        load_phases_s=pipeline.phases_s if first_use else None,
        engine_cached=not first_use,
        peak_rss_mib=rss.peak,
    )
    return {
        "run_id": job.run_id,
        "batch_id": job.batch_id,
        "status": "done",
        "model": job.model,
        "model_digest": job.model_digest,
        "pipeline": job.pipeline,
        "model_precision": pipeline.precision,
        "inference_precision": pipeline.inference_precision or None,
        "repeat": job.repeat,
        "sweep": dict(job.sweep),
        "config": job.configuration(),
        "results": results,
        "items": measured["items"],
        "failures": measured["failures"],
        "machine": info,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_s)),
        "started_s": started_s,
        "ended_s": time.time(),
    }


def finish_batch(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[str]:
    from ovbatch.tasks.pipebench.batch import finish

    return finish(batches, batch_id, out)
