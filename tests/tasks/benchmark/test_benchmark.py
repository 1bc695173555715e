"""Benchmark jobs on real OpenVINO IRs from an encrypted registry: benchmark_app's figures and files,
sweeps, compare, plots, the shape and device checks, and runs that have their worker to themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import BadInputError, WorkerStopping
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from ovbatch.tasks.benchmark import measure, shapes, submit
from ovbatch.workers.gate import RunGate
from tests.conftest import build_tiny_ir
from tests.tasks.quantize.test_quantize import ovbatch

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
RESULT_KEYS = ("throughput_fps", "latency_ms", "compile_ms", "first_inference_ms", "iterations", "duration_s")


def build_dynamic_ir(folder: Path) -> Path:
    """An IR with a dynamic batch and a dynamic sequence input, as exported models often are."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(ov.PartialShape([-1, 64]), np.float32, name="features")
    ids = ops.parameter(ov.PartialShape([1, -1]), np.int64, name="input_ids")
    w = ops.constant(np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32))
    y = ops.relu(ops.matmul(x, w, False, False))
    z = ops.reduce_sum(ops.convert(ids, "f32"), [1], True)
    model = ov.Model([y, z], [x, ids], "dyn")
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, folder / "openvino_model.xml", compress_to_fp16=False)
    return folder


@pytest.fixture
def home(tmp_path: Path) -> dict[str, object]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(tmp_path / "storage"), ring)
    registry.import_folder(build_tiny_ir(tmp_path / "src-tiny", seed=2, hidden=512), "tiny")
    registry.import_folder(build_dynamic_ir(tmp_path / "src-dyn"), "dyn")
    two = tmp_path / "src-two"
    build_tiny_ir(two, seed=4, hidden=128)
    (two / "openvino_model.xml").rename(two / "encoder_model.xml")
    (two / "openvino_model.bin").rename(two / "encoder_model.bin")
    build_tiny_ir(two, seed=5, hidden=64)
    (two / "openvino_model.xml").rename(two / "decoder_model.xml")
    (two / "openvino_model.bin").rename(two / "decoder_model.bin")
    registry.import_folder(two, "two")
    env = {
        **os.environ,
        "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "OVBATCH_KEYRING": str(ring.path),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",  # unreachable: --local is what runs
    }
    return {"registry": registry, "env": env, "root": tmp_path}


def runs_in(out: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("batch-")]


# --- shapes, sweeps, percentiles ------------------------------------------------------------------------


def test_shapes_take_benchmark_app_syntax_and_refuse_nonsense() -> None:
    assert shapes.parse("[1,3,224,224]", "--shape") == {"": ["1", "3", "224", "224"]}
    assert shapes.parse("features[2,64], input_ids[1,?]", "--shape") == {
        "features": ["2", "64"],
        "input_ids": ["1", "?"],
    }
    assert shapes.parse("x[1..8,-1]", "--shape") == {"x": ["1..8", "-1"]}
    for bad in ("1,3,224", "x[1,a]", "x[1],x[2]", "x[1]y[2]"):
        with pytest.raises(BadInputError, match="--shape"):
            shapes.parse(bad, "--shape")
    io = {"inputs": [{"name": "features", "shape": ["?", "64"]}, {"name": "input_ids", "shape": ["1", "?"]}]}
    assert shapes.dynamic_inputs(io, None, None, None) == ["features", "input_ids"]
    assert shapes.dynamic_inputs(io, None, "input_ids[1,7]", 4) == []
    assert shapes.example(io, ["features", "input_ids"]) == "features[1,64],input_ids[1,1]"


