"""A benchmark run's files: ``<run-id>.json`` (our keys plus benchmark_app's ``-json_stats`` sections)
and ``<run-id>/benchmark_report.csv`` in benchmark_app's ``;``-separated layout; the batch's table.

benchmark_app's report (openvino/tools/benchmark/utils/statistics_report.py) has three sections,
"Command line parameters", "Configuration setup" and "Execution results", each ``key;value`` lines;
its JSON report has the same sections as ``cmd_options``, ``configuration_setup`` and
``execution_results`` with string values. Tools that read those keys read ours.
"""

from __future__ import annotations

import csv
import io
from typing import Any

# the settings of a run that tables show and plots label configurations by
CONFIG_FIELDS = ("device", "hint", "api", "nireq", "nstreams", "batch", "infer_precision", "shape", "data_shape")
# the columns of the batch's runs.csv (one row per run), in order
TABLE_COLUMNS = [
    "run_id", "status", "model", "part", *CONFIG_FIELDS,
    "throughput_fps", "latency_median_ms", "latency_avg_ms", "latency_min_ms", "latency_max_ms",
    "compile_ms", "first_inference_ms", "iterations", "duration_s", "compile_peak_rss_mib",
    "streams", "threads", "precision", "load_before", "busy", "worker", "error",
]  # fmt: skip


def benchmark_app_sections(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """benchmark_app's three report sections, its key names, string values."""
    cfg, res, compiled = report["config"], report["results"], report.get("compiled", {})
    lat = res["latency_ms"]
    cmd = {
        "d": cfg["device"],
        "hint": cfg["hint"],
        "api": cfg["api"],
        **({"nireq": str(cfg["nireq"])} if cfg.get("nireq") else {}),
        **({"nstreams": str(cfg["nstreams"])} if cfg.get("nstreams") else {}),
        **({"b": str(cfg["batch"])} if cfg.get("batch") else {}),
        **({"shape": cfg["shape"]} if cfg.get("shape") else {}),
        **({"data_shape": cfg["data_shape"]} if cfg.get("data_shape") else {}),
        **({"t": f"{cfg['time_s']:g}"} if cfg.get("time_s") else {}),
        **({"niter": str(cfg["niter"])} if cfg.get("niter") else {}),
        **({"infer_precision": cfg["infer_precision"]} if cfg.get("infer_precision") else {}),
        **({"pc": "True"} if cfg.get("counters") else {}),
    }
    setup = {
        "topology": f"{report['model']} {report['part']}",
        "target device": cfg["device"],
        "API": cfg["api"],
        "inference_only": "True",
        "precision": str(compiled.get("INFERENCE_PRECISION_HINT", "UNSPECIFIED")),
        "batch size": str(cfg.get("batch") or 1),
        "number of iterations": str(res["iterations"]),
        "number of parallel infer requests": str(res["nireq"]),
        "duration (ms)": f"{res['duration_s'] * 1000:.0f}",
        f"number of {cfg['device']} streams": str(compiled.get("NUM_STREAMS", "")),
    }
    results = {
        "read model time (ms)": f"{res['read_ms']:.2f}",
        **({"reshape model time (ms)": f"{res['reshape_ms']:.2f}"} if res.get("reshape_ms") else {}),
        "compile model time (ms)": f"{res['compile_ms']:.2f}",
        "first inference time (ms)": f"{res['first_inference_ms']:.2f}",
        "total execution time (ms)": f"{res['duration_s'] * 1000:.2f}",
        "total number of iterations": str(res["iterations"]),
        "latency (ms)": f"{lat['median']:.2f}",
        "avg latency": f"{lat['avg']:.2f}",
        "min latency": f"{lat['min']:.2f}",
        "max latency": f"{lat['max']:.2f}",
        "throughput": f"{res['throughput_fps']:.2f}",
    }
    return {"cmd_options": cmd, "configuration_setup": setup, "execution_results": results}


def benchmark_app_csv(report: dict[str, Any]) -> str:
    """``benchmark_report.csv`` as benchmark_app writes it (``--report_type no_counters``), plus the
    average counters section when ``--counters`` was given."""
    sections = benchmark_app_sections(report)
    out = io.StringIO()
    for title, key in (
        ("Command line parameters", "cmd_options"),
        ("Configuration setup", "configuration_setup"),
        ("Execution results", "execution_results"),
    ):
        out.write(f"{title}\n")
        for k, v in sections[key].items():
            out.write(f"{k};{v}\n")
        out.write("\n")
    counters = [c for c in report.get("counters", []) if "node_type" in c]
    if counters:
        out.write("layerName;execStatus;layerType;execType;realTime (ms);cpuTime (ms)\n")
        for c in counters:
            out.write(
                f"{c['name']};{c['status']};{c['node_type']};{c['exec_type']};"
                f"{c['real_time_ms']:.3f};{c['cpu_time_ms']:.3f}\n"
            )
        out.write("\n")
    return out.getvalue()


def table_row(report: dict[str, Any]) -> dict[str, Any]:
    """One run's row of runs.csv (a failed run keeps its configuration and error)."""
    cfg = report.get("config", {})
    res = report.get("results") or {}
    lat = res.get("latency_ms") or {}
    compiled = report.get("compiled") or {}
    machine = report.get("machine") or {}
    row = {
        "run_id": report.get("run_id"),
        "status": report.get("status", "done"),
        "model": report.get("model"),
        "part": report.get("part"),
        **{
            k: cfg.get(k)
            for k in ("device", "hint", "api", "nireq", "nstreams", "batch", "infer_precision", "shape", "data_shape")
        },
        "throughput_fps": _round(res.get("throughput_fps")),
        "latency_median_ms": _round(lat.get("median")),
        "latency_avg_ms": _round(lat.get("avg")),
        "latency_min_ms": _round(lat.get("min")),
        "latency_max_ms": _round(lat.get("max")),
        "compile_ms": _round(res.get("compile_ms")),
        "first_inference_ms": _round(res.get("first_inference_ms")),
        "iterations": res.get("iterations"),
        "duration_s": _round(res.get("duration_s")),
        "compile_peak_rss_mib": _round(res.get("compile_peak_rss_mib")),
        "streams": compiled.get("NUM_STREAMS"),
        "threads": compiled.get("INFERENCE_NUM_THREADS"),
        "precision": compiled.get("INFERENCE_PRECISION_HINT"),
        "load_before": (machine.get("load_before") or [None])[0],
        "busy": machine.get("busy"),
        "worker": machine.get("worker"),
        "error": report.get("error"),
    }
    for p, value in sorted(lat.items()):
        if p.startswith("p"):
            row[f"latency_{p}_ms"] = _round(value)
    return row


def table_csv(rows: list[dict[str, Any]]) -> str:
    extra = sorted({k for r in rows for k in r} - set(TABLE_COLUMNS), key=lambda k: (len(k), k))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS + extra, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def _round(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value
