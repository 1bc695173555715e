"""Where bf16 loses Whisper accuracy: WER of the real Whisper base on the 240-clip accuracy set with
each part (encoder, decoder, layer norms, logits, KV cache) compiled in bf16 or f32, bf16 with f32
for the windows it doubts (``recheck``, the default for float versions on BF16 CPUs), and of its
int8-hybrid version, one process, one run.

    .venv/bin/python -m benchmarks.precision_bench [--home .cache/bench-precision] [--every 1] [--speed-every 3]
        [--configs "all bf16,recheck,all f32"] [--packed]

Without ``--packed`` every clip is decoded alone (a window per clip, as first measured); with it,
short clips share windows as a worker decodes them (``EngineConfig.pack_max_s``'s default).

Per-node f32 goes through the IR's ``DisablePrecisionConversion`` rt_info (what the 2026.4 CPU plugin
reads; see tasks/transcribe/precision.py). The int8-hybrid version is made once by ``ovbatch quantize``
(calibrated on every fourth clip of the set) and kept in the home's registry. Prints JSON lines and a
Markdown table; the speed rows time every ``--speed-every``-th clip for each model and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speech import error_units, make_accuracy_set, paired_wer_difference, reference_set

REPO = Path(__file__).resolve().parents[1]
OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
ATTR = '<attribute name="DisablePrecisionConversion" version="0" value="dynamic:dynamic" />'
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
Mark = Callable[[str, str], bool] | None  # (layer type, layer name) -> keep it in f32


def _logits(kind: str, name: str) -> bool:
    return kind == "MatMul" and "proj_out" in name


def _mvn(kind: str, name: str) -> bool:
    return kind == "MVN"


# name: (encoder config, decoder config, encoder marks, decoder marks)
CONFIGS: dict[str, tuple[dict[str, str], dict[str, str], Mark, Mark]] = {
    "all bf16": ({}, {}, None, None),
    "encoder f32, decoder bf16": (F32, {}, None, None),
    "encoder bf16, decoder f32": ({}, F32, None, None),
    "encoder layer norms f32": ({}, {}, _mvn, None),
    "decoder logits f32": ({}, {}, None, _logits),
    "decoder KV cache f32": ({}, {"KV_CACHE_PRECISION": "f32"}, None, None),
    "all f32": (F32, F32, None, None),
}
RECHECK = "recheck"  # plugin default (bf16), the doubted windows again in f32 (tasks/transcribe/precision.py)
CONFIGS[RECHECK] = ({}, {}, None, None)


def marked_model(core: Any, version: Any, role: str, mark: Mark) -> Any:
    if mark is None:
        return version.read_model(core, role)

    def sub(m: re.Match[str]) -> str:
        layer = m.group(0)
        if not mark(m.group(2), m.group(1)):
            return layer
        if "<rt_info>" in layer:
            return layer.replace("<rt_info>", "<rt_info>" + ATTR, 1)
        return layer.replace("<input>", "<rt_info>" + ATTR + "</rt_info><input>", 1)

    xml = re.sub(r'<layer id="\d+" name="([^"]*)" type="(\w+)".*?</layer>', sub, version.text(role), flags=re.S)
    return core.read_model(xml, version.weights_tensor(role))


def transcribe(
    version: Any,
    core: Any,
    config: tuple[Any, ...],
    clips: Path,
    names: list[str],
    recheck: bool = False,
    packed: bool = False,
) -> tuple[list[str], float, int]:
    """Texts, seconds, and windows decoded again in f32 (``recheck``)."""
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, EngineConfig, WhisperEngine
    from ovbatch.tasks.transcribe.precision import compile_careful
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    enc_cfg, dec_cfg, enc_mark, dec_mark = config
    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    compiled = {
        ENCODER: core.compile_model(marked_model(core, version, ENCODER, enc_mark), "CPU", {**threads, **enc_cfg}),
        DECODER: core.compile_model(marked_model(core, version, DECODER, dec_mark), "CPU", {**threads, **dec_cfg}),
        DETOKENIZER: core.compile_model(version.read_model(core, DETOKENIZER), "CPU"),
    }
    careful = compile_careful(version, core, "CPU", {**threads, **F32}) if recheck else None
    pack = EngineConfig().pack_max_s if packed else 0.0
    engine = WhisperEngine.from_loaded(version, compiled, EngineConfig(pack_max_s=pack), careful)
    options = TranscribeOptions(language="en")
    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(names), 16):
        batch = [audio.load(clips / n, n) for n in names[i : i + 16]]
        texts += [t.text for t in engine.transcribe_many(batch, options)]
    return texts, time.perf_counter() - t0, engine.stats.rechecked


def whisper_registry(home: Path) -> Any:
    """The encrypted ``file://`` registry under ``home``, holding the real Whisper base as
    ``whisper-base@1`` (made, with its keyring, on the first call)."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry.registry import Registry
    from ovbatch.samples import fetch_whisper_base
    from ovbatch.storage.file import FileStore

    if not (home / "keyring.json").exists():
        home.mkdir(parents=True, exist_ok=True)
        ring = Keyring(home / "keyring.json")
        ring.add_new_key()
        ring.save()
        ct2 = fetch_whisper_base(REPO / ".cache" / "models" / "whisper-base-ct2")
        Registry(FileStore(home / "storage"), ring).import_folder(ct2, "whisper-base")
    return Registry(FileStore(home / "storage"), Keyring.load(home / "keyring.json"))


