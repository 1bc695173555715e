"""What OpenVINO's ``benchmark_app`` measures, measured the same way, on a model already in memory.

Read against openvino/tools/benchmark (2026.4): the compile configuration (performance hint, number
of requests and streams, inference precision, performance counters), random input data from the
model's shapes (uniform 0..255, seeded, as ``fill_tensors_with_random``), an ``AsyncInferQueue``
(or one request for ``--api sync``), one warm-up inference, then requests kept busy until the time
or iteration count is reached (iterations rounded up to whole rounds of requests); latencies are
each request's own ``latency`` in ms, percentiles taken as benchmark_app takes them
(``sorted[ceil(n*p/100)-1]``), throughput = iterations x batch / wall time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.errors import BadInputError
from ovbatch.memory import PeakRss
from ovbatch.tasks.benchmark import shapes

HINTS = {
    "latency": "LATENCY",
    "throughput": "THROUGHPUT",
    "cumulative_throughput": "CUMULATIVE_THROUGHPUT",
    "none": None,
}
PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}  # --infer-precision -> OPTIMIZATION_CAPABILITIES
TOP_COUNTERS = 15
CHECK_EVERY_S = 0.5  # how often the loop asks whether the job must stop (cancel, SIGTERM, time limit)


@dataclass(frozen=True)
class Config:
    device: str = "CPU"
    hint: str = "throughput"
    nireq: int | None = None
    nstreams: int | None = None
    batch: int | None = None
    shape: str | None = None
    data_shape: str | None = None
    time_s: float | None = None
    niter: int | None = None
    infer_precision: str | None = None
    api: str | None = None  # sync or async (None: async here; submission applies benchmark_app's default)
    percentiles: tuple[int, ...] = (50, 90, 99)
    counters: bool = False


@dataclass
class Measurement:
    results: dict[str, Any]  # throughput, latencies, times, iterations
    compiled: dict[str, Any]  # the device's properties after compile
    inputs: dict[str, dict[str, Any]]  # name -> shape of the data, element type
    counters: list[dict[str, Any]] = field(default_factory=list)
    latency_quantiles: list[float] = field(default_factory=list)  # p0..p100, for distribution plots


def percentile(values: list[float], percent: float) -> float:
    """benchmark_app's percentile of sorted values."""
    return values[max(0, math.ceil(len(values) * percent / 100) - 1)]


def compile_config(cfg: Config, worker_config: dict[str, Any]) -> dict[str, Any]:
    """The compile properties for ``cfg``, as benchmark_app sets them, over the worker's own
    (threads for its pinned cores)."""
    config = dict(worker_config)
    hint = HINTS[cfg.hint]
    if hint is not None:
        config["PERFORMANCE_HINT"] = hint
    if cfg.nireq:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(cfg.nireq)
    if cfg.nstreams:
        config["NUM_STREAMS"] = str(cfg.nstreams)
    if cfg.infer_precision:
        config["INFERENCE_PRECISION_HINT"] = cfg.infer_precision
    config["PERF_COUNT"] = cfg.counters
    if cfg.batch:
        config["ALLOW_AUTO_BATCHING"] = False
    return config


def check_device(core: Any, cfg: Config) -> dict[str, Any]:
    """Refuse a hint or precision the device does not take; return what the device is."""
    supported = [str(p) for p in core.get_property(cfg.device, "SUPPORTED_PROPERTIES")]
    capabilities = [str(c) for c in core.get_property(cfg.device, "OPTIMIZATION_CAPABILITIES")]
    if HINTS[cfg.hint] is not None and "PERFORMANCE_HINT" not in supported:
        raise BadInputError(f"device {cfg.device} takes no performance hint: use --hint none")
    if cfg.infer_precision and PRECISIONS[cfg.infer_precision] not in capabilities:
        raise BadInputError(
            f"device {cfg.device} does not compute in {cfg.infer_precision} "
            f"(its capabilities: {', '.join(capabilities)})"
        )
    if cfg.nstreams and "NUM_STREAMS" not in supported:
        raise BadInputError(f"device {cfg.device} does not take --nstreams")
    return {"full_name": str(core.get_property(cfg.device, "FULL_DEVICE_NAME")), "capabilities": capabilities}


