"""A pipeline run's report as tables: llm_bench's CSV layout (openvino.genai tools/llm_bench), the
headline figures for the batch record, and one row per run for the batch table.

llm_bench's columns, as this project fills them:

- transcription, one row for the run: ``input_size`` audio seconds, ``infer_count`` 30 s windows,
  ``generation_time(s)`` transcription seconds, ``output_size`` decoder tokens, ``latency(ms)``
  decoder ms per token, ``1st_latency(ms)`` a decode's first decoder call (prompt and cross-attention
  cache), ``2nd_avg_latency(ms)`` one decoder step (all rows of a batched call), ``pretrain_time(s)``
  decrypt + compile (empty when the engine was already loaded); then ``rtfx`` and
  ``encoder_ms_per_window`` after llm_bench's columns.
- image generation, one row per image: ``infer_count`` UNet steps, ``generation_time(s)`` the image,
  ``latency(ms)`` ms per step, ``1st_latency(ms)`` the first UNet step, ``2nd_avg_latency(ms)`` the
  other steps' average; then ``text_encoder_latency(ms)`` and ``vae_decoder_latency(ms)``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

LLM_BENCH_HEADER = (
    "iteration",
    "model",
    "framework",
    "device",
    "pretrain_time(s)",
    "input_size",
    "infer_count",
    "generation_time(s)",
    "output_size",
    "latency(ms)",
    "1st_latency(ms)",
    "2nd_avg_latency(ms)",
    "precision",
    "max_rss_mem(MB)",
    "prompt_idx",
)
SPEECH_EXTRA = ("rtfx", "encoder_ms_per_window", "decoder_ms_per_token", "audio_files")
IMAGE_EXTRA = ("text_encoder_latency(ms)", "vae_decoder_latency(ms)", "width", "height", "seed")


def _r(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else ("" if value is None else value)


def llm_bench_csv(data: dict[str, Any]) -> str:
    res, config = data["results"], data["config"]
    base = {
        "model": data["model"],
        "framework": "ovbatch",
        "device": config["device"],
        "pretrain_time(s)": _r(res.get("load_s")),
        "precision": data.get("model_precision") or "",
        "max_rss_mem(MB)": _r(res.get("peak_rss_mib") * 2**20 / 1e6 if res.get("peak_rss_mib") else None),
    }
    rows: list[dict[str, Any]] = []
    header: tuple[str, ...]
    if data["pipeline"] == "transcribe":
        header = (*LLM_BENCH_HEADER, *SPEECH_EXTRA)
        rows.append(
            {
                **base,
                "iteration": 1,
                "input_size": _r(res["audio_s"]),
                "infer_count": res["windows"],
                "generation_time(s)": _r(res["transcribe_s"]),
                "output_size": res["tokens"],
                "latency(ms)": _r(res["decoder_ms_per_token"]),
                "1st_latency(ms)": _r(res["decoder_first_call_ms"]),
                "2nd_avg_latency(ms)": _r(res["decoder_step_ms"]),
                "prompt_idx": "all",
                "rtfx": _r(res["rtfx"]),
                "encoder_ms_per_window": _r(res["encoder_ms_per_window"]),
                "decoder_ms_per_token": _r(res["decoder_ms_per_token"]),
                "audio_files": res["files"],
            }
        )
    else:
        header = (*LLM_BENCH_HEADER, *IMAGE_EXTRA)
        for i, item in enumerate(data["items"]):
            rows.append(
                {
                    **base,
                    "iteration": 1,
                    "input_size": len(item["prompt"]),
                    "infer_count": item["steps"],
                    "generation_time(s)": _r(item["seconds"], 4),
                    "output_size": 1,
                    "latency(ms)": _r(item["seconds"] * 1000 / item["steps"]),
                    "1st_latency(ms)": _r(item["unet_first_step_ms"]),
                    "2nd_avg_latency(ms)": _r(item["unet_other_steps_avg_ms"]) if item["steps"] > 1 else "NA",
                    "prompt_idx": i,
                    "text_encoder_latency(ms)": _r(item["text_encoder_ms"]),
                    "vae_decoder_latency(ms)": _r(item["vae_decode_ms"]),
                    "width": res["width"],
                    "height": res["height"],
                    "seed": item["seed"],
                }
            )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def headline(data: dict[str, Any]) -> dict[str, Any]:
    """What the batch record keeps and ``watch`` shows for a done run."""
    res = data["results"]
    if data["pipeline"] == "transcribe":
        keys = ("rtfx", "encoder_ms_per_window", "decoder_ms_per_token")
    else:
        keys = ("seconds_per_image", "unet_other_steps_avg_ms", "vae_decode_ms")
    figures: dict[str, Any] = {k: round(res[k], 3) for k in keys if res.get(k) is not None}
    failed = res.get("failed_files") or res.get("failed_images")
    if failed:
        figures["failed_inputs"] = failed  # named in the run's JSON ("failures")
    return figures


TABLE_FIELDS = (
    "run_id",
    "status",
    "model",
    "pipeline",
    "device",
    "inputs",
    "rtfx",
    "audio_s",
    "encoder_ms_per_window",
    "decoder_ms_per_token",
    "decoder_step_ms",
    "seconds_per_image",
    "text_encoder_ms",
    "unet_first_step_ms",
    "unet_other_steps_avg_ms",
    "vae_decode_ms",
    "load_s",
    "peak_rss_mib",
    "busy",
    "worker",
    "error",
)


def table_row(data: dict[str, Any]) -> dict[str, Any]:
    res = data.get("results") or {}
    config = data.get("config") or {}
    machine = data.get("machine") or {}
    row = {
        "run_id": data.get("run_id"),
        "status": data.get("status"),
        "model": data.get("model"),
        "pipeline": data.get("pipeline") or config.get("pipeline"),
        "device": config.get("device"),
        "inputs": res.get("files", res.get("images")),
        "busy": machine.get("busy"),
        "worker": machine.get("hostname"),
        "error": data.get("error"),
    }
    for key in TABLE_FIELDS:
        if key not in row:
            row[key] = _r(res.get(key))
    return row


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, TABLE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
