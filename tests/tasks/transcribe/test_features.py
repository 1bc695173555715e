"""Log-mel features: the numpy implementation against transformers' WhisperFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest

from ovbatch.tasks.transcribe.features import FeatureConfig, LogMel, mel_filter_bank

PREPROCESSOR = '{"feature_size": 80, "hop_length": 160, "n_fft": 400, "sampling_rate": 16000, "chunk_length": 30}'


def test_config_reads_preprocessor_json() -> None:
    c = FeatureConfig.from_json(PREPROCESSOR)
    assert (c.n_mels, c.n_fft, c.hop_length, c.n_samples, c.n_frames) == (80, 400, 160, 480000, 3000)


def test_mel_filters_match_transformers() -> None:
    from transformers.audio_utils import mel_filter_bank as hf_filters

    want = hf_filters(201, 80, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    got = mel_filter_bank(201, 80, 16000)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-7, "Slaney mel filter bank differs from transformers'"


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 7) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
    return {
        "noise 7 s": (0.1 * rng.standard_normal(16000 * 7)).astype(np.float32),
        "chirp + noise 7 s": (chirp + 0.01 * rng.standard_normal(len(t))).astype(np.float32),
        "full 30 s window": (0.05 * rng.standard_normal(480000)).astype(np.float32),
        "longer than a window": (0.05 * rng.standard_normal(500000)).astype(np.float32),
        "1000 samples": (0.2 * rng.standard_normal(1000)).astype(np.float32),
        "silence": np.zeros(16000, dtype=np.float32),
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_log_mel_matches_transformers(name: str) -> None:
    from transformers import WhisperFeatureExtractor

    audio = _signals()[name]
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, n_fft=400)
    window = audio[:480000]
    want = extractor(window, sampling_rate=16000, return_tensors="np").input_features[0]
    got = LogMel()(audio)
    assert got.dtype == np.float32
    assert got.shape == want.shape == (80, 3000), f"{name}: shape {got.shape}, transformers {want.shape}"
    err = float(np.abs(got - want).max())
    assert err < 1e-4, f"{name}: log-mel differs from WhisperFeatureExtractor by up to {err:.2e}"


def test_batch_stacks_windows() -> None:
    signals = _signals()
    mel = LogMel().batch([signals["noise 7 s"], signals["silence"]])
    assert mel.shape == (2, 80, 3000)
    assert np.array_equal(mel[1], LogMel()(signals["silence"]))


def test_faster_whisper_padding_differs_only_for_short_windows() -> None:
    signals = _signals()
    mel = LogMel()
    full = signals["full 30 s window"]
    edge = np.abs(mel.padded_after(full) - mel(full))[:, :-1].max()  # the last frame sees the padding
    assert edge < 1e-5, f"a full window must not depend on padding (differs by {edge:.2e})"
    short = mel.padded_after(signals["noise 7 s"])
    frames = 7 * 100
    assert short.shape == (80, 3000) and not short[:, frames + 1 :].any(), "log-mel padding must be zeros"
    assert np.abs(short[:, : frames - 1] - mel(signals["noise 7 s"])[:, : frames - 1]).max() < 1e-5
