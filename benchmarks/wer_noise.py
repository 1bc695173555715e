"""How much of a WER difference is the audio's noise? The 36 clips, several times, each time with a
different inaudible dither (+-1 LSB triangular noise, as sox adds by default), through ovbatch's
engine and faster-whisper int8 and float32 on the same weights.

    .venv/bin/python -m benchmarks.wer_noise [--realizations 5]

Realization 0 is the clips as made (no dither). Engines alone, greedy, language "en", 2 threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks.speech import error_units, make_clips
from benchmarks.transcribe_bench import CT2, OUT, SPEECH

LSB = 1 / 32768


def dithered(audio: np.ndarray, seed: int) -> np.ndarray:
    if seed == 0:
        return audio
    rng = np.random.default_rng(seed)
    noise = (rng.random(len(audio)) - rng.random(len(audio))) * LSB  # triangular, +-1 LSB
    return np.round((audio + noise) / LSB).astype(np.float32) * LSB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realizations", type=int, default=5)
    args = parser.parse_args()
    from faster_whisper import WhisperModel

    from benchmarks.engines_bench import ours_engine

    refs = make_clips(SPEECH)
    clips = [sf.read(str(SPEECH / n), dtype="float32")[0] for n in refs]
    texts = list(refs.values())
    engine, options = ours_engine()
    models = {ct: WhisperModel(str(CT2), device="cpu", compute_type=ct, cpu_threads=2) for ct in ("int8", "float32")}
    errors: dict[str, list[int]] = {"ovbatch": [], "fw-int8": [], "fw-fp32": []}
    for seed in range(args.realizations):
        audios = [dithered(a, seed) for a in clips]
        hyps = {"ovbatch": [t.text for t in engine.transcribe_many(audios, options)]}
        for ct, model in models.items():
            name = "fw-int8" if ct == "int8" else "fw-fp32"
            hyps[name] = ["".join(s.text for s in model.transcribe(a, beam_size=1, language="en")[0]) for a in audios]
        row: dict[str, Any] = {"realization": seed}
        for name, h in hyps.items():
            errors[name].append(int(error_units(texts, h)[:, 1].sum()))
            row[name] = errors[name][-1]
        print(json.dumps(row), flush=True)
    words = int(error_units(texts, texts)[:, 0].sum())
    summary = {
        name: {
            "errors": e,
            "mean_wer_pct": round(statistics.mean(e) / words * 100, 2),
            "min_max_wer_pct": [round(min(e) / words * 100, 2), round(max(e) / words * 100, 2)],
        }
        for name, e in errors.items()
    }
    summary["words"] = words  # type: ignore[assignment]
    print(json.dumps(summary, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "wer_noise.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