def test_a_sweep_is_the_cartesian_matrix_of_its_terms() -> None:
    base = submit.Request(model="tiny")
    runs = submit.expand(base, "device=CPU,GPU hint=latency,throughput precision=bf16,f32 nireq=1,2,4")
    assert len(runs) == 2 * 2 * 2 * 3
    assert {(r.device, r.hint, r.infer_precision, r.nireq) for r in runs} == {
        (d, h, p, n)
        for d in ("CPU", "GPU")
        for h in ("latency", "throughput")
        for p in ("bf16", "f32")
        for n in (1, 2, 4)
    }
    assert runs[0].sweep == {"device": "CPU", "hint": "latency", "precision": "bf16", "nireq": "1"}
    for bad, reason in (("colour=red", "KEY=V1,V2"), ("nireq=two", "not a int"), ("nireq=1 nireq=2", "twice")):
        with pytest.raises(BadInputError, match=reason):
            submit.expand(base, bad)


def test_configurations_no_live_worker_can_take_are_reported_not_queued() -> None:
    workers = [{"device": "CPU", "capabilities": ["FP32", "INT8"]}, {"device": "CPU"}]
    submit.check_workers(submit.Request(model="m", infer_precision="f32"), workers)
    submit.check_workers(submit.Request(model="m", device="GPU"), None)  # no Redis: the run is local
    with pytest.raises(BadInputError, match=r"no live worker serves device GPU \(live: CPU\); start one with"):
        submit.check_workers(submit.Request(model="m", device="GPU"), workers)
    with pytest.raises(BadInputError, match=r"no live CPU worker computes in bf16 \(their capabilities: FP32, INT8\)"):
        submit.check_workers(submit.Request(model="m", infer_precision="bf16"), workers)


def test_percentiles_are_taken_as_benchmark_app_takes_them() -> None:
    from openvino.tools.benchmark.benchmark import percentile as theirs

    values = sorted(np.random.default_rng(0).exponential(3.0, 997).tolist())
    for p in (1, 50, 90, 99, 100):
        assert measure.percentile(values, p) == theirs(values, p), p


def test_the_registry_records_each_models_inputs_at_import(home: dict[str, object]) -> None:
    registry: Registry = home["registry"]  # type: ignore[assignment]
    from ovbatch.registry.refs import ModelRef

    io = registry.manifest(ModelRef("dyn", "1"))["io"]["openvino_model.xml"]
    assert io["inputs"] == [
        {"name": "features", "shape": ["?", "64"], "type": "f32"},
        {"name": "input_ids", "shape": ["1", "?"], "type": "i64"},
    ]


# --- the gate: a benchmark has its worker to itself ---------------------------------------------------------


def test_an_exclusive_run_waits_for_running_jobs_and_holds_new_ones_back() -> None:
    gate, events = RunGate(), []

    def job(name: str, exclusive: bool, hold_s: float) -> None:
        with gate.hold(exclusive):
            events.append(f"{name} start")
            time.sleep(hold_s)
            events.append(f"{name} end")

    first = threading.Thread(target=job, args=("transcribe-1", False, 0.4))
    first.start()
    time.sleep(0.1)
    bench = threading.Thread(target=job, args=("benchmark", True, 0.4))
    bench.start()
    time.sleep(0.1)
    later = threading.Thread(target=job, args=("transcribe-2", False, 0.1))
    later.start()
    for t in (first, bench, later):
        t.join(5)
    assert events == [
        "transcribe-1 start",
        "transcribe-1 end",
        "benchmark start",
        "benchmark end",
        "transcribe-2 start",
        "transcribe-2 end",
    ], events


def test_a_job_waiting_at_the_gate_goes_back_to_its_queue_on_shutdown() -> None:
    gate, stopping = RunGate(), threading.Event()
    errors: list[BaseException] = []

    def waiting() -> None:
        try:
            with gate.hold(True, stopping.is_set, "bench run"):
                pass
        except WorkerStopping as exc:
            errors.append(exc)

    with gate.hold(False):
        t = threading.Thread(target=waiting)
        t.start()
        stopping.set()
        t.join(5)
    assert errors and "goes back to its queue" in str(errors[0])


# --- runs end to end -------------------------------------------------------------------------------------


