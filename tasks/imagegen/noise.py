"""Seeded Gaussian noise for genai pipelines: torch's CPU ``randn`` stream, with or without torch.

diffusers draws latents (and LCM / ancestral scheduler noise) with ``torch.randn(generator=
torch.Generator().manual_seed(seed))``. genai's ``TorchGenerator`` calls torch for it, so a worker
needs torch installed. ``NumpyTorchNoise`` computes the same stream with numpy: torch seeds an
mt19937 as numpy's legacy ``RandomState`` does, turns 24 bits of each 32-bit draw into a uniform
float, and makes normals 16 at a time by Box-Muller (the first 8 uniforms are radii, the next 8
angles; a tail under 16 redraws a whole block of 16). Measured against torch 2.13: 86 % of values are
bit-identical, the rest differ by 1-2 float32 ulps (torch uses SIMD log/sin/cos).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import openvino as ov
import openvino_genai as genai

from ovbatch.errors import ConfigError

NOISE_KINDS = ("torch", "numpy")
_BLOCK = 16


def _box_muller(uniform: np.ndarray) -> np.ndarray:
    """torch's ``normal_fill_16`` on rows of 16 uniforms."""
    radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - uniform[:, :8]))
    theta = np.float32(2.0 * np.pi) * uniform[:, 8:]
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1).astype(np.float32)


def torch_randn(state: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """``torch.randn(shape)`` (float32, CPU) drawn from ``state``, advancing it as torch advances its generator."""
    count = int(np.prod(shape))
    if count < _BLOCK:  # torch takes another path for under 16 values; no latent here is that small
        raise ValueError(f"torch-compatible noise needs at least {_BLOCK} values, not {count}")
    tail = _BLOCK if count % _BLOCK else 0
    words = state.randint(0, 2**32, size=count + tail, dtype=np.uint64)
    uniform = (words & ((1 << 24) - 1)).astype(np.float32) * np.float32(2.0**-24)
    out = uniform[:count].copy()
    whole = count // _BLOCK * _BLOCK
    out[:whole] = _box_muller(out[:whole].reshape(-1, _BLOCK)).reshape(-1)
    if tail:  # torch recomputes the last 16 values from 16 fresh uniforms
        out[count - _BLOCK :] = _box_muller(uniform[count:].reshape(1, _BLOCK)).reshape(-1)
    return out.reshape(shape)


class NumpyTorchNoise(genai.Generator):
    """A genai generator that draws what ``TorchGenerator(seed)`` draws, without torch."""

    def __init__(self, seed: int):
        super().__init__()
        self.state = np.random.RandomState(seed)

    def randn_tensor(self, shape: Any) -> ov.Tensor:
        return ov.Tensor(torch_randn(self.state, tuple(int(d) for d in shape)))

    def next(self) -> float:
        raise NotImplementedError("genai's image pipelines draw noise with randn_tensor only")

    def seed(self, new_seed: int) -> None:
        self.state = np.random.RandomState(new_seed)


def check_noise(kind: str) -> None:
    """Fail at engine start, not in the first job, when the noise source cannot work here."""
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise source {kind!r}; valid: {', '.join(NOISE_KINDS)}")
    if kind == "torch" and importlib.util.find_spec("torch") is None:
        raise ConfigError("noise 'torch' needs torch (pip install torch==2.13.0, CPU build); or use noise 'numpy'")


def generator(kind: str, seed: int) -> Any:
    """A fresh genai generator for one image."""
    return genai.TorchGenerator(seed) if kind == "torch" else NumpyTorchNoise(seed)
