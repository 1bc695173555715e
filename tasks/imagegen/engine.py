"""Text-to-image on openvino_genai (Stable Diffusion 1.x / LCM) from a model decrypted into memory.

``ImageEngine`` owns a decrypted model version and a small pool of genai pipelines built from it.
Each ``generate`` call takes one pipeline for itself (a genai pipeline has one infer request per
model, so two threads must never share one) and makes one image from one seed: genai's
``TorchGenerator(seed)`` draws the noise diffusers draws with ``torch.Generator().manual_seed(seed)``,
so an image can be remade from its seed alone (a batch would draw all latents from one generator).

genai's Python API has no ``clone()`` (and the C++ one refuses pipelines built from components), so
each pool member reads and compiles its own copy of the models: one more compiled copy of the
weights, not of the plaintext, built only when two jobs run at once.

``static_size`` reshapes the models to one size before compiling. Measured on CPU (2 shared cores,
bf16): a 142M-parameter SD-like UNet at 512x512 made an image 5-10 % faster (first UNet step and VAE
decode 15-25 %); the tiny test model 10-20 %. A static Stable Diffusion UNet also fixes its batch:
2 rows with classifier-free guidance (guidance > 1), else 1 (``static_cfg``).

LoRA adapters are declared when the engine is built (genai adds their slots to each graph before
compiling); a request then sets each adapter's weight, 0 for those it does not name, and genai
only updates state tensors: no recompile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import openvino as ov
import openvino_genai as genai

from ovbatch.crypto.stream import wipe
from ovbatch.errors import ConfigError, CorruptModelError
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.tasks.imagegen import lora, noise
from ovbatch.tasks.imagegen.components import ROLES, ModelFiles, build_pipeline, vae_scale_factor
from ovbatch.tasks.imagegen.pool import PipelinePool
from ovbatch.tasks.imagegen.request import EngineShape, GeneratedImage, GenerationAborted, ImageRequest

__all__ = ["GeneratedImage", "GenerationAborted", "ImageEngine", "ImageRequest"]

StepCallback = Callable[[int, int], bool]


class _StepWatcher:
    """genai's step callback. genai calls it on a thread of its own, queued behind the UNet (a stop
    takes effect after the step in flight): an exception must not escape into C++, where it would end
    the process, so it is kept, stops the generation and is raised again in the caller's thread."""

    def __init__(self, on_step: StepCallback | None):
        self.on_step = on_step
        self.stop_requested = False
        self.error: BaseException | None = None

    def __call__(self, step: int, num_steps: int, latent: Any) -> bool:
        if self.on_step is None or self.stop_requested:
            return self.stop_requested
        try:
            self.stop_requested = bool(self.on_step(step + 1, num_steps))
        except BaseException as exc:  # noqa: BLE001  raised again by generate
            self.error, self.stop_requested = exc, True
        return self.stop_requested


def _compile_config(device: str, config: Mapping[str, Any]) -> dict[str, Any]:
    if config.get("CACHE_DIR"):
        raise ConfigError("CACHE_DIR must not be set for image engines: OpenVINO's CPU cache stores plaintext weights")
    out = dict(config)
    if device.split(".")[0] == "CPU":
        # pipelines of one pool (or of two workers) would otherwise be pinned to the same cores: half the throughput
        out.setdefault("ENABLE_CPU_PINNING", False)
    return out


def _timings(metrics: Any) -> dict[str, float]:
    """genai's metrics (milliseconds) as seconds."""
    first, others = metrics.get_first_and_other_unet_infer_duration()
    return {
        "text_encoder": sum(metrics.get_text_encoder_infer_duration().values()) / 1e3,
        "unet_first_step": first / 1e3,
        "unet_other_steps_avg": others / 1e3,
        "vae_decode": metrics.get_vae_decoder_infer_duration() / 1e3,
        "total": metrics.get_generate_duration() / 1e3,
    }


def _owned(data: bytes | np.ndarray) -> np.ndarray:
    """A writable uint8 buffer that the engine may wipe: the caller's decrypted array, or a copy of bytes."""
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.flags.writeable and data.flags.c_contiguous:
        return data.reshape(-1)
    return np.frombuffer(data, np.uint8).copy()


