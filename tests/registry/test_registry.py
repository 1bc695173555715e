"""The encrypted registry end to end on real storage with a real (tiny) OpenVINO model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import (
    CorruptModelError,
    InputError,
    IntegrityError,
    KeyringError,
    ModelNotFound,
    NotAModelError,
    VersionExists,
)
from ovbatch.registry import refs
from ovbatch.registry.loader import decrypt_version, verify
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage import ObjectStore
from tests.conftest import build_tiny_ir


def test_import_writes_manifest_and_ciphertext_only(registry: Registry, tiny_ir: Path) -> None:
    m = registry.import_folder(tiny_ir, "tiny")
    assert (m["name"], m["version"], m["kind"], m["precision"]) == ("tiny", "1", "generic", "fp32")
    roles = sorted(f["role"] for f in m["files"])
    assert roles == ["config.json", "openvino_model.bin", "openvino_model.xml"]
    keys = sorted(registry.store.list("models/tiny/1/"))
    assert keys == [
        "models/tiny/1/config.json.enc",
        "models/tiny/1/manifest.json",
        "models/tiny/1/openvino_model.bin.enc",
        "models/tiny/1/openvino_model.xml.enc",
    ]
    plain = (tiny_ir / "openvino_model.bin").read_bytes()
    stored = registry.store.get_bytes("models/tiny/1/openvino_model.bin.enc")
    assert plain[1000:1064] not in stored, "weights stored in the clear"
    for field in ("sha256", "size"):
        assert all(field in f for f in m["files"])
    assert m["key_id"] == registry.keyring.active and "created" in m and m["source"]["type"] == "openvino-ir"


def test_versions_are_immutable_and_name_alone_is_newest(registry: Registry, tmp_path: Path) -> None:
    registry.import_folder(build_tiny_ir(tmp_path / "a", seed=1), "tiny")
    registry.import_folder(build_tiny_ir(tmp_path / "b", seed=2), "tiny")
    assert registry.versions("tiny") == ["1", "2"]
    assert registry.resolve(ModelRef.parse("tiny")) == ModelRef("tiny", "2")
    with pytest.raises(VersionExists, match="tiny@2 already exists; versions are immutable"):
        registry.import_folder(tmp_path / "a", "tiny", version="2")
    assert registry.import_folder(tmp_path / "a", "tiny", version="7")["version"] == "7"
    assert registry.versions("tiny") == ["1", "2", "7"]
    assert not any(k.endswith("RESERVED") for k in registry.store.list())


def test_decrypted_model_runs_and_matches_the_source(registry: Registry, tiny_ir: Path) -> None:
    import numpy as np

    from ovbatch.ov import make_core

    registry.import_folder(tiny_ir, "tiny")
    version = decrypt_version(registry, ModelRef.parse("tiny@1"))
    core = make_core()
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    got = core.compile_model(version.read_model(core, "openvino_model.xml"), "CPU")(x)[0]
    want = core.compile_model(core.read_model(tiny_ir / "openvino_model.xml"), "CPU")(x)[0]
    np.testing.assert_array_equal(got, want)


def test_weights_tensor_wraps_the_decrypted_buffer_without_a_copy(registry: Registry, tiny_ir: Path) -> None:
    import numpy as np

    registry.import_folder(tiny_ir, "tiny")
    version = decrypt_version(registry, ModelRef.parse("tiny"))
    tensor = version.weights_tensor("openvino_model.xml")
    assert np.shares_memory(tensor.data, version.buffers["openvino_model.bin"])
    assert bytes(version.data("openvino_model.bin")) == (tiny_ir / "openvino_model.bin").read_bytes()
    version.wipe()
    assert not np.asarray(tensor.data).any(), "wipe must zero the memory OpenVINO was given"


def test_verify_reports_timings(registry: Registry, tiny_ir: Path) -> None:
    registry.import_folder(tiny_ir, "tiny")
    report = verify(registry, ModelRef.parse("tiny"), "CPU")
    assert report["ref"] == "tiny@1" and report["models"] == ["openvino_model.xml"]
    assert set(report["seconds"]) >= {"fetch", "decrypt", "read_model", "compile"}


def flip(store: ObjectStore, key: str, offset: int) -> None:
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0x10
    store.put_bytes(key, bytes(data))


@pytest.mark.parametrize("role", ["openvino_model.bin", "openvino_model.xml", "config.json"])
def test_any_flipped_byte_in_any_file_names_model_version_file(registry: Registry, tiny_ir: Path, role: str) -> None:
    registry.import_folder(tiny_ir, "tiny")
    key = refs.object_key("tiny", "1", role)
    flip(registry.store, key, registry.store.size(key) // 2)
    with pytest.raises(IntegrityError, match=f"tiny@1 file '{role}'"):
        verify(registry, ModelRef.parse("tiny@1"), "CPU")


def test_file_swapped_between_versions_and_roles(registry: Registry, tmp_path: Path) -> None:
    registry.import_folder(build_tiny_ir(tmp_path / "a", seed=1), "tiny")
    registry.import_folder(build_tiny_ir(tmp_path / "b", seed=2), "tiny")
    registry.import_folder(build_tiny_ir(tmp_path / "c", seed=3), "other")
    s = registry.store
    weights = "openvino_model.bin"
    for src in (refs.object_key("tiny", "1", weights), refs.object_key("other", "1", weights)):
        s.put_bytes(refs.object_key("tiny", "2", "openvino_model.bin"), s.get_bytes(src))
        with pytest.raises(IntegrityError, match="tiny@2 file 'openvino_model.bin'"):
            decrypt_version(registry, ModelRef.parse("tiny@2"))
    xml = s.get_bytes(refs.object_key("other", "1", "openvino_model.xml"))
    s.put_bytes(refs.object_key("other", "1", "config.json"), xml)
    with pytest.raises(IntegrityError, match="other@1 file 'config.json'"):
        decrypt_version(registry, ModelRef.parse("other@1"))


def test_tampered_manifest_is_caught(registry: Registry, tiny_ir: Path) -> None:
    registry.import_folder(tiny_ir, "tiny")
    key = refs.manifest_key("tiny", "1")
    m = json.loads(registry.store.get_bytes(key))
    m["files"][0]["size"] += 1
    registry.store.put_bytes(key, json.dumps(m).encode())
    with pytest.raises(IntegrityError, match="tiny@1: manifest.json fails its MAC"):
        decrypt_version(registry, ModelRef.parse("tiny"))


def test_wrong_keyring_is_caught(registry: Registry, tiny_ir: Path, tmp_path: Path) -> None:
    from ovbatch.errors import UnknownKeyError

    registry.import_folder(tiny_ir, "tiny")
    stranger = Keyring(tmp_path / "other.json")
    stranger.add_new_key()
    with pytest.raises(UnknownKeyError, match=registry.keyring.active or ""):
        decrypt_version(Registry(registry.store, stranger), ModelRef.parse("tiny"))


def test_rewrap_changes_only_the_manifest(registry: Registry, tiny_ir: Path) -> None:
    registry.import_folder(tiny_ir, "tiny")
    before = {k: registry.store.get_bytes(k) for k in registry.store.list() if k.endswith(".enc")}
    old = registry.keyring.active
    registry.keyring.add_new_key()
    registry.rewrap(ModelRef.parse("tiny@1"))
    registry.keyring.remove(old or "")
    after = {k: registry.store.get_bytes(k) for k in registry.store.list() if k.endswith(".enc")}
    assert before == after, "rotation must not rewrite encrypted data"
    assert registry.manifest(ModelRef.parse("tiny"))["key_id"] == registry.keyring.active
    verify(registry, ModelRef.parse("tiny"), "CPU")


def test_remove(registry: Registry, tiny_ir: Path) -> None:
    registry.import_folder(tiny_ir, "tiny")
    registry.remove(ModelRef.parse("tiny@1"))
    assert list(registry.store.list()) == []
    with pytest.raises(ModelNotFound, match="'tiny' is not in the registry"):
        registry.resolve(ModelRef.parse("tiny"))


def test_bad_sources_get_clear_errors(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        registry.import_folder(tmp_path / "missing", "x")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        registry.import_folder(tmp_path / "file.txt", "x")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(NotAModelError, match="holds no model ovbatch can import"):
        registry.import_folder(tmp_path / "junk", "x")
    corrupt = build_tiny_ir(tmp_path / "corrupt")
    (corrupt / "openvino_model.xml").write_text("<net><layers><layer id='0' type='Nope'/></layers></net>")
    with pytest.raises(CorruptModelError, match="openvino_model.xml: OpenVINO cannot read this IR"):
        registry.import_folder(corrupt, "x")
    assert list(registry.store.list()) == [], "a failed import leaves nothing behind"


@pytest.mark.parametrize(
    ("index", "named"),
    [
        (
            {
                "_class_name": "StableDiffusionXLPipeline",
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            },
            "a StableDiffusionXLPipeline pipeline",
        ),
        (
            {"_class_name": "OVStableDiffusion3Pipeline", "transformer": ["optimum", "OVModelTransformer"]},
            "a StableDiffusion3Pipeline pipeline",
        ),
        (
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "text_encoder_2": ["transformers", "CLIPTextModel"],
            },
            "a StableDiffusionPipeline pipeline",
        ),
    ],
)
def test_diffusion_pipelines_the_engine_cannot_build_are_refused_before_export(
    registry: Registry, tmp_path: Path, index: dict[str, Any], named: str
) -> None:
    folder = tmp_path / "pipeline"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "config.json").write_text("{}")
    with pytest.raises(NotAModelError, match=f"{named}; image generation takes StableDiffusionPipeline or"):
        registry.import_folder(folder, "x")
    assert list(registry.store.list()) == [], "a refused import leaves nothing behind"


def test_bad_names_and_refs(registry: Registry, tiny_ir: Path) -> None:
    with pytest.raises(InputError, match="model name"):
        registry.import_folder(tiny_ir, "../evil")
    with pytest.raises(InputError, match="versions are positive integers"):
        ModelRef.parse("tiny@latest")


def test_import_without_an_active_key_fails_before_work(file_store: ObjectStore, tiny_ir: Path, tmp_path: Path) -> None:
    reg = Registry(file_store, Keyring(tmp_path / "none.json"))
    with pytest.raises(KeyringError, match="no active key"):
        reg.import_folder(tiny_ir, "tiny")


def test_registry_on_s3(s3_store: ObjectStore, keyring: Keyring, tiny_ir: Path) -> None:
    reg = Registry(s3_store, keyring)
    reg.import_folder(tiny_ir, "tiny")
    reg.import_folder(tiny_ir, "tiny")
    assert reg.versions("tiny") == ["1", "2"]
    assert verify(reg, ModelRef.parse("tiny"), "CPU")["ref"] == "tiny@2"
