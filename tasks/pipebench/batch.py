"""After a pipeline benchmark batch's last run: ``<batch>/pipeline_runs.csv`` (one row per run),
``<batch>/stages.png`` (where each run's time went, stage by stage) and ``<batch>/index.html``."""

from __future__ import annotations

import html
import json
from typing import Any

from ovbatch.batches import BatchStore
from ovbatch.errors import ObjectNotFound
from ovbatch.storage import ObjectStore
from ovbatch.tasks.benchmark.plots import PAGE_STYLE, _figure, _png
from ovbatch.tasks.pipebench import report
from ovbatch.tasks.pipebench.spec import PipelineJob

SPEECH_STAGES = ("features", "encoder", "language_detection", "decoder_first_calls", "decoder_steps", "other")
COLORS = {
    "features": "#8172B3",
    "encoder": "#4C72B0",
    "language_detection": "#937860",
    "decoder_first_calls": "#DD8452",
    "decoder_steps": "#C44E52",
    "text_encoder": "#8172B3",
    "unet": "#DD8452",
    "vae_decode": "#55A868",
    "other": "#BBBBBB",
}


def load_runs(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[dict[str, Any]]:
    records = batches.jobs(batch_id)
    specs = batches.specs(batch_id)
    runs = []
    for jid, spec in specs.items():
        job = PipelineJob.from_json(spec)
        try:
            runs.append(json.loads(out.get_bytes(job.report_key)))
        except (ObjectNotFound, ValueError):
            rec = records.get(jid, {})
            status = rec.get("status", "failed")
            runs.append(
                {
                    "run_id": job.run_id,
                    "status": status,
                    "model": job.model,
                    "config": job.configuration(),
                    "error": rec.get("error"),
                }
            )
    for jid, rec in records.items():  # configurations refused at submission
        if jid not in specs:
            runs.append({"run_id": rec["display"], "status": "failed", "config": {}, "error": rec.get("error")})
    return sorted(runs, key=lambda r: str(r["run_id"]))


def stage_bars(run: dict[str, Any]) -> tuple[str, list[tuple[str, float]]]:
    """(unit, [(stage, ms)]): ms per 30 s of audio, or ms per image (medians of its images)."""
    res = run["results"]
    if run["pipeline"] == "transcribe":
        per = res["audio_s"] / 30.0
        return "ms per 30 s of audio", [(s, res["seconds"][s] * 1000 / per) for s in SPEECH_STAGES]
    steps = [it["steps"] for it in run["items"]]
    mid_steps = sorted(steps)[len(steps) // 2]
    unet = res["unet_first_step_ms"] + res["unet_other_steps_avg_ms"] * (mid_steps - 1)
    total = res["seconds_per_image"] * 1000
    parts = [("text_encoder", res["text_encoder_ms"]), ("unet", unet), ("vae_decode", res["vae_decode_ms"])]
    return "ms per image", [*parts, ("other", max(0.0, total - sum(v for _, v in parts)))]


def headline_text(run: dict[str, Any]) -> str:
    res = run["results"]
    if run["pipeline"] == "transcribe":
        return f"RTFx {res['rtfx']:.1f}"
    return f"{res['seconds_per_image']:.2f} s/image"


def stages_chart(runs: list[dict[str, Any]]) -> bytes:
    done = [r for r in runs if r.get("status") == "done"]
    fig, ax = _figure(9, 2.2 + 0.5 * len(done))
    ys = list(range(len(done)))[::-1]
    seen: set[str] = set()
    units = set()
    for y, run in zip(ys, done, strict=True):
        unit, bars = stage_bars(run)
        units.add(unit)
        left = 0.0
        for stage, ms in bars:
            ax.barh(y, ms, left=left, color=COLORS[stage], label=stage if stage not in seen else None)
            seen.add(stage)
            left += ms
        ax.text(left, y, f"  {headline_text(run)}", va="center", fontsize=8)
    labels = [
        f"{r['model']} {r['config'].get('device')} {r.get('inference_precision') or ''} #{str(r['run_id'])[-3:]}"
        for r in done
    ]
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(" / ".join(sorted(units)))
    ax.set_title("Where each run's time went, stage by stage", fontsize=10)
    xmax = max((sum(ms for _, ms in stage_bars(r)[1]) for r in done), default=1.0)
    ax.set_xlim(0, xmax * 1.25)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=6, frameon=False)
    return _png(fig)


def finish(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[str]:
    runs = load_runs(batches, batch_id, out)
    prefix = f"{batch_id}/"
    written = [f"{prefix}pipeline_runs.csv"]
    rows = [report.table_row(r) for r in runs]
    out.put_bytes(written[0], report.table_csv(rows).encode())
    pictures = []
    if any(r.get("status") == "done" for r in runs):
        out.put_bytes(f"{prefix}stages.png", stages_chart(runs))
        pictures.append("stages.png")
        written.append(f"{prefix}stages.png")
    out.put_bytes(f"{prefix}index.html", index_html(batch_id, rows, pictures).encode())
    written.append(f"{prefix}index.html")
    return written


def index_html(batch_id: str, rows: list[dict[str, Any]], pictures: list[str]) -> str:
    e = html.escape
    shown = [c for c in report.TABLE_FIELDS if any(row.get(c) not in (None, "") for row in rows)]
    head = "".join(f"<th>{e(c)}</th>" for c in shown)
    body = "".join(
        "<tr>" + "".join(f"<td>{e('' if row.get(c) is None else str(row.get(c)))}</td>" for c in shown) + "</tr>"
        for row in rows
    )
    figures = "".join(f'<figure><img src="{e(p)}" alt="{e(p)}"></figure>' for p in pictures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ovbatch pipeline benchmark {e(batch_id)}</title>
{PAGE_STYLE}</head><body>
<h1>ovbatch pipeline benchmark {e(batch_id)}</h1>
<p class="note">{len(rows)} run(s). Transcription: RTFx = audio seconds per transcription second (log-mel,
encoder, decoder; decoding the files apart); encoder ms per 30 s window; decoder ms per token (first
calls and steps over the tokens chosen). Images: seconds per image and genai's stage timings (medians).
Each run's JSON and llm_bench-style pipeline_report.csv sit beside this batch folder.
Files: <a href="pipeline_runs.csv">pipeline_runs.csv</a>.</p>
{figures}
<h2>Runs</h2>
<table><tr>{head}</tr>
{body}</table>
</body></html>
"""