def test_a_run_writes_benchmark_apps_figures_json_and_csv(home: dict[str, object]) -> None:
    out = Path(str(home["root"])) / "out"
    ovbatch(
        home, "benchmark", "tiny", "--out", str(out), "--time", "1", "--counters", "--percentiles", "50,95", "--local"
    )
    (run,) = runs_in(out)
    for key in RESULT_KEYS:
        assert key in run, f"run JSON lacks {key}: {sorted(run)}"
    latency = run["latency_ms"]
    assert set(latency) >= {"median", "avg", "min", "max", "p50", "p95"}, latency
    assert latency["min"] <= latency["median"] <= latency["p95"] <= latency["max"], latency
    assert run["iterations"] > 10 and 0.9 < run["duration_s"] < 5, run
    expected_fps = run["iterations"] / run["duration_s"]
    assert abs(run["throughput_fps"] - expected_fps) < 1e-6 * expected_fps
    assert run["results"]["compile_peak_rss_mib"] >= run["results"]["rss_before_compile_mib"] > 50
    # the plugin's own default precision: f32 on AVX2 machines, bf16 where the CPU has AVX-512 BF16 or AMX
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert run["compiled"]["NUM_STREAMS"] >= 1 and run["compiled"]["INFERENCE_PRECISION_HINT"] == default, run[
        "compiled"
    ]
    assert run["machine"]["openvino"] and run["machine"]["cpu_model"] and "load_before" in run["machine"]
    assert run["counters"] and run["counters"][0]["real_time_ms"] >= run["counters"][1]["real_time_ms"]
    # benchmark_app's -json_stats sections and key names, and its ;-separated CSV beside the JSON
    results = run["execution_results"]
    for key in ("compile model time (ms)", "first inference time (ms)", "latency (ms)", "throughput"):
        assert key in results, sorted(results)
    assert float(results["throughput"]) == pytest.approx(run["throughput_fps"], abs=0.01)
    csv_text = (out / str(run["run_id"]) / "benchmark_report.csv").read_text()
    sections = [line for line in csv_text.splitlines() if line and ";" not in line]
    assert sections == ["Command line parameters", "Configuration setup", "Execution results"], sections
    assert f"throughput;{results['throughput']}" in csv_text
    assert "layerName;execStatus;layerType;execType;realTime (ms);cpuTime (ms)" in csv_text


