"""Quantization jobs end to end on real OpenVINO IRs: recipes, the gate, lineage, idempotent plans,
the dedicated queue, and no plaintext on disk (strace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import BadInputError, ConfigError
from ovbatch.registry.loader import decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from ovbatch.tasks.quantize import recipes
from ovbatch.tasks.quantize.submit import read_plan
from tests.conftest import build_tiny_ir
from tests.registry.test_no_plaintext import needles, run_traced, scan, traced_writes

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))


@pytest.fixture
def home(tmp_path: Path) -> dict[str, object]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(tmp_path / "storage"), ring)
    source = build_tiny_ir(tmp_path.parent / f"{tmp_path.name}-src", seed=3)
    registry.import_folder(source, "tiny")
    npz = tmp_path / "npz"
    npz.mkdir()
    rng = np.random.default_rng(7)
    for i in range(8):
        np.savez(npz / f"s{i}.npz", x=rng.standard_normal((1, 256)).astype(np.float32))
    env = {
        **os.environ,
        "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "OVBATCH_KEYRING": str(ring.path),
        "OVBATCH_BROKER_URL": "redis://127.0.0.1:1/0",  # unreachable: --local is what runs
    }
    return {"registry": registry, "env": env, "npz": npz, "root": tmp_path, "source": source}


def ovbatch(home: dict[str, object], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OVBATCH, *args], env=home["env"], capture_output=True, text=True, timeout=600, cwd=str(home["root"])
    )
    if ok:
        assert done.returncode == 0, f"ovbatch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def writes_outside_storage(log: Path, user_home: Path, storage: Path) -> list[str]:
    """A traced quantize job's writes other than to the storage root and to memory files (``memfd``s,
    and the symlinks to them that the serializer writes through)."""
    return [
        w
        for w in traced_writes(log, user_home)
        if str(storage) not in w
        and not w.startswith("memfd_create")
        and not ("symlink" in w and "/proc/" in w)
        and "/ovbatch-ser-" not in w
        and "/proc/self/clear_refs" not in w  # resets the peak-RSS counter (ovbatch/memory.py): not a file
    ]


def report(home: dict[str, object], ref: str, slug: str) -> dict[str, object]:
    path = Path(str(home["root"])) / "storage" / "quantize-reports" / ref / f"{slug}.json"
    assert path.is_file(), f"no report at {path}"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


# --- recipes and plans -------------------------------------------------------------------------------


def test_recipe_options_are_checked_against_their_defaults() -> None:
    recipe = recipes.get("generic", "int4-weights")
    assert recipes.params_for(recipe, {"group_size": "128", "ratio": "0.8"})["group_size"] == 128
    with pytest.raises(BadInputError, match="no option 'alpha'"):
        recipes.params_for(recipe, {"alpha": "1"})
    with pytest.raises(BadInputError, match="group_size='big' must be a int"):
        recipes.params_for(recipe, {"group_size": "big"})
    with pytest.raises(BadInputError, match="no recipe 'int3'.*int8-weights"):
        recipes.get("whisper", "int3")
    with pytest.raises(BadInputError, match="cannot be quantized"):
        recipes.get("lora", "int8-weights")
    assert recipes.slug(recipe, recipes.params_for(recipe, {"group_size": 128})) == "int4-weights-group_size128"


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_plans_expand_models_recipes_and_option_sweeps(tmp_path: Path, suffix: str) -> None:
    entry = {
        "models": ["a@1", "b"],
        "recipes": ["int8-hybrid"],
        "calibration": ["calib/"],
        "params": {"smooth_quant_alpha": [0.5, 0.6]},
        "language": "en",
    }
    path = tmp_path / f"plan{suffix}"
    if suffix == ".toml":
        path.write_text(
            'device = "CPU"\n[[jobs]]\nmodels = ["a@1", "b"]\nrecipes = ["int8-hybrid"]\ncalibration = ["calib/"]\n'
            'language = "en"\nparams = { smooth_quant_alpha = [0.5, 0.6] }\n'
        )
    elif suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump({"jobs": [entry]}))
    else:
        path.write_text(json.dumps({"jobs": [entry]}))
    entries = read_plan(path, "CPU")
    assert [(e.model, e.params["smooth_quant_alpha"]) for e in entries] == [
        ("a@1", 0.5),
        ("a@1", 0.6),
        ("b", 0.5),
        ("b", 0.6),
    ]
    assert entries[0].calibration == [str(tmp_path / "calib/")] and entries[0].language == "en"


def test_a_bad_plan_names_the_entry_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"jobs": [{"models": ["a"], "recipes": ["int8"], "calibrate": ["x"]}]}))
    with pytest.raises(BadInputError, match=r"entry 1: unknown key\(s\) calibrate"):
        read_plan(path, "CPU")
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        read_plan(path, "CPU")


# --- the dedicated queue ------------------------------------------------------------------------------


def test_quantization_has_its_own_queue_served_only_by_workers_that_ask_for_it() -> None:
    from ovbatch.workers.main import worker_queues

    default, dedicated = worker_queues("CPU", None)
    assert default == ["ovbatch.CPU"] and not dedicated, "a default worker must not take quantization jobs"
    assert worker_queues("CPU", ["quantize"]) == (["ovbatch.quantize.CPU"], True)
    with pytest.raises(ConfigError, match="separate worker with --kinds quantize"):
        worker_queues("CPU", ["transcribe", "quantize"])


# --- IR recipes end to end (embedded mode) ------------------------------------------------------------


def test_int8_weights_registers_a_smaller_version_with_its_lineage(home: dict[str, object]) -> None:
    registry = home["registry"]
    assert isinstance(registry, Registry)
    done = ovbatch(home, "quantize", "tiny@1", "--recipe", "int8-weights", "--local")
    assert "1 done" in done.stdout, done.stdout
    manifest = registry.manifest(ModelRef("tiny", "2"))
    lineage = manifest["lineage"]
    assert manifest["precision"] == "int8" and manifest["source"]["quantized_from"] == "tiny@1"
    assert lineage["parent"] == "tiny@1" and lineage["recipe"] == "int8-weights"
    assert lineage["size_bytes"]["after"] < lineage["size_bytes"]["before"] / 2
    assert lineage["gate"]["passed"] and lineage["metrics"]["after"] > 98
    assert {"nncf", "openvino", "peak_rss_mib", "parent_digest"} <= set(lineage)
    # the new version decrypts, compiles and agrees with its parent
    listed = ovbatch(home, "models", "list").stdout
    assert "tiny@2" in listed and "int8" in listed and "from tiny@1" in listed, listed
    shown = ovbatch(home, "models", "show", "tiny@2")
    assert "lineage: tiny@1 -> int8-weights" in shown.stderr, shown.stderr  # stdout stays the manifest's JSON
    assert json.loads(shown.stdout)["lineage"]["recipe"] == "int8-weights"
    ovbatch(home, "models", "verify", "tiny@2")
    # resubmitting the same job skips it: no second version
    again = ovbatch(home, "quantize", "tiny@1", "--recipe", "int8-weights", "--local")
    assert "1 skipped" in again.stdout and registry.versions("tiny") == ["1", "2"], again.stdout


def test_int8_ptq_from_npz_and_a_failed_gate_registers_nothing(home: dict[str, object]) -> None:
    registry = home["registry"]
    assert isinstance(registry, Registry)
    npz = str(home["npz"])
    # random weights and inputs: 97-99 % agreement, machine-dependent (AVX2 without VNNI: 97.2 %)
    ovbatch(
        home,
        "quantize",
        "tiny@1",
        "--recipe",
        "int8",
        "--calibration",
        npz,
        "--eval",
        npz,
        "--max-drop",
        "5",
        "--local",
    )
    passed = report(home, "tiny@1", "int8")
    assert passed["version"] == "tiny@2" and passed["precision"] == "int8", passed
    assert 90 < passed["metrics"]["after"] < 100  # type: ignore[index]
    # the same recipe with a gate it cannot meet: the report says why, nothing is registered
    failed = ovbatch(
        home, "quantize", "tiny@1", "--recipe", "int8", "--calibration", npz, "--max-drop", "0", "--local", ok=False
    )
    assert failed.returncode == 1 and "gate failed: output agreement" in failed.stderr, failed.stderr
    assert registry.versions("tiny") == ["1", "2"]


def test_accuracy_controlled_ptq_meets_the_drop_it_is_given(home: dict[str, object]) -> None:
    npz = str(home["npz"])
    args = ["quantize", "tiny@1", "--recipe", "int8-accuracy", "--calibration", npz, "--eval", npz]
    ovbatch(home, *args, "--max-drop", "0.05", "--local")
    result = report(home, "tiny@1", "int8-accuracy")
    assert result["gate"]["passed"] and result["metrics"]["drop"] <= 0.05, result  # type: ignore[index]


def test_bad_inputs_fail_at_submission_with_the_reason(home: dict[str, object]) -> None:
    bad = Path(str(home["root"])) / "bad.npz"
    bad.write_bytes(b"not a zip")
    wrong = Path(str(home["root"])) / "wrong"
    wrong.mkdir()
    np.savez(wrong / "a.npz", y=np.zeros((1, 256), np.float32))
    cases = [
        (["tiny@9", "--recipe", "int8-weights"], "tiny@9 is not in the registry"),
        (["tiny@1", "--recipe", "int8"], "recipe int8 calibrates on data: give --calibration"),
        (["tiny@1", "--recipe", "int4-weights", "--param", "group=3"], "no option 'group'"),
    ]
    for args, message in cases:
        done = ovbatch(home, "quantize", *args, "--local", ok=False)
        assert done.returncode != 0 and message in done.stdout + done.stderr, (args, done.stdout, done.stderr)
    # a set whose tensors do not fit the model fails its job with the file named
    done = ovbatch(home, "quantize", "tiny@1", "--recipe", "int8", "--calibration", str(wrong), "--local", ok=False)
    assert "a.npz: no array for input(s) x (has y)" in done.stderr, done.stderr


@pytest.mark.slow
def test_quantization_writes_no_plaintext_to_disk(home: dict[str, object], tmp_path: Path) -> None:
    """The whole job under strace: only the storage root (encrypted objects, reports) is written, the
    quantized IR goes through memory files, and no parent or quantized plaintext lies anywhere."""
    if not shutil.which("strace"):
        pytest.fail("strace is not installed: `make test` installs it (apt-get install strace)")
    user_home, tmp = tmp_path / "home", tmp_path / "tmp"
    user_home.mkdir()
    tmp.mkdir()
    env = {**home["env"], "HOME": str(user_home), "TMPDIR": str(tmp)}  # type: ignore[dict-item]
    log = tmp_path / "strace.log"
    npz = str(home["npz"])
    command = [OVBATCH, "quantize", "tiny@1", "--recipe", "int8", "--calibration", npz, "--max-drop", "10", "--local"]
    run_traced(command, env, tmp_path, log)
    storage = Path(str(home["root"])) / "storage"
    unexpected = writes_outside_storage(log, user_home, storage)
    assert not unexpected, "quantization opened files for writing outside storage:\n" + "\n".join(unexpected)
    registry = home["registry"]
    assert isinstance(registry, Registry)
    quantized = decrypt_version(registry, ModelRef("tiny", "2"))
    leak_dir = tmp_path / "needles"
    leak_dir.mkdir()
    (leak_dir / "q.bin").write_bytes(quantized.data("openvino_model.bin"))
    quantized.wipe()
    samples = needles(leak_dir) + needles(Path(str(home["source"])))
    shutil.rmtree(leak_dir)
    hits = scan([storage, tmp, user_home, Path("/dev/shm")], samples)
    assert not hits, "plaintext model bytes found on disk:\n" + "\n".join(hits)


def test_keep_float_leaves_the_stem_or_a_layer_out_of_whisper_ptq() -> None:
    """``--param keep_float=stem`` leaves the convolutions in front of the encoder unquantized (no
    FakeQuantize on their input) while the linear layers are quantized, ``layer0`` the first encoder
    layer's operations; unknown parts and layers the model lacks are refused."""
    import nncf
    import openvino as ov
    import openvino.opset13 as ops

    from ovbatch.tasks.quantize.whisper import kept_float

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 8, 32], np.float32, name="input_features")
    conv = ops.convolution(x, ops.constant(rng.standard_normal((16, 8, 3)).astype(np.float32)), [1], [1], [1], [1])
    y = ops.matmul(conv, ops.constant(rng.standard_normal((32, 32)).astype(np.float32)), False, False)
    y.set_friendly_name("__module.layers.0.fc1/aten::linear/MatMul")  # as the exported encoder names it
    model = ov.Model([ops.relu(y)], [x], "stem-and-linear")
    samples = [rng.standard_normal((1, 8, 32)).astype(np.float32) for _ in range(4)]

    def quantized_inputs(keep: str) -> set[str]:
        q = nncf.quantize(model.clone(), nncf.Dataset(samples), subset_size=4, ignored_scope=kept_float(model, keep))
        return {
            op.get_type_name()
            for op in q.get_ordered_ops()
            if any(op.input_value(i).get_node().get_type_name() == "FakeQuantize" for i in range(op.get_input_size()))
        }

    assert {"Convolution", "MatMul"} <= quantized_inputs(""), "both are quantized by default"
    kept = quantized_inputs("stem")
    assert "Convolution" not in kept and "MatMul" in kept, kept
    assert quantized_inputs("stem,layer0") == set(), "layer0 must leave the layer's MatMul in float"
    with pytest.raises(ValueError, match="keep_float 'head': use a comma-separated choice of attention, stem, layerN"):
        kept_float(model, "head")
    with pytest.raises(ValueError, match="keep_float 'layerN': use a comma-separated choice"):
        kept_float(model, "layerN")  # the placeholder in the message is not a part
    with pytest.raises(ValueError, match="keep_float layer1: the model has no operations named 'layers.1.'"):
        kept_float(model, "stem,layer1")
