"""Quantization recipes on the real Whisper base, through ``ovbatch quantize --plan`` (embedded mode):
per recipe the quantization time, peak RSS, size before/after, the gate's WER before/after on short
clips and long files, and the evaluation set's transcription time for the parent and the quantized
model (measured side by side in the same job, same audio).

    python -m benchmarks.quantize_bench [--home .cache/bench-quantize]

Calibration: 12 espeak-ng clips + one 2.7-minute recording; evaluation: the other 24 clips and two
long recordings in other voices (references for all). Prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.speech import SENTENCES, make_clips, make_long_file, reference_set

RECIPES = [
    ("int8-hybrid", {}),
    ("int8-hybrid", {"smooth_quant_alpha": 0.7}),  # a sweep: reuses the captured calibration inputs
    ("int8-weights", {}),
    ("int4-weights", {}),
    ("int8-full", {}),
]


def prepare(home: Path) -> dict[str, str]:
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.samples import fetch_whisper_base
    from ovbatch.storage.file import FileStore

    home.mkdir(parents=True, exist_ok=True)
    env = {"OVBATCH_STORAGE_URL": (home / "storage").as_uri(), "OVBATCH_KEYRING": str(home / "keyring.json")}
    if not (home / "keyring.json").exists():
        ring = Keyring(home / "keyring.json")
        ring.add_new_key()
        ring.save()
        ct2 = fetch_whisper_base(Path(".cache/models/whisper-base-ct2"))
        Registry(FileStore(home / "storage"), ring).import_folder(ct2, "whisper-base")
    refs = make_clips(home / "clips")
    names = sorted(refs)
    for folder, chosen in (("calib", names[:12]), ("eval", names[12:])):
        reference_set(home / folder, home / "clips", refs, chosen)
    for folder, name, sentences, voice in (
        ("calib", "long-calib.wav", SENTENCES, "en-us"),
        ("eval", "long-gb.wav", SENTENCES[::-1], "en-gb"),
        ("eval", "long-m3.wav", SENTENCES[10:] + SENTENCES[:10], "en+m3"),
    ):
        path, text = make_long_file(home / folder, name, sentences, voice)
        path.with_suffix(".txt").write_text(text)
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=Path(".cache/bench-quantize").resolve())
    args = parser.parse_args()
    env = {**os.environ, **prepare(args.home), "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    out = args.home / f"reports-{int(time.time())}"
    jobs = [
        {
            "models": ["whisper-base@1"],
            "recipes": [recipe],
            "calibration": [str(args.home / "calib")],
            "eval": [str(args.home / "eval")],
            "language": "en",
            "target": "whisper-base-bench",
            "params": params,
        }
        for recipe, params in RECIPES
    ]
    plan = args.home / "plan.json"
    plan.write_text(json.dumps({"jobs": jobs}, indent=1))
    ovbatch = str(Path(sys.executable).with_name("ovbatch"))
    t0 = time.perf_counter()
    done = subprocess.run(
        [ovbatch, "quantize", "--plan", str(plan), "--out", str(out), "--local"],
        env=env,
        text=True,
        capture_output=True,
    )
    print(done.stdout[-2000:], done.stderr[-1500:], file=sys.stderr)
    print(f"plan of {len(jobs)} jobs took {time.perf_counter() - t0:.0f} s\n")
    rows = []
    for path in sorted((out / "whisper-base@1").glob("*.json")):
        r = json.loads(path.read_text())
        m, s = r["metrics"], r["seconds"]
        speed = m["speed"]["parent_s"] / max(m["speed"]["quantized_s"], 1e-9)
        rows.append(
            f"| {path.stem} | {'pass' if r['gate']['passed'] else 'FAIL'} | "
            f"{m['short']['before']:.2f} -> {m['short']['after']:.2f} | {m['long']['before']:.2f} -> "
            f"{m['long']['after']:.2f} | {m['speed']['parent_s']:.1f} / {m['speed']['quantized_s']:.1f} s "
            f"({speed:.2f}x) | {r['size_bytes']['before'] / 2**20:.0f} -> {r['size_bytes']['after'] / 2**20:.0f} MiB | "
            f"{s.get('calibrate', 0):.0f} / {s['quantize']:.0f} / {s['total']:.0f} s | {r['peak_rss_mib']:.0f} MiB |"
        )
    print(
        "| recipe | gate (max drop 0.5) | short WER % before -> after | long WER % before -> after | "
        "eval set transcribed, parent / quantized | size | calibrate / quantize / total | peak RSS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
