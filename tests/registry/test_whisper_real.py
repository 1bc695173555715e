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


def test_decrypted_openvino_encoder_matches_pytorch(
    whisper_registry: Registry, whisper_base_ct2: Path, tmp_path: Path
) -> None:
    """The encrypted, exported encoder computes what the rebuilt PyTorch Whisper computes."""
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from ovbatch.ov import make_core
    from ovbatch.registry.ct2 import rebuild_hf_whisper
    from ovbatch.registry.loader import decrypt_version
    from tests.registry.test_ct2 import QUILTER, espeak_clip

    rebuild_hf_whisper(whisper_base_ct2, tmp_path / "hf")
    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")
    features = processor(espeak_clip(tmp_path / "q.wav", QUILTER), sampling_rate=16000, return_tensors="np")
    mel = features.input_features.astype(np.float32)
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        want = model.model.encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
    version = decrypt_version(
        whisper_registry,
        ModelRef.parse("whisper-base"),
        roles=["openvino_encoder_model.xml", "openvino_encoder_model.bin"],
    )
    core = make_core()
    encoder = core.compile_model(
        version.read_model(core, "openvino_encoder_model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = encoder(mel)[0]
    assert got.shape == want.shape
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-3, f"OpenVINO encoder differs from PyTorch by {err:.2e} (relative to max)"
