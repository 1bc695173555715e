"""The numpy noise stream against torch's CPU randn, which diffusers seeds images with."""

from __future__ import annotations

import numpy as np
import pytest

from ovbatch.errors import ConfigError
from ovbatch.tasks.imagegen.noise import NumpyTorchNoise, check_noise, torch_randn

pytestmark = pytest.mark.timeout(60)
ULP_TOLERANCE = 1e-6  # torch computes log/sin/cos with SIMD: the last 1-2 float32 bits may differ


@pytest.mark.parametrize("seed", [0, 42, 2**32 - 1])
@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (1, 4, 7, 9), (2, 4, 96, 64)])
def test_numpy_stream_is_torch_randn(seed: int, shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    state = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed)
    for draw in range(3):  # the state must advance as torch's does: LCM draws noise at every step
        ours = torch_randn(state, shape)
        theirs = torch.randn(shape, generator=gen).numpy()
        worst = float(np.abs(ours - theirs).max())
        assert worst < ULP_TOLERANCE, f"seed {seed} shape {shape} draw {draw}: differs from torch by {worst}"


def test_generator_gives_ov_tensors() -> None:
    tensor = NumpyTorchNoise(3).randn_tensor([1, 4, 8, 8])
    assert list(tensor.shape) == [1, 4, 8, 8]
    assert np.array_equal(tensor.data, torch_randn(np.random.RandomState(3), (1, 4, 8, 8)))


def test_small_draws_and_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 values"):
        torch_randn(np.random.RandomState(0), (1, 4, 1, 1))
    with pytest.raises(ConfigError, match="valid: torch, numpy"):
        check_noise("philox")
