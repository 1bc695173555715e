"""Short clips packed into shared 30 s windows against one window per clip (issue 8 §4): speed and
WER of ovbatch's engine on the real Whisper base, side by side in one process.

    .venv/bin/python -m benchmarks.pack_bench [--models int8,f32] [--gaps 0.5,1,2] [--max-s 10]

Audio: the 36 clips of ``transcribe_bench`` (6 voices and speeds, 362 words) and 180 of the 240
clips of the accuracy set (1,712 words); every fourth accuracy clip (the other 60) calibrates the
INT8 encoder, which is made in memory as ``int8-hybrid`` makes it (``tasks/quantize/whisper.ptq``,
the recipe's default ``keep_float``; decoder weights INT8). ``f32``: the float model in f32, the
default for float versions. Each configuration transcribes each set with ``transcribe_many``, 32
clips per call (as a worker's batcher holds up to its ``worker_batch_files``), English given.
Rows: wall time, RTFx, encoder windows, decoder steps, temperature fallbacks, word errors, and the
paired bootstrap difference against the same model with packing off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.int8_recipe_bench import F32, calibration_windows, engine, ptq_encoder, registry_version
from benchmarks.precision_bench import REPO
from benchmarks.speech import error_units, make_accuracy_set, make_clips, paired_wer_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-int8")
    parser.add_argument("--models", default="int8,f32")
    parser.add_argument("--gaps", default="2", help="pack_gap_s values to try, comma-separated")
    parser.add_argument("--max-s", type=float, default=10.0, help="pack_max_s")
    args = parser.parse_args()
    import nncf

    from ovbatch.ov import make_core
    from ovbatch.tasks.quantize.recipes import RECIPES
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.engine import DECODER, ENCODER
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    core = make_core()
    version = registry_version(args.home.resolve())
    acc_dir, short_dir = REPO / ".cache" / "speech-accuracy", REPO / ".cache" / "speech"
    acc, short = make_accuracy_set(acc_dir), make_clips(short_dir)
    names = sorted(acc)
    sets = {
        "36 short clips": (short_dir, sorted(short), short),
        "180 accuracy clips": (acc_dir, [n for i, n in enumerate(names) if i % 4], acc),
    }
    configs: list[dict[str, float]] = [{"pack_max_s": 0.0}] + [
        {"pack_max_s": args.max_s, "pack_gap_s": float(g)} for g in args.gaps.split(",")
    ]
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model == "int8":
            keep = str(RECIPES[("whisper", "int8-hybrid")].defaults["keep_float"])
            samples = calibration_windows(core, version, acc_dir, names[0::4])
            encoder = ptq_encoder(version, core, samples, 0.5, keep)
            decoder = nncf.compress_weights(version.read_model(core, DECODER), mode=nncf.CompressWeightsMode.INT8_ASYM)
            eng = engine(core, version, encoder, decoder, {})
        elif model == "f32":
            eng = engine(core, version, version.read_model(core, ENCODER), version.read_model(core, DECODER), F32)
        else:
            raise SystemExit(f"--models: int8 or f32, not {model!r}")
        base = eng.config
        for set_name, (folder, chosen, refs) in sets.items():
            audios = [audio.load(folder / n, n) for n in chosen]
            seconds = sum(len(a) for a in audios) / 16000
            off: np.ndarray | None = None
            for config in configs:
                eng.config = dataclasses.replace(base, **config)
                before = eng.stats.copy()
                t0 = time.perf_counter()
                texts = []
                for i in range(0, len(audios), 32):
                    texts += [t.text for t in eng.transcribe_many(audios[i : i + 32], TranscribeOptions(language="en"))]
                wall = time.perf_counter() - t0
                stats = eng.stats.since(before)
                units = error_units([refs[n] for n in chosen], texts)
                row: dict[str, Any] = {
                    "model": model,
                    "set": set_name,
                    "packing": "off" if not config["pack_max_s"] else f"gap {config['pack_gap_s']:g} s",
                    "wall_s": round(wall, 2),
                    "rtfx": round(seconds / wall, 1),
                    "windows": stats.windows,
                    "steps": stats.steps,
                    "fallbacks": stats.fallbacks,
                    "errors": int(units[:, 1].sum()),
                    "words": int(units[:, 0].sum()),
                }
                if off is None:
                    off = units
                else:
                    row["vs_off"] = paired_wer_difference(units, off)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        "\n| model | clips | packing | wall s | RTFx | windows | decoder steps | fallbacks | errors | WER % "
        "| vs off, points [95 % CI] |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        v = r.get("vs_off")
        cmp = f"{v['diff_pts']:+.2f} [{v['ci95_pts'][0]:+.2f}, {v['ci95_pts'][1]:+.2f}]" if v else ""
        wer = 100 * r["errors"] / r["words"]
        print(
            f"| {r['model']} | {r['set']} | {r['packing']} | {r['wall_s']} | {r['rtfx']} | {r['windows']} "
            f"| {r['steps']} | {r['fallbacks']} | {r['errors']} | {wer:.2f} | {cmp} |"
        )


if __name__ == "__main__":
    main()