def reshape(model: Any, cfg: Config, label: str) -> dict[str, list[str]]:
    """Apply --shape and --batch; return the data shape of every input (refusing dynamic ones left
    without --data-shape, naming them with an example)."""
    import openvino as ov

    names = [p.get_any_name() for p in model.inputs]
    new = shapes.for_inputs(shapes.parse(cfg.shape, "--shape"), names, "--shape")
    if cfg.batch:
        for port, name in zip(model.inputs, names, strict=True):
            dims = new.get(name) or [str(d) if d.is_static else "?" for d in port.get_partial_shape()]
            if not dims:
                raise BadInputError(f"{label}: input {name} is a scalar; --batch needs a first dimension")
            new[name] = [str(cfg.batch), *dims[1:]]
    if new:
        try:
            model.reshape({name: ov.PartialShape(",".join(dims)) for name, dims in new.items()})
        except Exception as exc:
            raise BadInputError(
                f"{label}: cannot take --shape {cfg.shape or ''} --batch {cfg.batch or ''}: {exc}"
            ) from None
    data = shapes.for_inputs(shapes.parse(cfg.data_shape, "--data-shape"), names, "--data-shape")
    io = {
        "inputs": [
            {"name": n, "shape": _dims(p), "type": p.get_element_type().get_type_name()}
            for n, p in zip(names, model.inputs, strict=True)
        ]
    }
    left = shapes.dynamic_inputs(io, None, cfg.data_shape, None)
    if left:
        raise BadInputError(
            f"{label}: input(s) {shapes.describe(io, left)} are dynamic: give their shape, e.g. "
            f'--shape "{shapes.example(io, left)}" (fixes the model) or --data-shape "{shapes.example(io, left)}"'
        )
    out = {}
    for name, port in zip(names, model.inputs, strict=True):
        dims = data.get(name) or _dims(port)
        if not shapes.is_static(dims):
            raise BadInputError(f"{label}: --data-shape for {name} must be concrete numbers, not {','.join(dims)}")
        if not port.get_partial_shape().compatible(ov.PartialShape([int(d) for d in dims])):
            raise BadInputError(
                f"{label}: data shape [{','.join(dims)}] does not fit input {name} {port.get_partial_shape()}"
            )
        out[name] = dims
    return out


def _dims(port: Any) -> list[str]:
    return [str(d.get_length()) if d.is_static else "?" for d in port.get_partial_shape()]


def random_inputs(model: Any, data_shapes: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """benchmark_app's random data: uniform in 0..255 (0..1 for booleans), seeded."""
    rs = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(0)))
    out = {}
    for port in model.inputs:
        name = port.get_any_name()
        kind = port.get_element_type().get_type_name()
        dtype = np.dtype(shapes.NUMPY_TYPES.get(kind, "float32"))
        shape = [int(d) for d in data_shapes[name]]
        if dtype == np.bool_:
            out[name] = rs.uniform(0, 1, shape) >= 0.5
        elif np.issubdtype(dtype, np.integer):
            out[name] = rs.randint(0, 256, shape).astype(dtype)
        else:
            out[name] = rs.uniform(0, 255, shape).astype(dtype)
    return out


def compiled_properties(compiled: Any) -> dict[str, Any]:
    """Every property the compiled model reports (streams, threads, precision, requests...)."""
    props: dict[str, Any] = {}
    for key in compiled.get_property("SUPPORTED_PROPERTIES"):
        name = str(key)
        if name == "SUPPORTED_PROPERTIES":
            continue
        try:
            value = compiled.get_property(name)
        except Exception:  # write-only or not readable after compile
            continue
        if hasattr(value, "get_type_name"):  # an element type: "f32", as benchmark_app prints it
            value = value.get_type_name()
        props[name] = value if isinstance(value, (int, float, bool)) else str(value)
    return props


