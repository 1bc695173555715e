"""Whisper log-mel features in numpy, numerically the same as transformers' WhisperFeatureExtractor.

One 30 s window at a time: the audio is zero-padded (or cut) to ``n_samples``, framed with a
centred, reflect-padded periodic Hann window, turned into an 80-bin Slaney mel power spectrum,
then ``log10``, clipped to 8 below its maximum and scaled as ``(x + 4) / 4``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ovbatch.tasks.transcribe.types import SAMPLE_RATE


@dataclass(frozen=True)
class FeatureConfig:
    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    sampling_rate: int = SAMPLE_RATE
    chunk_length_s: int = 30

    @classmethod
    def from_json(cls, text: str) -> FeatureConfig:
        """Read a Hugging Face ``preprocessor_config.json``."""
        data = json.loads(text)
        return cls(
            n_mels=int(data.get("feature_size", 80)),
            n_fft=int(data.get("n_fft", 400)),
            hop_length=int(data.get("hop_length", 160)),
            sampling_rate=int(data.get("sampling_rate", SAMPLE_RATE)),
            chunk_length_s=int(data.get("chunk_length", 30)),
        )

    @property
    def n_samples(self) -> int:
        return self.chunk_length_s * self.sampling_rate

    @property
    def n_frames(self) -> int:
        return self.n_samples // self.hop_length


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, 27.0 / np.log(6.4)
    mels = 3.0 * freq / 200.0
    log_part = min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) * logstep
    return np.where(freq >= min_log_hz, log_part, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    freq = 200.0 * mels / 3.0
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, freq)


def mel_filter_bank(n_freqs: int, n_mels: int, sampling_rate: int) -> np.ndarray:
    """Slaney-normalised triangular filters, shape ``(n_freqs, n_mels)`` (as transformers builds them)."""
    fft_freqs = np.linspace(0, sampling_rate // 2, n_freqs)
    mel_min, mel_max = _hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(sampling_rate / 2.0))
    filter_freqs = _mel_to_hz(np.linspace(mel_min, mel_max, n_mels + 2))
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : n_mels + 2] - filter_freqs[:n_mels])
    return filters * enorm[None, :]


class LogMel:
    """Computes the encoder input of one window: ``(n_mels, n_frames)`` float32."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()

    @cached_property
    def _filters(self) -> np.ndarray:
        c = self.config
        return mel_filter_bank(1 + c.n_fft // 2, c.n_mels, c.sampling_rate).T.astype(np.float32)

    @cached_property
    def _window(self) -> np.ndarray:
        n = self.config.n_fft
        return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic Hann

    def power_spectrum(self, audio: np.ndarray) -> np.ndarray:
        """``|STFT|^2`` of ``audio`` (centred frames), shape ``(1 + n_fft/2, frames)``."""
        c = self.config
        padded = np.pad(audio.astype(np.float32, copy=False), c.n_fft // 2, mode="reflect")
        n_frames = 1 + (len(padded) - c.n_fft) // c.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length][:n_frames]
        spec = np.fft.rfft(frames * self._window, axis=-1)
        return (spec.real**2 + spec.imag**2).T.astype(np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel of one window of 16 kHz mono audio (zero-padded or cut to the window length)."""
        c = self.config
        window = np.zeros(c.n_samples, dtype=np.float32)
        n = min(len(audio), c.n_samples)
        window[:n] = audio[:n]
        return self._log_mel(window)

    def _log_mel(self, audio: np.ndarray) -> np.ndarray:
        """Whisper's scaled log-mel of exactly ``audio``: clipped 8 below its own maximum."""
        mel = self._filters @ self.power_spectrum(audio)[:, :-1]
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def padded_after(self, audio: np.ndarray) -> np.ndarray:
        """faster-whisper's variant: log-mel of the audio alone (normalised by its own maximum), then
        zero-padded *in log-mel space* to the window. The same as ``__call__`` for a full window."""
        c = self.config
        clip = np.pad(audio[: c.n_samples].astype(np.float32, copy=False), (0, c.hop_length))
        log_mel = self._log_mel(clip)
        out = np.zeros((c.n_mels, c.n_frames), dtype=np.float32)
        n = min(log_mel.shape[1], c.n_frames)
        out[:, :n] = log_mel[:, :n]
        return out

    def batch(self, windows: list[np.ndarray], pad_log_mel: bool = False) -> np.ndarray:
        """Log-mels of several windows, stacked ``(len(windows), n_mels, n_frames)``."""
        one = self.padded_after if pad_log_mel else self
        return np.stack([one(w) for w in windows])
