"""Tables and pictures of benchmark runs: runs.csv, throughput and latency per configuration,
latency distribution per run, and a self-contained ``index.html`` that shows them.

Runs of one configuration (repeats, or the same configuration in several batches) are grouped: the
bars show their median and the whiskers their min..max, and the table gives the spread. A
configuration's label is made of the settings that differ between the runs shown (model, part,
device, hint, requests, precision, worker...), so a sweep's plot names exactly what it varied.
"""

from __future__ import annotations

import html
import io
import statistics
from collections import defaultdict
from typing import Any

from ovbatch.storage import ObjectStore
from ovbatch.tasks.benchmark import report

LABEL_FIELDS = ("model", "part", *report.CONFIG_FIELDS)
# the style of every benchmark page (this one and pipeline runs' tasks/pipebench/batch.py)
PAGE_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: 12px 0; }
.note { color: #666; font-size: 13px; }
</style>"""
FILES = ("runs.csv", "throughput.png", "latency.png", "latency_distribution.png", "index.html")


def setting(run: dict[str, Any], name: str) -> Any:
    if name in ("model", "part"):
        return run.get(name)
    if name == "worker":
        return (run.get("machine") or {}).get("hostname")
    return (run.get("config") or {}).get(name)


def varying(runs: list[dict[str, Any]]) -> list[str]:
    names = [n for n in (*LABEL_FIELDS, "worker") if len({str(setting(r, n)) for r in runs}) > 1]
    return names or ["model"]


def label(run: dict[str, Any], names: list[str]) -> str:
    parts = []
    for n in names:
        value = setting(run, n)
        parts.append(
            str(value)
            if n in ("model", "part", "device", "worker")
            else f"{n}={value if value is not None else 'default'}"
        )
    return " ".join(parts)


def groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Done runs by configuration label, in first-seen order."""
    names = varying(runs)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run.get("status", "done") == "done":
            out[label(run, names)].append(run)
    return out


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput and median latency of repeated runs: median, min, max, relative spread."""
    fps = [r["results"]["throughput_fps"] for r in runs]
    lat = [r["results"]["latency_ms"]["median"] for r in runs]
    med = statistics.median(fps)
    return {
        "runs": len(runs),
        "throughput_fps": med,
        "throughput_min": min(fps),
        "throughput_max": max(fps),
        "throughput_spread_pct": 100 * (max(fps) - min(fps)) / med if med else 0.0,
        "latency_median_ms": statistics.median(lat),
        "latency_min_ms": min(lat),
        "latency_max_ms": max(lat),
    }


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=110)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def bar_chart(grouped: dict[str, list[dict[str, Any]]], metric: str, title: str, xlabel: str) -> bytes:
    """Horizontal bars, one per configuration: the median of its runs, whiskers min..max."""
    labels = list(grouped)
    stats = [spread(runs) for runs in grouped.values()]
    key = "throughput" if metric == "throughput" else "latency"
    mid = [s[f"{key}_fps" if key == "throughput" else "latency_median_ms"] for s in stats]
    lo = [m - s[f"{key}_min" if key == "throughput" else "latency_min_ms"] for m, s in zip(mid, stats, strict=True)]
    hi = [s[f"{key}_max" if key == "throughput" else "latency_max_ms"] - m for m, s in zip(mid, stats, strict=True)]
    fig, ax = _figure(9, 1.2 + 0.45 * max(1, len(labels)))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, mid, xerr=[lo, hi], color="#4C72B0" if key == "throughput" else "#DD8452", capsize=3)
    ax.set_yticks(ys, labels, fontsize=8)
    for y, value, up, s in zip(ys, mid, hi, stats, strict=True):
        note = f"  {value:,.0f}" if value >= 100 else f"  {value:.3g}"
        note += f" (n={s['runs']})" if s["runs"] > 1 else ""
        ax.text(value + up, y, note, va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max([m + h for m, h in zip(mid, hi, strict=True)] + [1e-9]) * 1.3)
    return _png(fig)


def distribution_chart(runs: list[dict[str, Any]], names: list[str]) -> bytes:
    """Each run's latency distribution as a CDF (from its p0..p100 quantiles)."""
    fig, ax = _figure(9, 4.5)
    for run in runs:
        q = run.get("latency_quantiles_ms") or []
        if q:
            ax.plot(q, [i for i in range(len(q))], label=f"{label(run, names)} [{run['run_id']}]", linewidth=1.2)
    ax.set_xscale("log")  # tails are often 10-100x the median: a log axis shows both
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.set_title("Latency distribution per run", fontsize=10)
    ax.grid(alpha=0.3)
    if len(runs) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def write_all(runs: list[dict[str, Any]], out: ObjectStore, title: str, prefix: str = "") -> list[str]:
    """runs.csv, the plots and index.html under ``prefix`` in ``out``; returns the keys written."""
    written = []
    rows = [report.table_row(r) for r in runs]
    out.put_bytes(f"{prefix}runs.csv", report.table_csv(rows).encode())
    written.append(f"{prefix}runs.csv")
    done = [r for r in runs if r.get("status", "done") == "done"]
    grouped = groups(runs)
    pictures = []
    if done:
        for name, metric, heading, xlabel in (
            (
                "throughput.png",
                "throughput",
                "Throughput per configuration (median of runs, whiskers min..max)",
                "inferences x batch / s",
            ),
            ("latency.png", "latency", "Median latency per configuration (median of runs, whiskers min..max)", "ms"),
        ):
            out.put_bytes(f"{prefix}{name}", bar_chart(grouped, metric, heading, xlabel))
            pictures.append(name)
        out.put_bytes(f"{prefix}latency_distribution.png", distribution_chart(done, varying(runs)))
        pictures.append("latency_distribution.png")
    written += [f"{prefix}{p}" for p in pictures]
    out.put_bytes(f"{prefix}index.html", index_html(title, runs, grouped, pictures).encode("utf-8"))
    written.append(f"{prefix}index.html")
    return written


def index_html(
    title: str, runs: list[dict[str, Any]], grouped: dict[str, list[dict[str, Any]]], pictures: list[str]
) -> str:
    """One self-contained page: configurations with spread, the plots, every run, failures."""
    e = html.escape
    rows = []
    first = None
    for name, group in grouped.items():
        s = spread(group)
        first = first or s
        ratio = s["throughput_fps"] / first["throughput_fps"] if first["throughput_fps"] else 0.0
        rows.append(
            f"<tr><td>{e(name)}</td><td>{s['runs']}</td><td>{s['throughput_fps']:.2f}</td>"
            f"<td>{s['throughput_min']:.2f}..{s['throughput_max']:.2f} ({s['throughput_spread_pct']:.1f} %)</td>"
            f"<td>{ratio:.2f}x</td><td>{s['latency_median_ms']:.2f}</td></tr>"
        )
    runs_rows = []
    for r in runs:
        row = report.table_row(r)
        cells = "".join(
            f"<td>{e('' if row.get(c) is None else str(row.get(c)))}</td>"
            for c in (
                "run_id",
                "status",
                "model",
                "part",
                "device",
                "hint",
                "nireq",
                "infer_precision",
                "throughput_fps",
                "latency_median_ms",
                "compile_ms",
                "streams",
                "busy",
                "error",
            )
        )
        runs_rows.append(f"<tr>{cells}</tr>")
    figures = "".join(f'<figure><img src="{e(p)}" alt="{e(p)}"></figure>' for p in pictures)
    head = "".join(
        f"<th>{c}</th>"
        for c in (
            "run",
            "status",
            "model",
            "part",
            "device",
            "hint",
            "nireq",
            "precision",
            "fps",
            "median ms",
            "compile ms",
            "streams",
            "busy",
            "error",
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
{PAGE_STYLE}</head><body>
<h1>{e(title)}</h1>
<p class="note">{len(runs)} run(s); throughput = inferences x batch per second, latency per request
as benchmark_app reports it. Files: <a href="runs.csv">runs.csv</a>.</p>
<h2>Configurations</h2>
<table><tr><th>configuration</th><th>runs</th><th>throughput (fps, median)</th><th>spread min..max</th>
<th>vs first</th><th>median latency (ms)</th></tr>
{"".join(rows)}</table>
{figures}
<h2>Runs</h2>
<table><tr>{head}</tr>
{"".join(runs_rows)}</table>
</body></html>
"""