def prepare(home: Path, clips: Path, refs: dict[str, str]) -> dict[str, str]:
    env = {
        **os.environ,
        "OVBATCH_STORAGE_URL": (home / "storage").as_uri(),
        "OVBATCH_KEYRING": str(home / "keyring.json"),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    registry = whisper_registry(home)
    if registry.versions("whisper-base") == ["1"]:
        names = sorted(refs)
        for sub, chosen in (("calib", names[0::4]), ("eval", names[2::8])):
            shutil.rmtree(home / sub, ignore_errors=True)
            reference_set(home / sub, clips, refs, chosen)
        subprocess.run(
            [OVBATCH, "quantize", "whisper-base@1", "--recipe", "int8-hybrid", "--language", "en", "--local"]
            + ["--calibration", str(home / "calib"), "--eval", str(home / "eval")],
            env=env,
            check=True,
        )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-precision")
    parser.add_argument("--every", type=int, default=1, help="use every N-th clip of the set")
    parser.add_argument("--speed-every", type=int, default=3)
    parser.add_argument("--packed", action="store_true", help="short clips share windows (a worker's default)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="float rows to run (comma-separated names)")
    args = parser.parse_args()
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    clips = REPO / ".cache" / "speech-accuracy"
    refs = make_accuracy_set(clips)
    prepare(args.home.resolve(), clips, refs)
    registry = Registry(FileStore(args.home / "storage"), Keyring.load(args.home / "keyring.json"))
    core = make_core()
    names = sorted(refs)[:: args.every]
    references = [refs[n] for n in names]
    float_v = decrypt_version(registry, ModelRef("whisper-base", "1"))
    int8_v = decrypt_version(registry, ModelRef("whisper-base", "2"))
    chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONFIGS]
    if unknown or "all f32" not in chosen:
        parser.error(f"--configs: unknown {unknown} (known: {', '.join(CONFIGS)}); 'all f32' is the baseline")
    runs = [("float", float_v, name, CONFIGS[name]) for name in chosen]
    runs += [
        ("int8-hybrid", int8_v, "all bf16", CONFIGS["all bf16"]),
        ("int8-hybrid", int8_v, "all f32", CONFIGS["all f32"]),
    ]
    units: dict[str, np.ndarray] = {}
    rows = []
    for model, version, name, cfg in runs:
        texts, _, rechecked = transcribe(version, core, cfg, clips, names, name == RECHECK, args.packed)
        u = error_units(references, texts)
        key = f"{model}: {name}"
        units[key] = u
        rows.append({"model": model, "compiled": name, "errors": int(u[:, 1].sum()), "words": int(u[:, 0].sum())})
        if name == RECHECK:
            rows[-1]["rechecked_windows"] = rechecked
        print(json.dumps(rows[-1]), flush=True)
    f32 = units["float: all f32"]
    for row in rows:
        u = units[f"{row['model']}: {row['compiled']}"]
        d = u[:, 1] - f32[:, 1]
        row["vs_f32"] = paired_wer_difference(u, f32)
        row["worse_better"] = [int((d > 0).sum()), int((d < 0).sum())]
    speed_names = sorted(refs)[:: args.speed_every]
    speed = {}
    timed = [("float", float_v, n) for n in ("all bf16", RECHECK, "all f32") if n in chosen]
    timed += [("int8-hybrid", int8_v, "all bf16"), ("int8-hybrid", int8_v, "all f32")]
    for model, version, name in timed:
        _, wall, rechecked = transcribe(version, core, CONFIGS[name], clips, speed_names, name == RECHECK, args.packed)
        speed[f"{model}: {name}"] = round(wall, 1)
        line = {"speed": f"{model}: {name}", "clips": len(speed_names), "wall_s": round(wall, 1)}
        print(json.dumps(line | ({"rechecked_windows": rechecked} if name == RECHECK else {})), flush=True)
    print("\n| model | compiled | errors | WER % | vs all-f32 float, points [95 % CI] | clips worse / better |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        v = row["vs_f32"]
        print(
            f"| {row['model']} | {row['compiled']} | {row['errors']} | {100 * row['errors'] / row['words']:.2f} | "
            f"{v['diff_pts']:+.2f} [{v['ci95_pts'][0]:+.2f}, {v['ci95_pts'][1]:+.2f}] | "
            f"{row['worse_better'][0]} / {row['worse_better'][1]} |"
        )
    print(f"\nspeed on {len(speed_names)} clips (s): {json.dumps(speed)}")


if __name__ == "__main__":
    main()
