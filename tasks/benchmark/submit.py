"""How a benchmark submission expands into runs: one configuration, or a ``--sweep`` matrix, times
``--repeat``.

A sweep is space-separated ``key=v1,v2`` terms; the cartesian product of their values is the set of
configurations, e.g. ``device=CPU,GPU hint=latency,throughput precision=bf16,f32 nireq=1,2,4
model=whisper-base@1,whisper-base@2``. Each configuration is checked here as far as the client can:
the model and its IR part exist, dynamic inputs have shapes (from the manifest's ``io``, recorded at
import), the device is one OpenVINO names, and a live worker of that device takes the precision.
A configuration that cannot run is reported as a failed run of the batch, not queued.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import msgspec

from ovbatch.errors import BadInputError, InputError, ModelNotFound
from ovbatch.registry import extensions
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.submission import Failure, Plan
from ovbatch.tasks.benchmark import shapes
from ovbatch.tasks.benchmark.measure import HINTS, PRECISIONS, Config
from ovbatch.tasks.benchmark.spec import BenchmarkJob, job_id_for
from ovbatch.workers.cache import content_digest

J = TypeVar("J", bound=msgspec.Struct)  # a job spec with a job_id field

DEVICE = re.compile(r"^(CPU|GPU|NPU)(\.\d+)?$|^(AUTO|MULTI|HETERO)(:[A-Z0-9.,]+)?$")
# sweep keys -> Request fields (and how a value is read)
SWEEP_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model": ("model", str),
    "part": ("part", str),
    "device": ("device", str),
    "hint": ("hint", str),
    "precision": ("infer_precision", str),
    "infer_precision": ("infer_precision", str),
    "nireq": ("nireq", int),
    "nstreams": ("nstreams", int),
    "batch": ("batch", int),
    "api": ("api", str),
    "time": ("time_s", float),
    "niter": ("niter", int),
}


@dataclass(frozen=True, kw_only=True)
class Request(Config):
    """One configuration as the user asked for it (before the model is resolved); ``api`` None is
    benchmark_app's default (``api_of``)."""

    model: str
    part: str | None = None
    sweep: dict[str, str] = field(default_factory=dict)


def parse_sweep(text: str) -> list[tuple[str, list[str]]]:
    """``"device=CPU,GPU nireq=1,2"`` -> [("device", ["CPU", "GPU"]), ("nireq", ["1", "2"])]."""
    terms = []
    seen = set()
    for term in text.split():
        key, sep, values = term.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in SWEEP_KEYS:
            raise BadInputError(f"--sweep term {term!r}: use KEY=V1,V2 with KEY one of {', '.join(sorted(SWEEP_KEYS))}")
        if SWEEP_KEYS[key][0] in seen:
            raise BadInputError(f"--sweep: {key} is given twice")
        seen.add(SWEEP_KEYS[key][0])
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise BadInputError(f"--sweep term {term!r}: no values")
        terms.append((key, items))
    if not terms:
        raise BadInputError('--sweep is empty: give KEY=V1,V2 terms, e.g. "hint=latency,throughput nireq=1,2,4"')
    return terms


def expand(base: Request, sweep: str | None) -> list[Request]:
    """The configurations of a submission: ``base`` alone, or ``base`` with every sweep combination."""
    if not sweep:
        return [base]
    terms = parse_sweep(sweep)
    out = []
    for combo in itertools.product(*(values for _, values in terms)):
        changes: dict[str, Any] = {}
        for (key, _), value in zip(terms, combo, strict=True):
            attr, convert = SWEEP_KEYS[key]
            try:
                changes[attr] = convert(value)
            except ValueError:
                raise BadInputError(f"--sweep {key}={value}: not a {convert.__name__}") from None
        out.append(replace(base, **changes, sweep={k: v for (k, _), v in zip(terms, combo, strict=True)}))
    return out


