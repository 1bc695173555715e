"""Cold load of the real Whisper base: encrypted registry vs the same IR unencrypted from a folder.

    .venv/bin/python benchmarks/cold_load.py [--repeats 5]

Each trial is a fresh process (nothing cached in OpenVINO), alternating the two paths:
  encrypted: fetch + authenticate/decrypt every file into memory, read_model(xml, tensor), compile
             (ovbatch's loader: decryption in a background thread, overlapped with compilation)
  plain:     read_model(path) (OpenVINO mmaps the .bin), compile
Both read from the same local disk with a warm page cache. Times exclude Python imports; "total" is
wall time from creating the ov.Core to the last compiled model; per-phase times are summed per
file and overlap in the encrypted path. Reports medians, and the best run of each path: on a VM that
hands freed memory back to its host, the first touch of fresh memory (the decrypted weights need
~290 MB of it; the plain path maps the page cache instead) costs 0.04-0.6 s from run to run. The
"touch" trial measures just that, in its own fresh process: allocate and touch as many bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
IR = OUT / "whisper-base-ir"
MODELS = ["openvino_encoder_model", "openvino_decoder_model", "openvino_tokenizer", "openvino_detokenizer"]


def setup() -> None:
    """Export Whisper base to IR once, and import that IR into a benchmark registry."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry import sources
    from ovbatch.registry.registry import Registry
    from ovbatch.samples import fetch_whisper_base
    from ovbatch.storage.file import FileStore

    if not IR.exists():
        ct2 = fetch_whisper_base(BENCH.parent / ".cache" / "models" / "whisper-base-ct2")
        with sources.prepare(ct2) as prepared:
            shutil.copytree(prepared.folder, IR)
    ring = Keyring(OUT / "keyring.json")
    if not ring.path.exists():
        ring.add_new_key()
        ring.save()
        Registry(FileStore(OUT / "registry"), ring).import_folder(IR, "whisper-base")


def trial(path: str, prewarm_mib: int) -> dict[str, float]:
    import openvino_tokenizers  # noqa: F401  imported up front by both paths, outside the clock

    from ovbatch.crypto.keyring import Keyring
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import Timings, load_and_compile
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    if prewarm_mib:
        import numpy as np

        scratch = np.empty(prewarm_mib << 20, dtype=np.uint8)
        scratch[::4096] = 1  # fault in fresh memory once, outside the clock, then give it back
        del scratch
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    if path == "touch":
        import numpy as np

        # the VM's price for fresh memory: allocate and touch as many bytes as the decrypted model
        fresh = np.empty(sum(p.stat().st_size for p in IR.iterdir()), dtype=np.uint8)
        fresh[::4096] = 1
        times["total"] = time.perf_counter() - t_start
        return times
    core = make_core()
    if path == "plain":
        models = []
        t0 = time.perf_counter()
        for name in MODELS:
            models.append(core.read_model(IR / f"{name}.xml"))
        times["read_model"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for model in models:
            core.compile_model(model, "CPU")
        times["compile"] = time.perf_counter() - t0
    else:
        registry = Registry(FileStore(OUT / "registry"), Keyring.load(OUT / "keyring.json"))
        timings = Timings()
        load_and_compile(registry, ModelRef("whisper-base"), core, "CPU", timings)
        times.update({k: timings[k] for k in ("fetch", "decrypt", "read_model", "compile")})
    times["total"] = time.perf_counter() - t_start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--prewarm-mib",
        type=int,
        default=0,
        help="touch and free this much memory before each trial's clock starts (both paths)",
    )
    parser.add_argument("--trial", choices=["plain", "encrypted", "touch"])
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial, args.prewarm_mib)))
        return
    setup()
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "encrypted": [], "touch": []}
    for _ in range(args.repeats):
        for path in runs:
            done = subprocess.run(
                [sys.executable, __file__, "--trial", path], capture_output=True, text=True, check=True
            )
            runs[path].append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {path: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for path, rs in runs.items()}
    best = {path: min(r["total"] for r in rs) for path, rs in runs.items() if path != "touch"}
    summary["encrypted_over_plain"] = {
        "median_total_ratio": round(summary["encrypted"]["total"] / summary["plain"]["total"], 3),
        "best_total_ratio": round(best["encrypted"] / best["plain"], 3),
        "best_total_s": {k: round(v, 3) for k, v in best.items()},
        "all_totals_s": {path: [round(r["total"], 3) for r in rs] for path, rs in runs.items()},
        "repeats": args.repeats,
        "prewarm_mib": args.prewarm_mib,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
