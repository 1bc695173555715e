"""The transcription pipeline over an audio set: decode every file, warm up, then transcribe them all
as the transcription kind does (windows of several files batched into each encoder and decoder call)
and read where the time went from the engine's counters (``tasks/transcribe/stats.py``).

RTFx is audio seconds over transcription seconds (log-mel, encoder, decoder, segmenting); decoding
the files is timed apart (``rtfx_with_decode`` counts it too). A file that cannot be read fails alone,
named; the others are measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.errors import InputError, ObjectNotFound
from ovbatch.jobs import JobEnv
from ovbatch.tasks.pipebench.spec import PipelineJob
from ovbatch.tasks.transcribe import audio
from ovbatch.tasks.transcribe.job import seekable
from ovbatch.tasks.transcribe.types import SAMPLE_RATE

MAX_TOTAL_AUDIO_S = 4 * 3600.0  # decoded at once: 4 h of 16 kHz float32 is 0.9 GB
WARMUP_S = 30.0  # a warm-up transcribes one window of the first file


@dataclass
class Decoded:
    names: list[str] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    decode_s: float = 0.0


def decode_all(job: PipelineJob, env: JobEnv, check: Callable[[], None]) -> Decoded:
    out = Decoded()
    total_s = 0.0
    limit = duration_limit_for(job, env)
    t0 = time.perf_counter()
    for item in job.audio:
        check()
        try:
            with env.open_input(item.url) as raw, seekable(raw) as stream:
                samples = audio.load(stream, item.display, max_duration_s=limit)
        except (InputError, ObjectNotFound) as exc:  # unreadable, or gone since submission: it fails alone
            message = str(exc)
            out.failures.append(
                {
                    "input": item.display,
                    "error": message if message.startswith(item.display) else f"{item.display}: {message}",
                }
            )
            continue
        total_s += len(samples) / SAMPLE_RATE
        if total_s > MAX_TOTAL_AUDIO_S:
            raise InputError(
                f"the audio set holds more than {MAX_TOTAL_AUDIO_S / 3600:g} h (at {item.display}): "
                "a pipeline benchmark decodes it all first; measure a part of it"
            )
        out.names.append(item.display)
        out.audio.append(samples)
    out.decode_s = time.perf_counter() - t0
    return out


def duration_limit_for(job: PipelineJob, env: JobEnv) -> float | None:
    limit = getattr(env.settings, "max_audio_duration_s", None)
    return float(limit) if limit else None


def measure(job: PipelineJob, engine: Any, env: JobEnv, check: Callable[[], None]) -> dict[str, Any]:
    """The run's figures (``results``), per-file rows and failures."""
    env.stage(f"{job.display}: decoding {len(job.audio)} audio file(s)")
    decoded = decode_all(job, env, check)
    if not decoded.audio:
        reasons = "; ".join(f["error"] for f in decoded.failures[:3])
        raise InputError(f"none of the {len(job.audio)} audio file(s) could be read: {reasons}")
    warmup_s = None
    if job.warmup:
        env.stage(f"{job.display}: warm-up")
        t0 = time.perf_counter()
        first = decoded.audio[0][: int(WARMUP_S * SAMPLE_RATE)]
        for _ in range(job.warmup):
            engine.transcribe_streams([[first]], job.options, check)
        warmup_s = time.perf_counter() - t0
    env.stage(f"{job.display}: transcribing {len(decoded.audio)} file(s)")
    before = engine.stats.copy()
    t0 = time.perf_counter()
    transcripts = engine.transcribe_streams([[a] for a in decoded.audio], job.options, check)
    transcribe_s = time.perf_counter() - t0
    stats = engine.stats.since(before)
    audio_s = sum(len(a) for a in decoded.audio) / SAMPLE_RATE
    durations = [len(a) / SAMPLE_RATE for a in decoded.audio]
    results: dict[str, Any] = {
        "files": len(decoded.audio),
        "failed_files": len(decoded.failures),
        "audio_s": audio_s,
        "file_duration_s": {
            "min": min(durations),
            "median": statistics.median(durations),
            "max": max(durations),
        },
        "transcribe_s": transcribe_s,
        "rtfx": audio_s / transcribe_s,
        "decode_s": decoded.decode_s,
        "rtfx_with_decode": audio_s / (transcribe_s + decoded.decode_s),
        "warmup_s": warmup_s,
        **stats.figures(),
        "windows": stats.windows,
        "encoder_calls": stats.encoder_calls,
        "decoder_steps": stats.steps,
        "tokens": stats.tokens,
        "fallbacks": stats.fallbacks,
        "rechecked_windows": stats.rechecked,  # doubted in bf16, encoded and decoded again in f32
        "seconds": {
            "features": stats.features_s,
            "encoder": stats.encoder_s,
            "language_detection": stats.language_s,
            "decoder_first_calls": stats.prefill_s,
            "decoder_steps": stats.step_s,
            "other": max(
                0.0,
                transcribe_s - stats.features_s - stats.encoder_s - stats.language_s - stats.prefill_s - stats.step_s,
            ),
        },
    }
    files = [
        {
            "input": name,
            "duration_s": round(len(a) / SAMPLE_RATE, 3),
            "language": t.language,
            "words": len(t.text.split()),
            "text": t.text[:200],
        }
        for name, a, t in zip(decoded.names, decoded.audio, transcripts, strict=True)
    ]
    return {"results": results, "items": files, "failures": decoded.failures}
