"""The image job's identity and the worker's view of it: what the job id hashes, which jobs share a
compiled engine, the worker's own limits, and how the engine is compiled on CPU."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ovbatch.errors import InputError
from ovbatch.tasks.imagegen.engine import _compile_config
from ovbatch.tasks.imagegen.job import check_limits
from ovbatch.tasks.imagegen.kind import engine_options
from ovbatch.tasks.imagegen.spec import LoraSpec, image_job_id
from tests.tasks.imagegen.test_formats import make_job

A, B = "a" * 64, "b" * 64
STYLE = LoraSpec(model="style@2", digest=A, alpha=0.8)
BASE: dict[str, Any] = {
    "model_digest": B,
    "loras": (STYLE,),
    "prompt": "a red fox",
    "negative_prompt": "",
    "seed": 42,
    "steps": 4,
    "guidance": 8.0,
    "width": 512,
    "height": 512,
    "scheduler": None,
    "out_url": "file:///out/",
    "relpath": "0001-42-a-red-fox.png",
}


@pytest.mark.parametrize(
    "change",
    [
        {"model_digest": "c" * 64},
        {"loras": ()},
        {"loras": (LoraSpec(model="style@2", digest=A, alpha=0.5),)},  # another alpha
        {"loras": (LoraSpec(model="style@3", digest="d" * 64, alpha=0.8),)},  # another adapter version
        {"prompt": "a red fox."},
        {"negative_prompt": "blurry"},
        {"seed": 43},
        {"steps": 5},
        {"guidance": 7.5},
        {"width": 768},
        {"height": 768},
        {"scheduler": "DDIM"},
        {"out_url": "s3://bucket/out/"},
        {"relpath": "0002-42-a-red-fox.png"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_input_of_an_image_changes_its_job_id(change: dict[str, Any]) -> None:
    assert image_job_id(**BASE) == image_job_id(**BASE), "the same inputs must give the same id"
    assert image_job_id(**{**BASE, **change}) != image_job_id(**BASE), f"{change} must give another job"


def test_a_trailing_slash_on_the_destination_is_the_same_job() -> None:
    assert image_job_id(**{**BASE, "out_url": "file:///out"}) == image_job_id(**BASE)


def test_switching_one_adapters_alpha_keeps_the_compiled_engine() -> None:
    def options(*loras: LoraSpec, **changes: Any) -> dict[str, Any]:
        return engine_options(make_job(loras=loras, **changes))

    half = LoraSpec(model="style@2", digest=A, alpha=0.5)
    assert options(STYLE) == options(half), "one adapter: alphas are set per generation, no recompile"
    assert options(STYLE) != options(), "another adapter set is another engine"
    assert options(STYLE) != options(STYLE, width=768), "another size is another (static-shape) engine"
    assert options(STYLE, guidance=7.5) != options(STYLE, guidance=1.0), "no guidance: a 1-row UNet"
    other = LoraSpec(model="ink@1", digest=B, alpha=1.0)
    assert options(STYLE, other) == options(other, STYLE), "the adapters' order does not matter"
    assert options(STYLE, other) != options(half, other), "two adapters: genai keeps the first alphas"


def test_the_workers_limits_hold_whatever_the_message_says() -> None:
    settings = SimpleNamespace(max_image_side=1024, max_image_steps=50)
    check_limits(make_job(width=1024, height=1024, steps=50), settings)
    with pytest.raises(InputError, match="2048x512 is over this worker's limit of 1024 px a side"):
        check_limits(make_job(width=2048, height=512), settings)
    with pytest.raises(InputError, match="51 steps is over this worker's limit of 50"):
        check_limits(make_job(steps=51), settings)


def test_cpu_engines_are_not_pinned_and_never_cache_plaintext() -> None:
    assert _compile_config("CPU", {})["ENABLE_CPU_PINNING"] is False, "two pipelines would share cores"
    assert _compile_config("CPU", {"ENABLE_CPU_PINNING": True})["ENABLE_CPU_PINNING"] is True, "a user's choice"
    assert "ENABLE_CPU_PINNING" not in _compile_config("GPU", {})
    with pytest.raises(Exception, match="CACHE_DIR must not be set"):
        _compile_config("CPU", {"CACHE_DIR": "/tmp/x"})
