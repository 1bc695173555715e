"""ovbatch benchmark against OpenVINO's own benchmark_app, side by side in one run.

For a small model (an MLP, 1024 wide) and the real Whisper base's encoder (input [1,80,3000]), with
the latency and the throughput hint, three tools take turns, ``--rounds`` times each:

* ``benchmark_app`` (the one installed with the openvino package) on the plaintext IR folder;
* ``ovbatch benchmark --local`` (the real CLI, embedded mode) on the encrypted registry version:
  decrypt in memory, read, compile, measure;
* ovbatch's measurement (``tasks/benchmark/measure.py``) on the plaintext IR read from disk, no
  registry: what the decrypt-in-memory path adds to the measured inference (nothing, if equal).

It prints throughput and median latency (the median over rounds, and each tool's ratio to
benchmark_app) as a markdown table for benchmarks/RESULTS.md. Usage::

    python -m benchmarks.benchmark_parity [--time 10] [--rounds 3] [--skip-whisper]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def small_model(folder: Path, hidden: int = 1024) -> Path:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, hidden], np.float32, name="x")
    y = x
    for _ in range(3):
        w = ops.constant((rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32))
        y = ops.relu(ops.matmul(y, w, False, False))
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([y], [x], "mlp"), folder / "openvino_model.xml", compress_to_fp16=False)
    return folder


def benchmark_app(xml: Path, hint: str, time_s: float, shape: str | None, work: Path) -> tuple[float, float]:
    work.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "benchmark_app"), "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", f"{time_s:g}"]
    command += ["-report_type", "no_counters", "-report_folder", str(work), "-json_stats"]
    if shape:
        command += ["-shape", shape]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    stats = json.loads((work / "benchmark_report.json").read_text())["execution_results"]
    return float(stats["throughput"]), float(stats["latency (ms)"])


def ovbatch_cli(
    env: dict[str, str], ref: str, part: str, hint: str, time_s: float, shape: str | None, out: Path
) -> tuple[float, float]:
    command = [str(BIN / "ovbatch"), "benchmark", ref, "--part", part, "--hint", hint, "--time", f"{time_s:g}"]
    command += ["--out", str(out), "--local", *(["--shape", shape] if shape else [])]
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=600)
    (run,) = [json.loads(p.read_text()) for p in out.glob("*.json") if not p.name.startswith("batch-")]
    return float(run["throughput_fps"]), float(run["latency_ms"]["median"])


def plain_measure(xml: Path, hint: str, time_s: float, shape: str | None) -> tuple[float, float]:
    import openvino as ov

    from ovbatch.tasks.benchmark import measure

    core = ov.Core()
    model = core.read_model(str(xml))
    api = "sync" if hint == "latency" else "async"
    cfg = measure.Config(hint=hint, time_s=time_s, shape=shape, api=api)
    result = measure.measure(core, model, cfg, {}, lambda: None, xml.name)
    return float(result.results["throughput_fps"]), float(result.results["latency_ms"]["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-whisper", action="store_true")
    args = parser.parse_args()

    from ovbatch.crypto.keyring import Keyring
    from ovbatch.registry import sources
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore

    root = Path(tempfile.mkdtemp(prefix="ovbatch-parity-"))
    ring = Keyring(root / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(root / "storage"), ring)
    env = {**os.environ, "OVBATCH_STORAGE_URL": (root / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
    env["OVBATCH_BROKER_URL"] = "redis://127.0.0.1:1/0"
    cases: list[tuple[str, Path, str, str, str | None]] = []
    mlp = small_model(root / "mlp")
    registry.import_folder(mlp, "mlp")
    cases.append(("MLP 3x1024 (f32)", mlp / "openvino_model.xml", "mlp@1", "openvino_model.xml", None))
    contexts = []
    if not args.skip_whisper:
        from ovbatch.samples import fetch_whisper_base

        ct2 = fetch_whisper_base(REPO / ".cache" / "models" / "whisper-base-ct2")
        prepared = sources.prepare(ct2, None)  # the exported IR folder (a public model), kept for benchmark_app
        folder = prepared.__enter__().folder
        contexts.append(prepared)
        registry.import_folder(folder, "whisper-base")
        cases.append(
            (
                "Whisper base encoder [1,80,3000]",
                folder / "openvino_encoder_model.xml",
                "whisper-base@1",
                "openvino_encoder_model.xml",
                "[1,80,3000]",
            )
        )
    rows: list[dict[str, Any]] = []
    try:
        for label, xml, ref, part, shape in cases:
            for hint in ("latency", "throughput"):
                got: dict[str, list[tuple[float, float]]] = {"benchmark_app": [], "ovbatch": [], "plain": []}
                for r in range(args.rounds):
                    got["benchmark_app"].append(
                        benchmark_app(xml, hint, args.time, shape, root / f"app-{len(rows)}-{r}")
                    )
                    got["ovbatch"].append(
                        ovbatch_cli(env, ref, part, hint, args.time, shape, root / f"ours-{len(rows)}-{r}")
                    )
                    got["plain"].append(plain_measure(xml, hint, args.time, shape))
                    print(label, hint, r, {k: v[-1] for k, v in got.items()}, flush=True)
                med = {
                    k: (statistics.median(f for f, _ in v), statistics.median(m for _, m in v)) for k, v in got.items()
                }
                rows.append({"model": label, "hint": hint, **{k: med[k] for k in med}, "runs": got})
    finally:
        for ctx in contexts:
            ctx.__exit__(None, None, None)
    print()
    print(f"CPU: {_cpu()}; {args.rounds} rounds of {args.time:g} s per tool, taking turns; medians over rounds")
    print()
    print(
        "| model | hint | benchmark_app fps / median ms | ovbatch (encrypted registry) fps / ms | ratio fps / ms | "
        "ovbatch measure on the plain file fps / ms | ratio fps / ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        (af, am), (of, om), (pf, pm) = row["benchmark_app"], row["ovbatch"], row["plain"]
        print(
            f"| {row['model']} | {row['hint']} | {af:.4g} / {am:.4g} | {of:.4g} / {om:.4g} | "
            f"{of / af:.3f} / {om / am:.3f} | {pf:.4g} / {pm:.4g} | {pf / af:.3f} / {pm / am:.3f} |"
        )


def _cpu() -> str:
    from ovbatch.tasks.benchmark.machine import cpu_model

    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs"


if __name__ == "__main__":
    main()
