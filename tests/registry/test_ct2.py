"""The CTranslate2 Whisper reader and its mapping onto Hugging Face Whisper."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ovbatch.errors import CorruptModelError
from ovbatch.registry.ct2 import is_ct2_whisper, read_ct2, rebuild_hf_whisper


def ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec") -> None:
    out = struct.pack("<I", 6) + ct2_string(spec) + struct.pack("<II", 3, len(variables))
    for name, arr in variables.items():
        dtype = {np.dtype(np.float32): 0, np.dtype(np.float16): 4, np.dtype(np.int16): 2}[arr.dtype]
        out += ct2_string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<BI", dtype, arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", 1) + ct2_string("decoder/projection/weight") + ct2_string("decoder/embeddings/weight")
    path.write_bytes(out)


def test_reads_variables_dtypes_and_aliases(tmp_path: Path) -> None:
    emb = np.arange(12, dtype=np.float16).reshape(3, 4)
    write_ct2(tmp_path / "model.bin", {"decoder/embeddings/weight": emb, "decoder/num_heads": np.array(8, np.int16)})
    assert is_ct2_whisper(tmp_path)
    var = read_ct2(tmp_path / "model.bin")
    np.testing.assert_array_equal(var["decoder/embeddings/weight"], emb)
    np.testing.assert_array_equal(var["decoder/projection/weight"], emb)
    assert int(var["decoder/num_heads"]) == 8


def test_truncated_or_foreign_model_bin_is_a_clear_error(tmp_path: Path) -> None:
    write_ct2(tmp_path / "model.bin", {"decoder/embeddings/weight": np.zeros((64, 4), np.float32)})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:100])
    with pytest.raises(CorruptModelError, match="truncated CTranslate2 model"):
        read_ct2(tmp_path / "model.bin")
    write_ct2(tmp_path / "model.bin", {"x": np.zeros(1, np.float32)}, spec="TransformerSpec")
    assert not is_ct2_whisper(tmp_path)
    with pytest.raises(CorruptModelError, match="not a CTranslate2 Whisper model"):
        read_ct2(tmp_path / "model.bin")


def espeak_clip(path: Path, text: str, voice: str = "en-us") -> np.ndarray:
    import soundfile as sf

    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are needed: `make test` installs them with apt")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(path)], check=True)
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return audio


QUILTER = "Mister Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."


@pytest.mark.slow
@pytest.mark.real_model
def test_rebuilt_real_whisper_transcribes_speech(whisper_base_ct2: Path, tmp_path: Path) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    rebuild_hf_whisper(whisper_base_ct2, tmp_path / "hf")
    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    audio = espeak_clip(tmp_path / "quilter.wav", QUILTER)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, language="en", task="transcribe")
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert "Quilter is the apostle of the middle classes" in text, text
