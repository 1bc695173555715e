"""Why faster-whisper's batched pipeline is more accurate on the long files: its chunks, or its
decoding without timestamp tokens? And what decoding ovbatch's pieces without them would give.

    .venv/bin/python -m benchmarks.long_timestamps [--ovbatch-only]     # about 5 minutes on 2 cores

The two long files of ``benchmarks.transcribe_bench`` (702 s, espeak-ng, two voices), English,
greedy, 2 threads, in process (no worker, no queue). Rows:

* faster-whisper int8 (the CTranslate2 weights of the same Whisper base): ``BatchedInferencePipeline``
  (batch 8; its default decodes without timestamps) with and without ``without_timestamps``, and the
  sequential ``WhisperModel.transcribe`` with timestamps (its default), without, and without
  conditioning on the previous window's text.
* ovbatch's engine (the float version: bf16, recheck (bf16, then f32 for the windows it doubts: the
  default for float versions on a BF16 CPU) and f32): the default (timestamp tokens decoded, a piece
  whose last segment is open is decoded again from its last timestamp), and ``--no-timestamps``
  (``TranscribeOptions(timestamps=False)``, the CLI's default when txt is the only format): each
  piece decoded whole after ``<|notimestamps|>``, one segment per piece.

Prints one line per row: word errors of 1448 reference words, WER, seconds, and for ovbatch the
engine's windows, decoded tokens and decoder steps.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.speech import error_units, wer
from benchmarks.transcribe_bench import CT2, REPO, THREADS, long_files


def _row(name: str, refs: list[str], hyps: list[str], seconds: float, extra: str = "") -> None:
    errors = int(error_units(refs, hyps)[:, 1].sum())
    print(f"| {name} | {errors} | {wer(refs, hyps) * 100:.2f} | {seconds:.1f} | {extra} |", flush=True)


def faster_whisper_rows(files: list[tuple[Path, str]], refs: list[str]) -> None:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from ovbatch import samples

    samples.fetch_whisper_base(CT2)
    model = WhisperModel(str(CT2), device="cpu", compute_type="int8", cpu_threads=THREADS)
    pipe = BatchedInferencePipeline(model)
    rows: dict[str, Any] = {
        "faster-whisper batched 8, no timestamps (its default)": lambda p: pipe.transcribe(
            str(p), beam_size=1, language="en", batch_size=8
        ),
        "faster-whisper batched 8, timestamps": lambda p: pipe.transcribe(
            str(p), beam_size=1, language="en", batch_size=8, without_timestamps=False
        ),
        "faster-whisper sequential, timestamps (its default)": lambda p: model.transcribe(
            str(p), beam_size=1, language="en"
        ),
        "faster-whisper sequential, no timestamps": lambda p: model.transcribe(
            str(p), beam_size=1, language="en", without_timestamps=True
        ),
        "faster-whisper sequential, timestamps, no previous text": lambda p: model.transcribe(
            str(p), beam_size=1, language="en", condition_on_previous_text=False
        ),
    }
    for name, run in rows.items():
        t0 = time.perf_counter()
        hyps = ["".join(s.text for s in run(p)[0]) for p, _ in files]
        _row(name, refs, hyps, time.perf_counter() - t0)


def ovbatch_rows(files: list[tuple[Path, str]], refs: list[str]) -> None:
    from benchmarks.precision_bench import F32, whisper_registry
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, WhisperEngine
    from ovbatch.tasks.transcribe.precision import compile_careful
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    audios = [audio.load(p, p.name) for p, _ in files]
    version = decrypt_version(whisper_registry(REPO / ".cache" / "bench-precision"), ModelRef.parse("whisper-base@1"))
    core = make_core()
    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    for precision, hint in (("bf16", {}), ("recheck", {}), ("f32", F32)):
        compiled = {
            role: core.compile_model(version.read_model(core, role), "CPU", {**threads, **hint})
            for role in (ENCODER, DECODER)
        }
        compiled[DETOKENIZER] = core.compile_model(version.read_model(core, DETOKENIZER), "CPU")
        careful = compile_careful(version, core, "CPU", {**threads, **F32}) if precision == "recheck" else None
        for mode in ("timestamps (default)", "--no-timestamps"):
            engine = WhisperEngine.from_loaded(version, compiled, careful=careful)
            t0 = time.perf_counter()
            out = engine.transcribe_many(
                audios, TranscribeOptions(language="en", timestamps=mode.endswith("(default)"))
            )
            seconds = time.perf_counter() - t0
            s = engine.stats
            segments = sum(len(t.segments) for t in out)
            extra = f"{s.windows} windows, {s.tokens} tokens, {s.steps} steps, {segments} segments"
            extra += f", {s.rechecked} windows decoded again in f32" if careful else ""
            _row(f"ovbatch {precision}, {mode}", refs, [t.text for t in out], seconds, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ovbatch-only", action="store_true", help="skip the faster-whisper rows")
    args = parser.parse_args()
    files = long_files()
    refs = [r for _, r in files]
    print("| engine | errors / 1448 | WER % | s | ovbatch's work |\n| --- | --- | --- | --- | --- |", flush=True)
    if not args.ovbatch_only:
        faster_whisper_rows(files, refs)
    ovbatch_rows(files, refs)


if __name__ == "__main__":
    main()
