"""The diffusion gate: the quantized pipeline's images against the parent's, same prompts and seeds.

Both are made by the project's ``ImageEngine`` (openvino_genai, as ``ovbatch txt2img`` makes them),
each from its own private copy of the plaintext files (the engine wipes what it is given), so the gate
judges what users will get. Metrics per image, on 8-bit RGB:

* PSNR in dB over the three channels (``MAX_PSNR_DB`` for identical images: JSON has no infinity);
* SSIM as Wang et al. 2004 define it ("Image quality assessment: from error visibility to structural
  similarity"): on luma (ITU-R BT.601), an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, the map's mean without the 5-pixel border. scikit-image is not a dependency;
  this is its ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255)``, written with scipy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovbatch.jobs import Watch
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.tasks.quantize.diffusion import Generation

MAX_PSNR_DB = 100.0
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5
# workers install no torch: the engine draws torch.randn's noise with numpy, as txt2img workers do
NOISE = "numpy"


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return MAX_PSNR_DB if mse == 0 else min(MAX_PSNR_DB, 10.0 * float(np.log10(255.0**2 / mse)))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two RGB uint8 images on their luma (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    x, y = _luma(a), _luma(b)

    def blur(img: np.ndarray) -> np.ndarray:
        return gaussian_filter(img, SSIM_SIGMA, truncate=SSIM_RADIUS / SSIM_SIGMA, mode="reflect")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = SSIM_RADIUS
    return float(smap[r:-r, r:-r].mean()) if min(smap.shape) > 2 * r else float(smap.mean())


def private_version(manifest: dict[str, Any], files: Mapping[str, Any]) -> DecryptedVersion:
    """A ``DecryptedVersion`` over copies of the image pipeline's files, for an engine to own and wipe."""
    from ovbatch.tasks.imagegen.components import ROLES

    return DecryptedVersion(dict(manifest), {r: np.frombuffer(files[r], np.uint8).copy() for r in ROLES})


@dataclass
class Images:
    """One model's images of the gate's (prompt, seed) pairs, in order, and the seconds each took."""

    pixels: list[np.ndarray]
    seconds: list[float]

    @property
    def seconds_per_image(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else 0.0

    @property
    def best_s(self) -> float:
        """The fastest image: the parent's images are all made before the quantized version's, so
        other work on the machine during one of the two moves the means; it only ever slows an
        image, so the best of each is the steadier comparison."""
        return min(self.seconds) if self.seconds else 0.0


def pairs(prompts: list[str], gen: Generation, limit: int) -> list[tuple[str, int]]:
    """The (prompt, seed) pairs the gate generates: each prompt with seeds 0 .. seeds-1, the first ``limit``."""
    return [(p, s) for p in prompts for s in range(gen.seeds)][:limit]


def generate(
    version: DecryptedVersion,
    device: str,
    config: dict[str, Any],
    gen: Generation,
    todo: list[tuple[str, int]],
    watch: Watch,
    on_image: Callable[[int], None],
) -> Images:
    """Every pair's image from an engine that owns ``version`` (released, so wiped, at the end)."""
    from ovbatch.tasks.imagegen.engine import ImageEngine, ImageRequest

    engine = ImageEngine.from_version(
        version, device, config, static_size=(gen.size, gen.size), static_cfg=gen.cfg, noise_kind=NOISE
    )
    try:
        out: list[np.ndarray] = []
        seconds: list[float] = []

        def on_step(_done: int, _total: int) -> bool:
            watch.check("evaluation images were being generated")
            return False

        for prompt, seed in todo:
            watch.check("evaluation images were being generated")
            request = ImageRequest(
                prompt=prompt,
                seed=seed,
                steps=gen.steps,
                guidance=gen.guidance,
                width=gen.size,
                height=gen.size,
            )
            t0 = time.perf_counter()
            out.append(engine.generate(request, on_step).pixels)
            seconds.append(time.perf_counter() - t0)
            on_image(1)
        return Images(out, seconds)
    finally:
        engine.release()


def metrics(parent: Images, child: Images) -> dict[str, Any]:
    """PSNR and SSIM of each child image against the parent's; the gate's metric is SSIM in points
    (100 x SSIM, 100 for the parent itself), so ``max_drop`` is in SSIM points like other gates' drops."""
    psnrs = [psnr_db(p, c) for p, c in zip(parent.pixels, child.pixels, strict=True)]
    ssims = [ssim(p, c) for p, c in zip(parent.pixels, child.pixels, strict=True)]
    mean_ssim = float(np.mean(ssims))
    return {
        "metric": "ssim_points",
        "images": len(psnrs),
        "before": 100.0,
        "after": round(100.0 * mean_ssim, 3),
        "drop": round(100.0 * (1.0 - mean_ssim), 3),
        "psnr_db": {"mean": round(float(np.mean(psnrs)), 3), "min": round(min(psnrs), 3)},
        "ssim": {"mean": round(mean_ssim, 5), "min": round(min(ssims), 5)},
        "speed": {
            "parent_s_per_image": round(parent.seconds_per_image, 4),
            "quantized_s_per_image": round(child.seconds_per_image, 4),
            "parent_best_s": round(parent.best_s, 4),
            "quantized_best_s": round(child.best_s, 4),
            "speedup_best": round(parent.best_s / child.best_s, 3) if child.best_s else None,
        },
    }


def gate(metrics: dict[str, Any], max_drop: float, min_psnr_db: float) -> dict[str, Any]:
    """Passes when the mean SSIM lost at most ``max_drop`` points and the mean PSNR is at least ``min_psnr_db``."""
    problems = []
    if metrics["drop"] > max_drop:
        problems.append(f"mean SSIM {metrics['ssim']['mean']:.4f} (drop {metrics['drop']:.2f} points > {max_drop:g})")
    if metrics["psnr_db"]["mean"] < min_psnr_db:
        problems.append(f"mean PSNR {metrics['psnr_db']['mean']:.2f} dB < {min_psnr_db:g} dB")
    if problems:
        reason = f"gate failed on images against the parent's: {'; '.join(problems)}"
        return {"passed": False, "reason": reason, "min_psnr_db": min_psnr_db}
    reason = "images within the SSIM drop and above the PSNR floor"
    return {"passed": True, "reason": reason, "min_psnr_db": min_psnr_db}
