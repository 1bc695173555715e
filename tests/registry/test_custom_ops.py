"""Custom operations: an OpenVINO extension library (built here from ``scale_op.cpp``) carried in the
registry encrypted like the model, loaded from a memfd, never written decrypted to disk; GPU
custom-kernel configs carried and refused on GPU (the plugin needs a real folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import CorruptModelError, DeviceError, InputError, IntegrityError
from ovbatch.registry import extensions, memload
from ovbatch.registry.loader import decrypt_version, load_and_compile
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.registry import custom_op
from tests.registry.test_no_plaintext import needles, run_traced, scan, traced_writes

OVBATCH = str(Path(sys.executable).with_name("ovbatch"))
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="session")
def scale_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension library, outside every test's tmp_path (the no-plaintext scan looks there)."""
    return custom_op.build_extension(tmp_path_factory.mktemp("scale-ext") / "libovbatch_scale.so")


@pytest.fixture
def home(tmp_path: Path) -> dict[str, object]:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add_new_key()
    ring.save()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVBATCH_", "AWS_"))}
    env |= {"OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(), "OVBATCH_KEYRING": str(ring.path)}
    env["OVBATCH_BROKER_URL"] = "redis://127.0.0.1:1/0"  # unreachable: --local is what runs
    return {"registry": Registry(FileStore(tmp_path / "storage"), ring), "env": env, "root": tmp_path}


def ovbatch(home: dict[str, object], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OVBATCH, *args], env=home["env"], cwd=home["root"], capture_output=True, text=True, timeout=300
    )  # type: ignore[arg-type]
    where = f"`ovbatch {' '.join(args)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, where
    assert (done.returncode == 0) == ok, where
    return done


def infer(compiled: object, hidden: int = 256) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(7).standard_normal((1, hidden)).astype(np.float32)
    return x, compiled(x)[0]  # type: ignore[operator]


def test_a_library_in_a_memfd_is_dlopened_from_memory(scale_lib: Path, tmp_path: Path) -> None:
    """The mechanism: OpenVINO's add_extension dlopens /proc/self/fd/N of a sealed memfd; the code is
    mapped from the memfd (no file behind it), and the op runs."""
    import openvino as ov

    library = memload.MemoryLibrary("libovbatch_scale.so", memoryview(scale_lib.read_bytes()))
    assert os.readlink(library.path).startswith("/memfd:ovbatch-ext:libovbatch_scale.so")
    with pytest.raises(PermissionError):  # sealed: nobody changes the code once it is checked
        os.write(library.fd, b"x")
    core = ov.Core()
    core.add_extension(library.path)
    folder = custom_op.write_ir(tmp_path / "ir")
    x, y = infer(core.compile_model(core.read_model(folder / "openvino_model.xml"), "CPU", F32))
    np.testing.assert_allclose(y, custom_op.expected(folder, x), rtol=1e-4, atol=1e-3)
    maps = Path("/proc/self/maps").read_text().splitlines()
    code = [line for line in maps if "/memfd:ovbatch-ext:libovbatch_scale.so" in line and " r-x" in line]
    assert code, "the library's code is not mapped from the memfd"


