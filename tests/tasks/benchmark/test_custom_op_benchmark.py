"""A benchmark run of a registry model that uses a custom operation: its extension library comes out
of the registry with it, is loaded from memory, and the op is measured (it shows in the counters).
GPU custom kernels cannot run from memory: such a configuration is refused at submission."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from ovbatch.tasks.benchmark import submit
from tests.registry import custom_op
from tests.tasks.quantize.test_quantize import ovbatch


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return custom_op.build_extension(tmp_path_factory.mktemp("scale-ext") / "libovbatch_scale.so")


@pytest.fixture
def home(tmp_path: Path, library: Path) -> dict[str, object]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(tmp_path / "storage"), ring)
    registry.import_folder(custom_op.write_ir(tmp_path / "src", hidden=512), "scaled", libraries=[library])
    gpu = custom_op.write_gpu_config(tmp_path / "gpu")
    registry.import_folder(tmp_path / "src", "scaled-gpu", libraries=[library], gpu_config=gpu)
    env = {
        **os.environ,
        "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "OVBATCH_KEYRING": str(ring.path),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",  # unreachable: --local is what runs
    }
    return {"registry": registry, "env": env, "root": tmp_path}


@pytest.mark.slow
def test_a_model_with_a_custom_op_is_benchmarked_with_its_library_from_memory(home: dict[str, object]) -> None:
    out = Path(str(home["root"])) / "out"
    ovbatch(home, "benchmark", "scaled", "--out", str(out), "--time", "1", "--counters", "--local")
    (run,) = [json.loads(p.read_text()) for p in out.glob("*.json") if not p.name.startswith("batch-")]
    assert run["status"] == "done", run
    assert run["extensions"] == ["extensions/libovbatch_scale.so"]
    assert run["iterations"] > 10 and run["throughput_fps"] > 0, run
    # the CPU plugin runs an extension's op through its evaluate(): a "Reference" node in the graph
    # it executes. Its status is the plugin's: an average under 1 us per inference (the counters'
    # unit) reads NOT_RUN with 0 us, which a fast CPU gives this 512-float op after many iterations
    # (seen in CI on a Zen-class EPYC); any other NOT_RUN means the op did not run.
    (scale,) = [c for c in run["counters"] if c.get("name") == "scale"] or [None]
    assert scale is not None and scale["node_type"] == "Reference", run["counters"]
    ran = scale["status"] == "EXECUTED" or (scale["status"] == "NOT_RUN" and scale["real_time_ms"] == 0.0)
    assert ran and scale["exec_type"].startswith("ref"), f"the custom op did not run: {scale}"


def test_a_gpu_run_of_a_model_with_gpu_kernels_is_refused_before_queueing(home: dict[str, object]) -> None:
    """A sweep over CPU and GPU (a fleet with GPU workers): the GPU configuration fails alone, named."""
    requests = submit.expand(submit.Request(model="scaled-gpu"), "device=CPU,GPU")
    plan = submit.plan(requests, batch_id="b1", registry=home["registry"], out_url="file:///tmp/out")  # type: ignore[arg-type]
    assert [job.device for job in plan.jobs] == ["CPU"]
    (failure,) = plan.failures
    assert "device=GPU" in failure.display and "carries GPU custom kernels (gpu/scale_kernels.xml)" in failure.error