def check(request: Request) -> None:
    """The configuration's own values, before any model is looked at."""
    if not DEVICE.match(request.device):
        raise BadInputError(f"unknown device {request.device!r}: OpenVINO devices are CPU, GPU, GPU.N, NPU, AUTO...")
    if request.hint not in HINTS:
        raise BadInputError(f"unknown hint {request.hint!r}: use {', '.join(HINTS)}")
    if request.infer_precision is not None and request.infer_precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {request.infer_precision!r}: use {', '.join(PRECISIONS)}")
    if request.api not in (None, "sync", "async"):
        raise BadInputError(f"unknown api {request.api!r}: use sync or async")
    if request.time_s is not None and request.time_s <= 0:
        raise BadInputError(f"--time {request.time_s:g}: give a positive number of seconds")
    if request.niter is not None and request.niter <= 0:
        raise BadInputError(f"--niter {request.niter}: give a positive number of iterations")
    for name in ("nireq", "nstreams", "batch"):
        value = getattr(request, name)
        if value is not None and value <= 0:
            raise BadInputError(f"--{name} {value}: give a positive number")
    if api_of(request) == "sync" and request.nireq and request.nireq > 1:
        raise BadInputError("--api sync uses one request: leave out --nireq or use --api async")
    shapes.parse(request.shape, "--shape")
    shapes.parse(request.data_shape, "--data-shape")


def api_of(request: Request) -> str:
    """benchmark_app's default: one synchronous request for the latency hint, else the async queue
    (also for the latency hint when more than one request is asked for)."""
    return request.api or ("sync" if request.hint == "latency" and (request.nireq or 1) == 1 else "async")


def model_parts(manifest: dict[str, Any]) -> list[str]:
    roles = {f["role"] for f in manifest["files"]}
    return sorted(r for r in roles if r.endswith(".xml") and r[:-4] + ".bin" in roles)


def choose_part(manifest: dict[str, Any], part: str | None) -> str:
    """The IR file to measure: the only one, or the one ``part`` names (file, stem, or a part of its
    name that only it has: ``encoder``)."""
    parts = model_parts(manifest)
    label = f"{manifest['name']}@{manifest['version']}"
    if not parts:
        raise BadInputError(f"{label} holds no OpenVINO model to benchmark")
    if part is None:
        if len(parts) == 1:
            return parts[0]
        raise BadInputError(f"{label} holds {len(parts)} models: choose one with --part ({', '.join(parts)})")
    for p in parts:
        if part in (p, p[:-4]):
            return p
    matches = [p for p in parts if part in p.split("/")[-1]]
    if len(matches) == 1:
        return matches[0]
    raise BadInputError(
        f"{label}: --part {part!r} names {'several' if matches else 'none'} of its models ({', '.join(parts)})"
    )


def check_shapes(manifest: dict[str, Any], part: str, request: Request) -> None:
    io = (manifest.get("io") or {}).get(part)
    if not io:
        return  # imported before ovbatch recorded inputs: the worker checks
    names = [i["name"] for i in io["inputs"]]
    shapes.for_inputs(shapes.parse(request.shape, "--shape"), names, "--shape")
    shapes.for_inputs(shapes.parse(request.data_shape, "--data-shape"), names, "--data-shape")
    left = shapes.dynamic_inputs(io, request.shape, request.data_shape, request.batch)
    if left:
        example = shapes.example(io, left)
        raise BadInputError(
            f"{manifest['name']}@{manifest['version']} {part}: input(s) {shapes.describe(io, left)} are dynamic; "
            f'give their shape, e.g. --shape "{example}" (fixes the model) or --data-shape "{example}"'
        )


