"""The real Whisper base: faster-whisper (CTranslate2) form -> HF -> OpenVINO IR -> encrypted -> CPU."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.loader import verify
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage.file import FileStore
from tests.registry.test_no_plaintext import verify_under_strace

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


@pytest.fixture(scope="module")
def whisper_registry(tmp_path_factory: pytest.TempPathFactory, whisper_base_ct2: Path) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("whisper")
    ring = Keyring(root / "keyring.json")
    ring.add_new_key()
    ring.save()
    registry = Registry(FileStore(root / "storage"), ring)
    registry.import_folder(whisper_base_ct2, "whisper-base")
    yield registry


def test_ct2_whisper_imports_as_an_openvino_whisper(whisper_registry: Registry) -> None:
    m = whisper_registry.manifest(ModelRef.parse("whisper-base"))
    assert (m["kind"], m["source"]["type"]) == ("whisper", "ctranslate2-whisper")
    roles = {f["role"] for f in m["files"]}
    assert {
        "openvino_encoder_model.xml",
        "openvino_decoder_model.xml",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
        "generation_config.json",
        "preprocessor_config.json",
    } <= roles, roles


def test_real_whisper_verifies_on_cpu(whisper_registry: Registry) -> None:
    report = verify(whisper_registry, ModelRef.parse("whisper-base"), "CPU")
    models = set(report["models"])
    assert models == {
        "openvino_encoder_model.xml",
        "openvino_decoder_model.xml",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
    }
    assert report["plaintext_bytes"] > 250e6


def test_real_whisper_verify_leaves_no_plaintext(
    whisper_registry: Registry, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from ovbatch.registry.loader import decrypt_version

    # the samples to look for: the real decrypted IR, held in memory and written only outside the scan
    version = decrypt_version(
        whisper_registry,
        ModelRef.parse("whisper-base"),
        roles=["openvino_encoder_model.bin", "openvino_decoder_model.xml"],
    )
    outside = tmp_path_factory.mktemp("samples")
    for role in version.buffers:
        (outside / role).write_bytes(version.data(role))
    work = tmp_path / "work"
    work.mkdir()
    try:
        verify_under_strace(work, whisper_registry, "whisper-base@1", outside)
    finally:
        shutil.rmtree(outside)
