"""Which part of the int8-hybrid Whisper loses words, and which recipe keeps them: WER of the real
Whisper base on the 240-clip accuracy set, paired against the float model in f32, one process.

    .venv/bin/python -m benchmarks.int8_recipe_bench [--home .cache/bench-int8] [--split 0-3] [--variants a,b,...]
    .venv/bin/python -m benchmarks.int8_recipe_bench --sqnr "stem;stem,layer0"    # encoder output SQNR only

Calibration: every fourth clip of the set (60 clips, one encoder window each); evaluation: the other
180 (about 1,700 words: one word is 0.06 points, so the 0.5-point gate is about 9 words). Each variant
quantizes the encoder in memory the way ``tasks/quantize/whisper.py`` does (same ``ptq``), compiles
encoder and decoder with the precision named, and transcribes the evaluation clips with ovbatch's
engine (greedy, English, 16 clips at a time). Prints one JSON line per variant and a Markdown table
with the paired bootstrap interval against the f32 float model. ``--sqnr`` instead quantizes the
encoder once per ``keep_float`` choice and prints its output's SQNR against the f32 float encoder on
45 evaluation windows (no decoding: a minute per choice), which ranks where the PTQ hurts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.precision_bench import REPO, whisper_registry
from benchmarks.speech import error_units, make_accuracy_set, paired_wer_difference

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
BF16: dict[str, str] = {}

# name: (encoder: None = float, else ptq options), decoder int8 weights?, (encoder, decoder) configs
Config = dict[str, str] | tuple[dict[str, str], dict[str, str]]
VARIANTS: dict[str, tuple[dict[str, Any] | None, bool, Config]] = {
    "float f32": (None, False, F32),
    "float bf16": (None, False, BF16),
    "hybrid bf16": ({"alpha": 0.5, "keep": "stem"}, True, BF16),
    "hybrid f32": ({"alpha": 0.5, "keep": "stem"}, True, F32),
    "int8 encoder only f32": ({"alpha": 0.5, "keep": "stem"}, False, F32),
    "int8 decoder weights only f32": (None, True, F32),
    "hybrid encoder f32 decoder bf16": ({"alpha": 0.5, "keep": "stem"}, True, (F32, BF16)),
    "hybrid encoder bf16 decoder f32": ({"alpha": 0.5, "keep": "stem"}, True, (BF16, F32)),
    "hybrid layer0 bf16": ({"alpha": 0.5, "keep": "stem,layer0"}, True, BF16),
    "hybrid layer0 f32": ({"alpha": 0.5, "keep": "stem,layer0"}, True, F32),
    "hybrid layer01 bf16": ({"alpha": 0.5, "keep": "stem,layer0,layer1"}, True, BF16),
    "hybrid no-stem f32": ({"alpha": 0.5, "keep": ""}, True, F32),
    "hybrid alpha 0.6 f32": ({"alpha": 0.6, "keep": "stem"}, True, F32),
    "hybrid alpha 0.4 f32": ({"alpha": 0.4, "keep": "stem"}, True, F32),
}


def registry_version(home: Path) -> Any:
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef

    return decrypt_version(whisper_registry(home), ModelRef("whisper-base", "1"))


def engine(core: Any, version: Any, encoder: Any, decoder: Any, config: Config) -> Any:
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, EngineConfig, WhisperEngine

    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    enc_cfg, dec_cfg = config if isinstance(config, tuple) else (config, config)
    compiled = {
        ENCODER: core.compile_model(encoder, "CPU", {**threads, **enc_cfg}),
        DECODER: core.compile_model(decoder, "CPU", {**threads, **dec_cfg}),
        DETOKENIZER: core.compile_model(version.read_model(core, DETOKENIZER), "CPU"),
    }
    # one window per clip: the recipe calibrates that way, and the figures in RESULTS.md were made so
    return WhisperEngine.from_loaded(version, compiled, EngineConfig(pack_max_s=0))


def calibration_windows(core: Any, version: Any, clips: Path, names: list[str]) -> list[Any]:
    """Encoder inputs of ``names`` (one per window), captured from the f32 float model as the
    recipe captures them."""
    from ovbatch.tasks.quantize.whisper import _Recorder
    from ovbatch.tasks.transcribe.engine import DECODER, ENCODER

    eng = engine(core, version, version.read_model(core, ENCODER), version.read_model(core, DECODER), F32)
    rec = _Recorder(eng._encoder, 10_000, split=True)
    eng._encoder = rec
    transcribe(eng, clips, names)
    return rec.samples


def ptq_encoder(version: Any, core: Any, samples: list[Any], alpha: float, keep: str) -> Any:
    """The encoder quantized as the int8-hybrid recipe does it (tasks/quantize/whisper.py)."""
    from ovbatch.tasks.quantize.whisper import ptq
    from ovbatch.tasks.transcribe.engine import ENCODER

    return ptq(version.read_model(core, ENCODER), samples, alpha, keep)


def sqnr_rows(version: Any, core: Any, samples: list[Any], windows: list[Any], keeps: list[str]) -> None:
    """Encoder output SQNR (dB) against the f32 float encoder on ``windows``, per keep_float choice:
    cheap (no decoding), so it ranks which parts of the encoder the PTQ hurts most."""
    from ovbatch.tasks.transcribe.engine import ENCODER

    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    float_enc = version.read_model(core, ENCODER)
    reference = [core.compile_model(float_enc, "CPU", {**threads, **F32})(w)[0].copy() for w in windows]

    def sqnr(model: Any, config: dict[str, str]) -> float:
        compiled = core.compile_model(model, "CPU", {**threads, **config})
        signal = noise = 0.0
        for ref, window in zip(reference, windows, strict=True):
            out = compiled(window)[0]
            signal += float((ref**2).sum())
            noise += float(((ref - out) ** 2).sum())
        return round(10 * float(np.log10(signal / noise)), 2)

    print(json.dumps({"keep_float": "(float encoder)", "sqnr_db_bf16": sqnr(float_enc, BF16)}), flush=True)
    for keep in keeps:
        q = ptq_encoder(version, core, samples, 0.5, keep)
        print(json.dumps({"keep_float": keep, "sqnr_db_f32": sqnr(q, F32), "sqnr_db_bf16": sqnr(q, BF16)}), flush=True)


def transcribe(eng: Any, clips: Path, names: list[str]) -> tuple[list[str], float]:
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(names), 16):
        batch = [audio.load(clips / n, n) for n in names[i : i + 16]]
        texts += [t.text for t in eng.transcribe_many(batch, TranscribeOptions(language="en"))]
    return texts, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-int8")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--sqnr",
        help="instead of WER: encoder output SQNR per keep_float choice, ';'-separated (e.g. 'stem;stem,layer0')",
    )
    parser.add_argument("--split", type=int, default=0, choices=range(4), help="calibrate on clips split, split+4, ...")
    args = parser.parse_args()
    import nncf

    from ovbatch.ov import make_core
    from ovbatch.tasks.transcribe.engine import DECODER, ENCODER

    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    clips = REPO / ".cache" / "speech-accuracy"
    refs = make_accuracy_set(clips)
    version = registry_version(args.home.resolve())
    core = make_core()
    names = sorted(refs)
    calib = names[args.split :: 4]
    evaluation = [n for n in names if n not in set(calib)]
    references = [refs[n] for n in evaluation]

    float_enc, float_dec = version.read_model(core, ENCODER), version.read_model(core, DECODER)

    samples = calibration_windows(core, version, clips, calib)
    print(json.dumps({"calibration_windows": len(samples)}), flush=True)
    if args.sqnr:
        probe = calibration_windows(core, version, clips, evaluation[::4])
        sqnr_rows(version, core, samples, probe, args.sqnr.split(";"))
        return

    int8_dec = None
    encoders: dict[str, Any] = {}
    units: dict[str, np.ndarray] = {}
    float_texts: list[str] = []
    rows = []
    for name in ["float f32", *[c for c in chosen if c != "float f32"]]:
        ptq, int8_weights, config = VARIANTS[name]
        t0 = time.perf_counter()
        encoder = float_enc
        if ptq is not None:
            key = json.dumps(ptq, sort_keys=True)
            if key not in encoders:
                encoders[key] = ptq_encoder(version, core, samples, float(ptq["alpha"]), str(ptq["keep"]))
            encoder = encoders[key]
        decoder = float_dec
        if int8_weights:
            if int8_dec is None:
                int8_dec = nncf.compress_weights(
                    version.read_model(core, DECODER), mode=nncf.CompressWeightsMode.INT8_ASYM
                )
            decoder = int8_dec
        quantize_s = time.perf_counter() - t0
        texts, wall = transcribe(engine(core, version, encoder, decoder, config), clips, evaluation)
        u = error_units(references, texts)
        units[name] = u
        row = {
            "variant": name,
            "errors": int(u[:, 1].sum()),
            "words": int(u[:, 0].sum()),
            "wall_s": round(wall, 1),
            "quantize_s": round(quantize_s, 1),
        }
        if name == "float f32":
            float_texts = texts
        else:
            # how far from the float model's own transcripts (the gate's mode without references)
            moved = error_units(float_texts, texts)
            row["differs_from_f32_pts"] = round(100 * moved[:, 1].sum() / max(moved[:, 0].sum(), 1), 2)
            row["vs_f32"] = paired_wer_difference(u, units["float f32"])
            d = u[:, 1] - units["float f32"][:, 1]
            row["worse_better"] = [int((d > 0).sum()), int((d < 0).sum())]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(evaluation)} evaluation clips, {len(samples)} calibration windows, split {args.split}\n")
    print(
        "| variant | errors | WER % | vs f32 float, points [95 % CI] | clips worse / better "
        "| words changed from f32 float's transcripts, % | eval s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        v = row.get("vs_f32")
        cmp = f"{v['diff_pts']:+.2f} [{v['ci95_pts'][0]:+.2f}, {v['ci95_pts'][1]:+.2f}]" if v else ""
        wb = "{} / {}".format(*row["worse_better"]) if v else ""
        wer = 100 * row["errors"] / row["words"]
        changed = row.get("differs_from_f32_pts", "")
        print(f"| {row['variant']} | {row['errors']} | {wer:.2f} | {cmp} | {wb} | {changed} | {row['wall_s']} |")


if __name__ == "__main__":
    main()
