"""What one Whisper encoder / decoder call costs by the number of windows in it, in bf16 and f32.

Asks whether ``recheck``'s cost (the windows bf16 doubts, encoded and decoded again in f32) comes
from the small batches those few windows are decoded in (then holding them back until a full batch
of doubted windows waits would cut it) or from the f32 work itself (then it would not).

    .venv/bin/python -m benchmarks.decoder_rows [--rows 1,2,4,8] [--repeats 3]

The real Whisper base from the registry ``benchmarks.precision_bench`` keeps (made on first use),
one 30 s window of espeak-ng speech repeated in every row (every row then decodes the same number
of tokens), greedy, English, the machine's cores as threads. Best of ``--repeats`` per cell. Prints
JSON lines and a Markdown table: seconds per call and per window.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.precision_bench import F32, whisper_registry
from benchmarks.speech import make_clips

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-precision")
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, WhisperEngine

    registry = whisper_registry(args.home.resolve())
    version = decrypt_version(registry, ModelRef.parse("whisper-base@1"))
    speech = REPO / ".cache" / "speech"
    names = sorted(make_clips(speech))
    # about 25 s of speech in one window: several clips end to end
    clip = np.concatenate([audio.load(speech / n, n) for n in names[:6]])[: 25 * 16000]
    core = make_core()
    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    rows = [int(r) for r in args.rows.split(",")]
    table = []
    for precision, hint in (("bf16", {}), ("f32", F32)):
        compiled = {
            role: core.compile_model(version.read_model(core, role), "CPU", {**threads, **hint})
            for role in (ENCODER, DECODER)
        }
        compiled[DETOKENIZER] = core.compile_model(version.read_model(core, DETOKENIZER), "CPU")
        engine = WhisperEngine.from_loaded(version, compiled)
        prompt = engine.specials.prompt("en", "transcribe")
        for n in rows:
            encode, decode, tokens = [], [], 0
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                hidden = engine._encode([clip] * n)
                t1 = time.perf_counter()
                rngs = [np.random.default_rng(0) for _ in range(n)]
                result = engine.decoder.decode(hidden, [prompt] * n, [0.0] * n, rngs)
                decode.append(time.perf_counter() - t1)
                encode.append(t1 - t0)
                tokens = len(result[0].tokens)
            row = {
                "precision": precision,
                "rows": n,
                "tokens": tokens,
                "encode_s": round(min(encode), 3),
                "decode_s": round(min(decode), 3),
                "per_window_s": round((min(encode) + min(decode)) / n, 3),
            }
            print(json.dumps(row), flush=True)
            table.append(row)
    print("\n| precision | windows per call | tokens | encode s | decode s | s per window |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(
            f"| {r['precision']} | {r['rows']} | {r['tokens']} | {r['encode_s']:.3f} | {r['decode_s']:.3f} "
            f"| {r['per_window_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
