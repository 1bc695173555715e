"""What an image engine is asked for and what it gives back, and the checks a request must pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ovbatch.errors import InputError, OvbatchError
from ovbatch.tasks.imagegen.components import scheduler_type

MAX_SEED = 2**32 - 1  # genai's generators take a uint32 seed


class GenerationAborted(OvbatchError):
    """Raised by ``ImageEngine.generate`` when ``on_step`` returned True (cancel, time limit, shutdown)."""

    def __init__(self, message: str, steps_done: int):
        super().__init__(message)
        self.steps_done = steps_done


@dataclass(frozen=True, kw_only=True)
class ImageRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str | None = None  # a name in components.SCHEDULERS; None: the model's own
    # (adapter key, weight): the LoRA scale as diffusers and kohya mean it; loaded adapters not named get 0
    adapters: tuple[tuple[str, float], ...] = ()


@dataclass
class GeneratedImage:
    pixels: np.ndarray  # uint8, height x width x 3 (RGB)
    timings_s: dict[str, float] = field(default_factory=dict)
    model_scheduler: str | None = None  # the model's own scheduler class, when the request named none


@dataclass(frozen=True)
class EngineShape:
    """What a built engine can make: the checks genai would otherwise fail with a C++ assertion."""

    kind: str  # "lcm" or "stable-diffusion"
    scale: int  # pixels per latent cell
    static_size: tuple[int, int] | None  # (width, height) the models were reshaped to; None: any
    static_cfg: bool  # a static Stable Diffusion UNet holds 2 rows (guidance > 1) or 1
    adapters: frozenset[str]

    def check(self, request: ImageRequest) -> None:
        if not 0 <= request.seed <= MAX_SEED:
            raise InputError(f"seed {request.seed} is out of range: 0 to {MAX_SEED}")
        if request.steps < 1:
            raise InputError(f"steps must be at least 1, not {request.steps}")
        self._check_size(request)
        self._check_guidance(request)
        scheduler_type(request.scheduler)  # UnknownSchedulerError lists the valid names
        unknown = sorted({key for key, _ in request.adapters} - self.adapters)
        if unknown:
            known = ", ".join(sorted(self.adapters)) or "none"
            raise InputError(f"LoRA adapters {unknown} were not loaded with this model (loaded: {known})")

    def _check_size(self, request: ImageRequest) -> None:
        width, height, scale = request.width, request.height, self.scale
        if width % scale or height % scale or min(width, height) < 2 * scale:
            raise InputError(f"width and height must be multiples of {scale}, at least {2 * scale}")
        if self.static_size is not None and (width, height) != self.static_size:
            w, h = self.static_size
            raise InputError(f"this engine makes {w}x{h} images, not {width}x{height}")

    def _check_guidance(self, request: ImageRequest) -> None:
        lcm = self.kind == "lcm"
        cfg = request.guidance > 1.0
        if lcm and request.scheduler not in (None, "lcm"):
            raise InputError(f"an LCM model runs with the lcm scheduler only, not {request.scheduler!r}")
        if request.negative_prompt and (lcm or not cfg):
            raise InputError("a negative prompt needs a Stable Diffusion model and guidance above 1")
        if self.static_size is not None and not lcm and cfg != self.static_cfg:
            wanted = "above 1" if self.static_cfg else "1 or less"
            raise InputError(f"this engine is shaped for guidance {wanted}, not {request.guidance}")