@pytest.mark.slow
def test_import_carries_the_library_encrypted_and_every_reader_loads_it(
    home: dict[str, object], scale_lib: Path, tmp_path: Path
) -> None:
    source = custom_op.write_ir(tmp_path / "src")
    done = ovbatch(home, "models", "import", str(source), "--name", "scaled", "--extension", str(scale_lib))
    assert "extension library extensions/libovbatch_scale.so" in done.stdout
    registry: Registry = home["registry"]  # type: ignore[assignment]
    manifest = registry.manifest(ModelRef("scaled", "1"))
    assert manifest["extensions"] == [{"role": "extensions/libovbatch_scale.so", "kind": "extension"}]
    stored = (tmp_path / "storage" / "models" / "scaled" / "1" / "extensions" / "libovbatch_scale.so.enc").read_bytes()
    assert not [s for s in needles(scale_lib.parent) if s in stored], "the stored library is not encrypted"
    shown = ovbatch(home, "models", "show", "scaled")
    assert "custom operations: extension library extensions/libovbatch_scale.so" in shown.stderr
    verified = ovbatch(home, "models", "verify", "scaled@1")
    assert "compiled: openvino_model.xml" in verified.stdout
    assert "extension libraries, loaded from memory: extensions/libovbatch_scale.so" in verified.stdout

    # the loader every job kind goes through: the op runs, with the library's own arithmetic
    import openvino as ov

    version, compiled = load_and_compile(registry, ModelRef("scaled", "1"), ov.Core(), "CPU", config=F32)
    x, y = infer(compiled["openvino_model.xml"])
    np.testing.assert_allclose(y, custom_op.expected(source, x), rtol=1e-4, atol=1e-3)
    # a job that decrypts only its part (benchmark, quantize) gets the library with it
    part = decrypt_version(registry, ModelRef("scaled", "1"), roles=["openvino_model.xml", "openvino_model.bin"])
    assert "extensions/libovbatch_scale.so" in part.buffers
    model = part.read_model(ov.Core(), "openvino_model.xml")
    assert any(op.get_type_name() == custom_op.OP for op in model.get_ops())
    # loaded once per process, whichever version or Core asks again
    before = memload.loaded_libraries()
    registry.import_folder(custom_op.write_ir(tmp_path / "src2", seed=3), "scaled-too", libraries=[scale_lib])
    version2, _ = load_and_compile(registry, ModelRef("scaled-too", "1"), ov.Core(), "CPU")
    assert memload.loaded_libraries() == before
    for v in (version, version2, part):
        v.wipe()


def test_a_library_inside_the_model_folder_is_taken_as_its_extension(
    registry: Registry, scale_lib: Path, tmp_path: Path
) -> None:
    source = custom_op.write_ir(tmp_path / "src")
    shutil.copy(scale_lib, source / "libovbatch_scale.so")
    manifest = registry.import_folder(source, "scaled")
    assert extensions.library_roles(manifest) == ["libovbatch_scale.so"]
    # given again with --extension, it is stored once, under extensions/
    manifest = registry.import_folder(source, "scaled", libraries=[source / "libovbatch_scale.so"])
    assert extensions.library_roles(manifest) == ["extensions/libovbatch_scale.so"]
    assert len(manifest["files"]) == 3


def test_a_model_without_its_library_fails_naming_the_operation(
    registry: Registry, scale_lib: Path, tmp_path: Path
) -> None:
    source = custom_op.write_ir(tmp_path / "src")
    with pytest.raises(CorruptModelError, match=r"operation 'OvbatchScale' .*--extension LIB\.so"):
        registry.import_folder(source, "scaled")
    with pytest.raises(InputError, match="not a shared library"):
        registry.import_folder(source, "scaled", libraries=[source / "openvino_model.bin"])
    # a version made without its library (in memory, unchecked) fails where it is read, naming the op
    files = {r: (source / r).read_bytes() for r in ("openvino_model.xml", "openvino_model.bin")}
    registry.import_buffers(files, "bare", kind="generic", precision="fp32", source={"type": "test"})
    import openvino as ov

    with pytest.raises(CorruptModelError, match=r"bare@1 file 'openvino_model.xml': it uses operation 'OvbatchScale'"):
        load_and_compile(registry, ModelRef("bare", "1"), ov.Core(), "CPU")


def test_the_extensions_list_is_authenticated(registry: Registry, scale_lib: Path, tmp_path: Path) -> None:
    """Dropping a library from the manifest's list (so a worker would read without it) breaks its MAC."""
    registry.import_folder(custom_op.write_ir(tmp_path / "src"), "scaled", libraries=[scale_lib])
    path = tmp_path / "storage" / "models" / "scaled" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "extensions": []}))
    with pytest.raises(IntegrityError):
        decrypt_version(Registry(registry.store, registry.keyring), ModelRef("scaled", "1"))
    path.write_text(json.dumps({**manifest, "extensions": [{"role": "nope.so", "kind": "extension"}]}))
    with pytest.raises(IntegrityError, match="malformed extensions list"):
        Registry(registry.store, registry.keyring).manifest(ModelRef("scaled", "1"), verify_mac=False)