class ImageEngine:
    """A text-to-image model ready to generate on one device; build with ``from_version``."""

    def __init__(
        self,
        files: ModelFiles,
        device: str,
        config: Mapping[str, Any],
        adapters: Mapping[str, bytes | np.ndarray],
        pool_size: int,
        shape: EngineShape,
        noise_kind: str,
    ):
        noise.check_noise(noise_kind)
        self.files, self.device, self.shape, self.noise_kind = files, device, shape, noise_kind
        self.config = _compile_config(device, config)
        # genai reads the adapters from this memory; release wipes it
        self._adapter_buffers = {key: _owned(data) for key, data in adapters.items()}
        self._scales = {key: lora.scale_of(buf, key) for key, buf in self._adapter_buffers.items()}
        self._adapters = {
            key: genai.Adapter(ov.Tensor(buf, shared_memory=True)) for key, buf in self._adapter_buffers.items()
        }
        self._pool = PipelinePool(self._build_pipeline, pool_size)
        self._released = False
        try:
            with self._pool.pipeline():  # build one now: a broken model fails here, not in a job
                pass
        except RuntimeError as exc:  # genai reports C++ failures as RuntimeError, with a source path first
            reason = str(exc).strip().splitlines()[-1]
            raise CorruptModelError(
                f"{files.version.ref}: genai cannot build its pipeline on {device}: {reason}"
            ) from exc

    @classmethod
    def from_version(
        cls,
        version: DecryptedVersion,
        device: str = "CPU",
        config: Mapping[str, Any] | None = None,
        adapters: Mapping[str, bytes | np.ndarray] | None = None,
        *,
        pool_size: int = 1,
        static_size: tuple[int, int] | None = None,
        static_cfg: bool = True,
        noise_kind: str = "torch",
    ) -> ImageEngine:
        """Build an engine that owns ``version`` and the adapter arrays: ``release`` wipes them.

        ``config`` goes to OpenVINO's ``compile_model`` for every model. ``adapters``: LoRA
        safetensors (kohya names) by key. ``static_size`` (width, height) reshapes the models to that
        size; ``static_cfg`` says whether a static Stable Diffusion UNet is shaped for guidance > 1.
        ``noise_kind`` "torch": genai's ``TorchGenerator`` (needs torch); "numpy": the same stream
        without torch (``noise.py``).
        """
        for role in [r for r in version.buffers if r not in ROLES]:  # the VAE encoder etc.: not needed
            wipe(version.buffers.pop(role).data)
        files = ModelFiles.open(version)
        try:
            shape = EngineShape(files.kind, vae_scale_factor(files), static_size, static_cfg, frozenset(adapters or {}))
            return cls(files, device, config or {}, adapters or {}, pool_size, shape, noise_kind)
        except BaseException:
            files.close()
            raise

    def _build_pipeline(self) -> Any:
        pipe = build_pipeline(self.files)
        if self.shape.static_size is not None:
            width, height = self.shape.static_size
            # genai sizes the UNet batch from the guidance: 2 rows with classifier-free guidance, else 1
            pipe.reshape(1, height, width, 7.5 if self.shape.static_cfg else 1.0)
        properties = dict(self.config)
        if self._adapters:
            properties["adapters"] = genai.AdapterConfig([(a, 0.0) for a in self._adapters.values()])
        pipe.compile(self.device, **properties)
        return pipe

    @property
    def pipelines_built(self) -> int:
        return self._pool.built

    @property
    def size_bytes(self) -> int:
        """Memory held, estimated: the plaintext, plus one compiled copy of the weights per pipeline."""
        buffers = self.files.version.buffers
        plaintext = sum(int(b.nbytes) for b in buffers.values())
        weights = sum(int(b.nbytes) for role, b in buffers.items() if role.endswith(".bin"))
        adapters = sum(int(b.nbytes) for b in self._adapter_buffers.values())
        return plaintext + adapters + self._pool.built * weights

    def generate(self, request: ImageRequest, on_step: StepCallback | None = None) -> GeneratedImage:
        """One image for ``request``. ``on_step(done, total)`` runs after each denoising step, on a genai
        thread; returning True stops generation after the step in flight and raises
        ``GenerationAborted``; an exception it raises stops it too and is raised here. genai drops the
        calls still queued when the last step ends, so the last steps may not be reported."""
        self.shape.check(request)
        kwargs = self._generate_kwargs(request)
        watcher = _StepWatcher(on_step)
        with self._pool.pipeline() as pipe:
            pipe.set_scheduler(self.files.scheduler(request.scheduler))
            t0 = time.perf_counter()
            image = pipe.generate(request.prompt, callback=watcher, **kwargs)
            wall_s = time.perf_counter() - t0
            metrics = pipe.get_performance_metrics()
            pixels = np.array(image.data[0]) if len(image.shape) == 4 else None  # a stopped run gives no image
        if watcher.error is not None:
            raise watcher.error
        if watcher.stop_requested or pixels is None:
            steps = len(metrics.raw_metrics.unet_inference_durations)
            raise GenerationAborted(f"image generation stopped after {steps} of {request.steps} steps", steps)
        own = None if request.scheduler else self.files.scheduler_class
        return GeneratedImage(pixels, {**_timings(metrics), "wall": wall_s}, model_scheduler=own)

    def _generate_kwargs(self, request: ImageRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "num_images_per_prompt": 1,
            "generator": noise.generator(self.noise_kind, request.seed),
        }
        if request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        if self._adapters:
            weights = dict(request.adapters)
            # genai ignores the file's alpha / rank: its alpha is the whole scale
            kwargs["adapters"] = genai.AdapterConfig(
                [(a, float(weights.get(key, 0.0)) * self._scales[key]) for key, a in self._adapters.items()]
            )
        return kwargs

    def release(self) -> None:
        """Drop the pipelines (after running generations finish), then wipe the plaintext."""
        if self._released:
            return
        self._released = True
        self._pool.close()
        self._adapters.clear()
        for buf in self._adapter_buffers.values():
            wipe(buf.data)
        self.files.close()
        self.files.version.wipe()
