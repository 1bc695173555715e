"""Where bf16 loses words, per window: each clip's greedy average log-probability in bf16, and its
word errors in bf16 and f32, over the 240-clip accuracy set (one window per clip); then, for a range
of thresholds, how many windows ``recheck`` would redo and the errors left against f32, on the whole
set and on each rendition half ("a" / "b" clips). In-sample: the threshold is chosen on this set.

    .venv/bin/python -m benchmarks.recheck_probe [--home .cache/bench-precision]      # ~10 min on 2 cores

Uses the float whisper-base@1 of ``precision_bench``'s registry (made there on its first run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.precision_bench import REPO, whisper_registry
from benchmarks.speech import error_units, make_accuracy_set

THRESHOLDS = (-1.0, -0.9, -0.85, -0.8, -0.75, -0.7, -0.65, -0.6)


def per_clip(version: Any, core: Any, hint: dict[str, str], clips: Path, names: list[str]) -> list[dict[str, Any]]:
    """Per clip: the lowest greedy average log-probability of its windows, and its text."""
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER, EngineConfig, WhisperEngine
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    cfg = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0)), **hint}
    compiled = {r: core.compile_model(version.read_model(core, r), "CPU", cfg) for r in (ENCODER, DECODER, DETOKENIZER)}
    engine = WhisperEngine.from_loaded(version, compiled, EngineConfig(pack_max_s=0))
    greedy: list[float] = []
    decode = engine.decoder.decode

    def recording(hidden: Any, prompts: Any, temps: Any, rngs: Any, between: Any) -> Any:
        got = decode(hidden, prompts, temps, rngs, between)
        if all(t == 0.0 for t in temps):
            greedy.extend(r.avg_logprob for r in got)
        return got

    engine.decoder.decode = recording  # type: ignore[method-assign]
    rows = []
    for name in names:  # one clip at a time: its windows' log-probabilities are its own
        greedy.clear()
        text = engine.transcribe_many([audio.load(clips / name, name)], TranscribeOptions(language="en"))[0].text
        rows.append({"clip": name, "logprob": min(greedy) if greedy else 0.0, "text": text})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=REPO / ".cache" / "bench-precision")
    args = parser.parse_args()
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef

    clips = REPO / ".cache" / "speech-accuracy"
    refs = make_accuracy_set(clips)
    names = sorted(refs)
    version = decrypt_version(whisper_registry(args.home.resolve()), ModelRef("whisper-base", "1"))
    core = make_core()
    bf16 = per_clip(version, core, {}, clips, names)
    f32 = per_clip(version, core, {"INFERENCE_PRECISION_HINT": "f32"}, clips, names)
    references = [refs[n] for n in names]
    eb = error_units(references, [r["text"] for r in bf16])[:, 1]
    ef = error_units(references, [r["text"] for r in f32])[:, 1]
    worse = [(r["clip"], round(r["logprob"], 3), int(b - f)) for r, b, f in zip(bf16, eb, ef, strict=True) if b > f]
    print(json.dumps({"errors_bf16": int(eb.sum()), "errors_f32": int(ef.sum())}))
    print(json.dumps({"median_bf16_logprob": round(statistics.median(r["logprob"] for r in bf16), 3)}))
    print(json.dumps({"clips_bf16_made_worse": sorted(worse, key=lambda w: w[1])}))
    for half in ("all", "a", "b"):
        keep = [i for i, n in enumerate(names) if half == "all" or n[4] == half]
        for t in THRESHOLDS:
            redo = [i for i in keep if bf16[i]["logprob"] < t]
            left = int(sum(eb[i] - ef[i] for i in keep) - sum(eb[i] - ef[i] for i in redo))
            line = {"half": half, "threshold": t, "redone": len(redo), "of": len(keep), "errors_vs_f32": left}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