def test_a_version_made_from_another_keeps_its_extensions(registry: Registry, scale_lib: Path, tmp_path: Path) -> None:
    """What a quantization job does: every file of the parent, imported from memory."""
    registry.import_folder(custom_op.write_ir(tmp_path / "src"), "scaled", libraries=[scale_lib])
    parent = decrypt_version(registry, ModelRef("scaled", "1"))
    files = {role: bytes(parent.data(role)) for role in parent.buffers}
    child = registry.import_buffers(files, "scaled-int8", kind="generic", precision="int8", source={"type": "test"})
    assert child["extensions"] == [{"role": "extensions/libovbatch_scale.so", "kind": "extension"}]
    parent.wipe()


@pytest.mark.slow
def test_a_quantization_job_reads_the_model_with_its_library_and_its_result_carries_it(
    home: dict[str, object], scale_lib: Path, tmp_path: Path
) -> None:
    """The quantize kind end to end (embedded): NNCF compresses the model read with the library loaded
    from memory, and the new version, made from memory, holds the library and still computes the op."""
    import openvino as ov

    registry: Registry = home["registry"]  # type: ignore[assignment]
    source = custom_op.write_ir(tmp_path / "src")
    registry.import_folder(source, "scaled", libraries=[scale_lib])
    ovbatch(home, "quantize", "scaled@1", "--recipe", "int8-weights", "--local")
    child = registry.manifest(ModelRef("scaled", "2"))
    assert child["precision"] == "int8" and child["lineage"]["parent"] == "scaled@1"
    assert extensions.library_roles(child) == ["extensions/libovbatch_scale.so"]
    version, compiled = load_and_compile(registry, ModelRef("scaled", "2"), ov.Core(), "CPU", config=F32)
    x, y = infer(compiled["openvino_model.xml"])
    want = custom_op.expected(source, x)
    assert np.abs(y - want).max() < 0.02 * np.abs(want).max()  # int8 weights, the op's own arithmetic
    version.wipe()


def test_two_builds_of_one_op_in_one_process_each_run_their_own(
    registry: Registry, scale_lib: Path, tmp_path: Path
) -> None:
    """A Core keeps the first definition of an op type it learns; each set of libraries therefore
    reads with a Core of its own, and both compile on the worker's one Core."""
    import openvino as ov

    other = custom_op.build_extension(tmp_path.parent / f"{tmp_path.name}-lib" / "libovbatch_scale.so", bias=100.0)
    source = custom_op.write_ir(tmp_path / "src")
    registry.import_folder(source, "scaled", libraries=[scale_lib])
    registry.import_folder(source, "scaled", libraries=[other])
    core = ov.Core()
    results = {}
    for version in ("1", "2"):
        decrypted, compiled = load_and_compile(registry, ModelRef("scaled", version), core, "CPU", config=F32)
        results[version] = infer(compiled["openvino_model.xml"])
        decrypted.wipe()
    x, y = results["1"]
    np.testing.assert_allclose(y, custom_op.expected(source, x), rtol=1e-4, atol=1e-3)
    x, y = results["2"]
    np.testing.assert_allclose(y, custom_op.expected(source, x, bias=100.0), rtol=1e-4, atol=1e-2)
    shutil.rmtree(other.parent)


def test_gpu_kernels_are_carried_encrypted_and_refused_on_gpu(
    home: dict[str, object], scale_lib: Path, tmp_path: Path
) -> None:
    """No GPU here: the manifest and loader plumbing only. The GPU plugin realpath()s CONFIG_FILE
    (a memfd path does not resolve) and opens kernels beside it, so a GPU run would need plaintext on
    disk: such a version is refused on GPU, with the reason, before anything is decrypted."""
    source = custom_op.write_ir(tmp_path / "src")
    config = custom_op.write_gpu_config(tmp_path / "gpu-src")
    args = ["models", "import", str(source), "--name", "scaled", "--extension", str(scale_lib)]
    done = ovbatch(home, *args, "--gpu-config", str(config))
    assert "GPU custom-layer config gpu/scale_kernels.xml" in done.stdout
    assert "kernels: gpu/kernels/scale.cl" in done.stdout
    registry: Registry = home["registry"]  # type: ignore[assignment]
    manifest = registry.manifest(ModelRef("scaled", "1"))
    assert {"role": "gpu/scale_kernels.xml", "kind": "gpu_config", "kernels": ["gpu/kernels/scale.cl"]} in manifest[
        "extensions"
    ]
    stored = tmp_path / "storage" / "models" / "scaled" / "1" / "gpu" / "kernels" / "scale.cl.enc"
    assert b"ovbatch_scale" not in stored.read_bytes()
    shown = ovbatch(home, "models", "show", "scaled@1")
    assert "custom operations: GPU custom-layer config gpu/scale_kernels.xml" in shown.stderr
    assert "GPU" in (extensions.gpu_blocker(manifest, "HETERO:GPU,CPU") or "")
    assert extensions.gpu_blocker(manifest, "CPU") is None
    import openvino as ov

    with pytest.raises(DeviceError, match="carries GPU custom kernels .* only from a folder on a filesystem"):
        load_and_compile(registry, ModelRef("scaled", "1"), ov.Core(), "GPU")
    version, _ = load_and_compile(registry, ModelRef("scaled", "1"), ov.Core(), "CPU")  # CPU: its library
    version.wipe()