def measure(
    core: Any,
    model: Any,
    cfg: Config,
    worker_config: dict[str, Any],
    check: Callable[[], None],
    label: str,
    on_stage: Callable[[str], None] = lambda _s: None,
) -> Measurement:
    """Reshape, compile, fill, warm up and measure ``model`` (an ``ov.Model`` read from memory)."""
    import openvino as ov

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data_shapes = reshape(model, cfg, label)
    timings["reshape_ms"] = (time.perf_counter() - t0) * 1000 if (cfg.shape or cfg.batch) else 0.0
    config = compile_config(cfg, worker_config)
    on_stage(f"compiling on {cfg.device}")
    with PeakRss() as rss:
        t0 = time.perf_counter()
        try:
            compiled = core.compile_model(model, cfg.device, config)
        except Exception as exc:
            raise BadInputError(
                f"{label}: does not compile on {cfg.device} with this configuration: {str(exc).splitlines()[0]}"
            ) from None
        timings["compile_ms"] = (time.perf_counter() - t0) * 1000
    props = compiled_properties(compiled)
    data = random_inputs(model, data_shapes)
    nireq = cfg.nireq or 0
    sync = cfg.api == "sync"
    if sync:
        requests: Any = [compiled.create_infer_request()]
    else:
        requests = ov.AsyncInferQueue(compiled, nireq)
    n_requests = len(requests) if not sync else 1
    for i in range(n_requests):  # into each request's own tensors, as benchmark_app fills them: a
        request = requests[i]  # tensor over our memory (set_tensor) can cost a copy per inference
        for port in compiled.inputs:
            tensor = request.get_tensor(port)
            array = data[port.get_any_name()]
            tensor.shape = list(array.shape)
            tensor.data[...] = array
    niter = cfg.niter
    if niter and not sync:
        niter = math.ceil(niter / n_requests) * n_requests  # whole rounds, as benchmark_app aligns them
    duration_s = cfg.time_s if cfg.time_s else (None if niter else 60.0)
    on_stage("first inference")
    if sync:
        requests[0].infer()
        timings["first_inference_ms"] = requests[0].latency
    else:
        first = requests.get_idle_request_id()
        requests.start_async()
        requests.wait_all()
        timings["first_inference_ms"] = requests[first].latency
    amount = f"{duration_s:g} s" if duration_s else f"{niter} iterations"
    on_stage(f"measuring ({amount}, {n_requests} request(s))")
    times, wall_s, iterations = (_sync_loop if sync else _async_loop)(requests, niter, duration_s, n_requests, check)
    times.sort()
    batch = cfg.batch or 1
    results: dict[str, Any] = {
        "throughput_fps": batch * iterations / wall_s,
        "latency_ms": {
            "median": percentile(times, 50),
            "avg": sum(times) / len(times),
            "min": times[0],
            "max": times[-1],
            **{f"p{p}": percentile(times, p) for p in cfg.percentiles},
        },
        "iterations": iterations,
        "duration_s": wall_s,
        "nireq": n_requests,
        "compile_peak_rss_mib": rss.peak,
        "rss_before_compile_mib": rss.before,
        **timings,
    }
    counters = _counters(requests, n_requests) if cfg.counters else []
    quantiles = [float(v) for v in np.quantile(np.asarray(times), np.linspace(0, 1, 101))]
    inputs = {n: {"shape": [int(d) for d in s], "type": data[n].dtype.name} for n, s in data_shapes.items()}
    del requests, compiled
    return Measurement(results, props, inputs, counters, quantiles)


def _sync_loop(
    requests: Any, niter: int | None, duration_s: float | None, _n: int, check: Callable[[], None]
) -> tuple[list[float], float, int]:
    request, times, iteration = requests[0], [], 0
    start = next_check = time.perf_counter()
    elapsed = 0.0
    while (niter and iteration < niter) or (duration_s and elapsed < duration_s):
        request.infer()
        times.append(request.latency)
        iteration += 1
        now = time.perf_counter()
        elapsed = now - start
        if now >= next_check:
            check()
            next_check = now + CHECK_EVERY_S
    return times, max(time.perf_counter() - start, 1e-9), iteration


def _async_loop(
    queue: Any, niter: int | None, duration_s: float | None, n_requests: int, check: Callable[[], None]
) -> tuple[list[float], float, int]:
    times: list[float] = []
    in_flight: set[int] = set()
    iteration = 0
    start = next_check = time.perf_counter()
    elapsed = 0.0
    try:
        while (niter and iteration < niter) or (duration_s and elapsed < duration_s) or iteration % n_requests:
            idle = queue.get_idle_request_id()
            if idle in in_flight:
                times.append(queue[idle].latency)
            else:
                in_flight.add(idle)
            queue.start_async()
            iteration += 1
            now = time.perf_counter()
            elapsed = now - start
            if now >= next_check:
                check()
                next_check = now + CHECK_EVERY_S
    finally:
        queue.wait_all()
    wall = max(time.perf_counter() - start, 1e-9)
    times.extend(queue[i].latency for i in in_flight)
    return times, wall, iteration


def _counters(requests: Any, n_requests: int) -> list[dict[str, Any]]:
    """Per-node times averaged over the requests (benchmark_app's average_counters), top by time."""
    totals: dict[str, dict[str, Any]] = {}
    for i in range(n_requests):
        for info in requests[i].profiling_info:
            row = totals.setdefault(
                info.node_name,
                {
                    "name": info.node_name,
                    "node_type": info.node_type,
                    "exec_type": info.exec_type,
                    "status": str(info.status).split(".")[-1],
                    "real_time_ms": 0.0,
                    "cpu_time_ms": 0.0,
                },
            )
            if str(info.status).endswith("EXECUTED"):  # ran in any request: the plugin reads an
                row["status"] = "EXECUTED"  # average under 1 us per inference as NOT_RUN, 0 us
            row["real_time_ms"] += info.real_time.total_seconds() * 1000 / n_requests
            row["cpu_time_ms"] += info.cpu_time.total_seconds() * 1000 / n_requests
    rows = sorted(totals.values(), key=lambda r: -r["real_time_ms"])
    total = sum(r["real_time_ms"] for r in rows) or 1.0
    for r in rows:
        r["share_pct"] = 100 * r["real_time_ms"] / total
    return rows[:TOP_COUNTERS] + ([{"name": "(all nodes)", "real_time_ms": total, "nodes": len(rows)}] if rows else [])