def test_a_sweep_runs_its_matrix_as_one_batch_with_table_plots_and_compare(home: dict[str, object]) -> None:
    out = Path(str(home["root"])) / "out"
    done = ovbatch(
        home,
        "benchmark",
        "tiny",
        "--out",
        str(out),
        "--niter",
        "200",
        "--sweep",
        "hint=latency,throughput nireq=1,2",
        "--repeat",
        "2",
        "--local",
    )
    runs = runs_in(out)
    assert len(runs) == 8, done.stdout
    assert {(r["config"]["hint"], r["config"]["nireq"]) for r in runs} == {
        (h, n) for h in ("latency", "throughput") for n in (1, 2)
    }
    assert all(r["iterations"] >= 200 for r in runs)
    (batch_dir,) = [p for p in out.iterdir() if p.is_dir() and (p / "index.html").is_file()]
    table = (batch_dir / "runs.csv").read_text().splitlines()
    assert len(table) == 9 and table[0].startswith("run_id,status,model,part,device,hint"), table[:2]
    for png in ("throughput.png", "latency.png", "latency_distribution.png"):
        assert (batch_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    page = (batch_dir / "index.html").read_text()
    assert "hint=latency api=sync nireq=1" in page and 'src="throughput.png"' in page  # labels: what varied
    compared = ovbatch(home, "benchmark", "compare", str(out), "--out", str(out / "cmp"))
    lines = [line for line in compared.stdout.splitlines() if "nireq=" in line]
    assert len(lines) == 4 and "1.00x" in lines[0], compared.stdout
    runs_column = [line[60:].split()[0] for line in lines]
    assert runs_column == ["2"] * 4, f"each configuration ran twice; the spread is over its 2 runs: {compared.stdout}"
    assert (out / "cmp" / "index.html").is_file()


def test_bad_configurations_fail_before_anything_runs_with_the_reason(home: dict[str, object]) -> None:
    out = str(Path(str(home["root"])) / "out")
    cases = [
        (("nosuch", "--time", "1"), "nosuch"),
        (("tiny", "--time", "0"), "--time 0: give a positive number"),
        (("tiny", "--device", "CPUU", "--time", "1"), "device 'CPUU'"),
        (("two", "--time", "1"), "holds 2 models: choose one with --part (decoder_model.xml, encoder_model.xml)"),
        (("two", "--part", "coder", "--time", "1"), "names several"),
        (
            ("dyn", "--time", "1"),
            "features [?,64], input_ids [1,?] are dynamic; give their shape, "
            'e.g. --shape "features[1,64],input_ids[1,1]"',
        ),
        (("dyn", "--data-shape", "nosuch[1,2]", "--time", "1"), "the model has no input nosuch"),
        (("tiny", "--shape", "[1,3"), "--shape '[1,3'"),
    ]
    for args, reason in cases:
        done = ovbatch(home, "benchmark", *args, "--out", out, "--local", ok=False)
        assert done.returncode != 0, f"{args} was accepted"
        assert reason in done.stderr + done.stdout, f"{args}: {done.stderr}{done.stdout}"
        assert "Traceback" not in done.stderr, done.stderr
    assert not runs_in(Path(out)), "no configuration above may have run"


def test_dynamic_inputs_run_with_data_shapes_and_fixed_ones_with_shape(home: dict[str, object]) -> None:
    out = Path(str(home["root"])) / "out"
    ovbatch(home, "benchmark", "two", "--part", "encoder", "--out", str(out), "--niter", "50", "--local")
    ovbatch(
        home,
        "benchmark",
        "dyn",
        "--data-shape",
        "features[4,64],input_ids[1,9]",
        "--out",
        str(out),
        "--niter",
        "50",
        "--local",
    )
    ovbatch(
        home,
        "benchmark",
        "dyn",
        "--shape",
        "features[2,64],input_ids[1,5]",
        "--out",
        str(out),
        "--niter",
        "50",
        "--local",
    )
    runs = {(r["model"], r["config"]["data_shape"] or r["config"]["shape"]): r for r in runs_in(out)}
    assert runs[("two@1", None)]["part"] == "encoder_model.xml"
    assert runs[("dyn@1", "features[4,64],input_ids[1,9]")]["inputs"]["features"]["shape"] == [4, 64]
    assert runs[("dyn@1", "features[2,64],input_ids[1,5]")]["inputs"]["input_ids"]["shape"] == [1, 5]


def test_a_precision_the_device_does_not_compute_in_fails_as_a_reported_run(home: dict[str, object]) -> None:
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    missing = [p for p, cap in measure.PRECISIONS.items() if cap not in capabilities]
    if not missing:
        pytest.skip(f"this CPU computes in every precision ({capabilities})")
    out = Path(str(home["root"])) / "out"
    done = ovbatch(
        home,
        "benchmark",
        "tiny",
        "--infer-precision",
        missing[0],
        "--out",
        str(out),
        "--time",
        "1",
        "--local",
        ok=False,
    )
    assert f"does not compute in {missing[0]}" in done.stdout + done.stderr, done.stdout + done.stderr
    (run,) = runs_in(out)
    assert run["status"] == "failed" and "capabilities" in run["error"], run


# --- trust: the same figures as benchmark_app --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.serial  # a second test process on the same 2 cores slowed one tool's best round by 19 %
def test_figures_match_benchmark_apps_on_the_same_model(home: dict[str, object], tmp_path: Path) -> None:
    """benchmark_app (the openvino package's) and ovbatch, alternately on the same model, hint and
    time: the best of five rounds each, throughput and median latency, within 10 % (or within half
    the machine's own round-to-round spread, where that is wider: see the bound below)."""
    # a 64x4096 input through a 4096x4096 layer: about 6 ms a call here. At [1, 1024] a call took
    # 0.03 ms on a BF16 CPU, below the 0.01 ms rounding of benchmark_app's JSON figures, and at
    # [1, 4096] (1 ms) the two tools' own per-call overhead differed by 10-20 %
    model = build_tiny_ir(tmp_path / "plain", seed=9, hidden=4096)
    registry: Registry = home["registry"]  # type: ignore[assignment]
    registry.import_folder(model, "parity")
    app = str(Path(sys.executable).with_name("benchmark_app"))
    theirs, ours = [], []
    for i in range(5):
        report = tmp_path / f"app{i}"
        report.mkdir()
        subprocess.run(
            [
                app,
                "-m",
                str(model / "openvino_model.xml"),
                "-d",
                "CPU",
                "-hint",
                "latency",
                "-t",
                "3",
                "-shape",
                "x[64,4096]",
                "-report_type",
                "no_counters",
                "-report_folder",
                str(report),
                "-json_stats",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        stats = json.loads((report / "benchmark_report.json").read_text())["execution_results"]
        theirs.append((float(stats["throughput"]), float(stats["latency (ms)"])))
        out = tmp_path / f"ours{i}"
        ovbatch(
            home, "benchmark", "parity", "--hint", "latency", "--time", "3", "--shape", "x[64,4096]",
            "--out", str(out), "--local",
        )  # fmt: skip
        (run,) = runs_in(out)
        ours.append((run["throughput_fps"], run["latency_ms"]["median"]))
    # each tool's best round (noise on a shared machine only slows a round: a CI run saw benchmark_app
    # rounds of 35.9 to 54.1 fps while ovbatch's stayed within 12 %, and the medians then differed by
    # 12 % though the best rounds agreed within 1 %); the bound is 10 %, or half the round-to-round
    # spread of the steadier tool where the machine itself moves more than that (an Intel VM with AMX
    # moved 1.4x between 3 s rounds of either tool: a 10 % comparison cannot be made there, a 20 % one can)
    fps_ratio = max(f for f, _ in ours) / max(f for f, _ in theirs)
    lat_ratio = min(m for _, m in ours) / min(m for _, m in theirs)
    spread = min(max(xs) / min(xs) for xs in ([f for f, _ in ours], [f for f, _ in theirs]))
    bound = max(0.10, (spread - 1) / 2)
    said = f"(bound {bound:.2f}: round-to-round spread {spread:.2f}x; ours {ours}, theirs {theirs})"
    assert abs(fps_ratio - 1) <= bound, f"throughput (best rounds) ovbatch/benchmark_app = {fps_ratio:.3f} {said}"
    assert abs(lat_ratio - 1) <= bound, f"median latency (best rounds) ovbatch/benchmark_app = {lat_ratio:.3f} {said}"


@pytest.mark.serial  # another test process's CPU would count as "others" in the quiet measurement
def test_other_cpu_counts_other_processes_on_the_runs_cores_not_the_run_itself() -> None:
    """ "Otherwise busy" comes from what other processes did on the run's cores during the run (the
    load average lags and counts the worker's own earlier work): a competing process pinned to the
    same cores is seen; the run's own CPU time is not counted as another's."""
    from ovbatch.tasks.benchmark.machine import OtherCpu

    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    with OtherCpu() as own:
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:  # this process keeps one core busy
            pass
    hog = subprocess.Popen(["taskset", "-c", cores, sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with OtherCpu() as shared:
            time.sleep(1.5)
    finally:
        hog.kill()
        hog.wait()
    assert shared.others_cores > 0.6 and shared.report()["busy"], shared.report()
    assert own.others_cores < shared.others_cores - 0.3, (own.report(), shared.report())
    assert set(own.report()) == {"other_cpu_cores", "steal_cpu_cores", "busy"}