def check_workers(request: Request, workers: list[dict[str, Any]] | None) -> None:
    """What the live workers say (``None``: no Redis, the run is local): a device none of them
    serves, or a precision none of that device's workers computes in, is reported, not queued."""
    if workers is None:
        return
    serving = [w for w in workers if w.get("device") == request.device]
    if not serving:
        devices = sorted({str(w.get("device")) for w in workers})
        raise BadInputError(
            f"no live worker serves device {request.device} (live: {', '.join(devices) or 'none'}); "
            f"start one with `ovbatch worker --device {request.device}`"
        )
    mine = [w for w in serving if w.get("capabilities")]
    if request.infer_precision and mine:
        want = PRECISIONS[request.infer_precision]
        if not any(want in w["capabilities"] for w in mine):
            raise BadInputError(
                f"no live {request.device} worker computes in {request.infer_precision} "
                f"(their capabilities: {', '.join(sorted({c for w in mine for c in w['capabilities']}))})"
            )


def display_of(request: Request, ref: str, part: str) -> str:
    bits = [f"{ref} {part}", request.device, request.hint]
    bits += [
        f"{k}={getattr(request, k)}" for k in ("nireq", "nstreams", "batch", "infer_precision") if getattr(request, k)
    ]
    if api_of(request) == "sync":
        bits.append("sync")
    return " ".join(bits)


def plan(
    requests: list[Request],
    *,
    batch_id: str,
    registry: Registry,
    out_url: str,
    repeat: int = 1,
    workers: list[dict[str, Any]] | None = None,
) -> Plan:
    """One job per (configuration, repeat); a configuration that cannot run fails alone, named."""
    result = Plan()
    manifests: dict[str, dict[str, Any]] = {}
    n = 0
    for request in requests:
        label = f"{request.model} {' '.join(f'{k}={v}' for k, v in request.sweep.items())}".strip()
        try:
            check(request)
            ref = registry.resolve(ModelRef.parse(request.model))
            if str(ref) not in manifests:
                manifests[str(ref)] = registry.manifest(ref, verify_mac=False)
            manifest = manifests[str(ref)]
            if manifest.get("kind") == "lora":
                raise BadInputError(f"{ref} is a LoRA adapter, not a model: benchmark the pipeline it applies to")
            part = choose_part(manifest, request.part)
            check_shapes(manifest, part, request)
            blocker = extensions.gpu_blocker(manifest, request.device)
            if blocker is not None:
                raise BadInputError(blocker)
            check_workers(request, workers)
        except (InputError, ModelNotFound) as exc:
            result.failures.append(Failure(label, f"{label}: {exc}" if request.sweep else str(exc)))
            continue
        for r in range(1, repeat + 1):
            n += 1
            run_id = f"{batch_id}-{n:03d}"
            job = BenchmarkJob(
                batch_id=batch_id,
                job_id="",
                display=f"{display_of(request, str(ref), part)}" + (f" #{r}" if repeat > 1 else ""),
                relpath=run_id,
                model=str(ref),
                device=request.device,
                out_url=out_url,
                model_digest=content_digest(manifest),
                part=part,
                hint=request.hint,  # type: ignore[arg-type]
                nireq=request.nireq,
                nstreams=request.nstreams,
                batch=request.batch,
                shape=request.shape,
                data_shape=request.data_shape,
                time_s=request.time_s,
                niter=request.niter,
                infer_precision=request.infer_precision,  # type: ignore[arg-type]
                api=api_of(request),  # type: ignore[arg-type]
                percentiles=tuple(request.percentiles),
                counters=request.counters,
                repeat=r,
                sweep=dict(request.sweep),
            )
            job_id = job_id_for(batch_id, job.model_digest, job.configuration(), r, out_url)
            result.jobs.append(replace_job(job, job_id))
    devices = sorted({j.device for j in result.jobs})
    result.meta = {"runs": len(result.jobs), "devices": devices, "models": sorted({j.model for j in result.jobs})}
    return result


def replace_job(job: J, job_id: str) -> J:
    """``job`` with its deterministic id (a job spec is a frozen msgspec struct)."""
    return msgspec.structs.replace(job, job_id=job_id)