def test_gpu_configs_naming_missing_or_outside_kernels_are_refused(
    registry: Registry, scale_lib: Path, tmp_path: Path
) -> None:
    source = custom_op.write_ir(tmp_path / "src")
    config = custom_op.write_gpu_config(tmp_path / "gpu-src")
    (config.parent / "kernels" / "scale.cl").unlink()
    with pytest.raises(InputError, match="names kernel source kernels/scale.cl"):
        registry.import_folder(source, "scaled", libraries=[scale_lib], gpu_config=config)
    config.write_text(config.read_text().replace("kernels/scale.cl", "../../etc/passwd"))
    with pytest.raises(InputError, match="must be a file beside the config"):
        registry.import_folder(source, "scaled", libraries=[scale_lib], gpu_config=config)
    config.write_text("<net/>")
    with pytest.raises(InputError, match="not a GPU custom-layer config"):
        registry.import_folder(source, "scaled", libraries=[scale_lib], gpu_config=config)
    assert registry.names() == []


def test_verify_loads_the_library_from_memory_and_writes_no_plaintext(
    tmp_path: Path, scale_lib: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``models verify`` under strace: the only file made is the library's memfd, dlopen reads it
    through /proc/self/fd/N, nothing is opened for writing, and no byte of the library or the
    weights is on disk afterwards (storage, TMPDIR, HOME, the working folder, /dev/shm)."""
    if not shutil.which("strace"):
        pytest.fail("strace is not installed: `make test` installs it (apt-get install strace)")
    source = custom_op.write_ir(tmp_path_factory.mktemp("scaled-src"))
    keyring = Keyring(tmp_path / "keyring.json")
    keyring.add_new_key()
    keyring.save()
    Registry(FileStore(tmp_path / "storage"), keyring).import_folder(source, "scaled", libraries=[scale_lib])
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "OVBATCH_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "OVBATCH_KEYRING": str(keyring.path),
    }
    log = tmp_path / "strace.log"
    done = run_traced([OVBATCH, "models", "verify", "scaled@1"], env, tmp_path, log)
    assert "verified scaled@1" in done.stdout
    writes = traced_writes(log, home)
    memfds = [w for w in writes if w.startswith('memfd_create("ovbatch-ext:libovbatch_scale.so"')]
    assert len(memfds) == 1, "the library was not put in exactly one memfd:\n" + "\n".join(writes)
    others = [w for w in writes if w not in memfds]
    assert not others, "verify opened files for writing:\n" + "\n".join(others)
    trace = log.read_text()
    # the call's result is on its own line, or on a "<... memfd_create resumed>" one when threads interleave
    (fd,) = re.findall(r"memfd_create.*\) += (\d+)$", trace, re.MULTILINE)
    assert f'"/proc/self/fd/{fd}", O_RDONLY' in trace, "the library was not dlopened from its memfd"
    assert str(scale_lib) not in trace
    samples = needles(source) + needles(scale_lib.parent)
    hits = scan([tmp_path / "storage", tmp, home, tmp_path, Path("/dev/shm")], samples)
    assert not hits, "plaintext found on disk:\n" + "\n".join(hits)
    assert "extension libraries, loaded from memory: extensions/libovbatch_scale.so" in done.stdout
