"""Image files: the A1111 ``parameters`` layout (parsed back as A1111 parses it), PNG chunks, the sidecar."""

from __future__ import annotations

import io
import json
import re
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ovbatch.tasks.imagegen.formats import (
    a1111_parameters,
    parameters_of,
    png_bytes,
    read_parameters,
    sampler_name,
    sidecar_json,
)
from ovbatch.tasks.imagegen.spec import ImageJob, LoraSpec

MODEL_SHA = "abcdef1234" + "5" * 54
STYLE_SHA = "0123456789ab" + "c" * 52
GRAIN_SHA = "ba9876543210" + "d" * 52

# A1111's modules/infotext_utils.py: the last line is ``key: value`` pairs, a value JSON-quoted when it
# holds a comma, colon or newline; the lines before are the prompt, then ``Negative prompt: ...``.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, params) as A1111's ``parse_generation_parameters`` reads them."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:") :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    params = {key: json.loads(value) if value[:1] == '"' else value for key, value in _PARAM.findall(last)}
    return "\n".join(prompt), "\n".join(negative), params


def parameters(**changes: Any) -> str:
    args: dict[str, Any] = {
        "prompt": "a red fox in snow",
        "negative_prompt": "blurry",
        "steps": 4,
        "sampler": "LCM",
        "cfg_scale": 1.0,
        "seed": 42,
        "width": 512,
        "height": 768,
        "model_name": "lcm@3",
        "model_hash": MODEL_SHA,
    }
    return a1111_parameters(**(args | changes))


def make_job(**changes: Any) -> ImageJob:
    fields: dict[str, Any] = {
        "batch_id": "b-1",
        "job_id": "j-1",
        "display": "prompts.csv:2 seed 42",
        "relpath": "0001-42-a-red-fox.png",
        "model": "lcm@3",
        "device": "CPU",
        "out_url": "file:///tmp/out",
        "row": 1,
        "source": "prompts.csv:2",
        "model_digest": MODEL_SHA,
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 4,
        "guidance": 1.5,
        "width": 512,
        "height": 768,
        "scheduler": "EULER_ANCESTRAL_DISCRETE",
        "loras": (LoraSpec(model="style@2", digest=STYLE_SHA, alpha=0.8),),
    }
    return ImageJob(**(fields | changes))


def test_exact_layout() -> None:
    text = parameters(loras=[("style@2", 0.8), ("grain", 1.0)], lora_hashes={"style@2": STYLE_SHA, "grain": GRAIN_SHA})
    assert text == (
        "a red fox in snow <lora:style@2:0.8> <lora:grain:1>\n"
        "Negative prompt: blurry\n"
        "Steps: 4, Sampler: LCM, CFG scale: 1.0, Seed: 42, Size: 512x768, Model hash: abcdef1234, Model: lcm@3, "
        'Lora hashes: "style@2: 0123456789ab, grain: ba9876543210"'
    )


def test_no_negative_prompt_no_negative_line() -> None:
    assert parameters(negative_prompt="") == (
        "a red fox in snow\n"
        "Steps: 4, Sampler: LCM, CFG scale: 1.0, Seed: 42, Size: 512x768, Model hash: abcdef1234, Model: lcm@3"
    )


def test_unknown_sampler_is_left_out_and_cfg_is_a_float() -> None:
    last = parameters(sampler=None, cfg_scale=7).splitlines()[-1]
    assert last == "Steps: 4, CFG scale: 7.0, Seed: 42, Size: 512x768, Model hash: abcdef1234, Model: lcm@3"


def test_a1111_key_order() -> None:
    _, _, params = parse_a1111(parameters(loras=[("s", 0.5)], lora_hashes={"s": STYLE_SHA}))
    expected = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Lora hashes"]
    assert list(params) == expected


def test_parses_back_as_a1111_reads_it() -> None:
    text = parameters(
        prompt="a (red:1.2) fox, snow\nsecond line",
        negative_prompt="blurry, lowres: bad",
        model_name="odd, name: v2",
        seed=2**64 - 1,
        loras=[("sty:le,x", 0.25)],
        lora_hashes={"sty:le,x": STYLE_SHA},
    )
    prompt, negative, params = parse_a1111(text)
    assert prompt == "a (red:1.2) fox, snow\nsecond line <lora:sty:le,x:0.25>", "multi-line prompts stay whole"
    assert negative == "blurry, lowres: bad"
    assert params == {
        "Steps": "4",
        "Sampler": "LCM",
        "CFG scale": "1.0",
        "Seed": str(2**64 - 1),
        "Size": "512x768",
        "Model hash": "abcdef1234",
        "Model": "odd, name: v2",  # quoted on the way out, so its comma and colon do not split it
        "Lora hashes": "stylex: 0123456789ab",  # A1111 drops : and , from a LoRA's name here
    }


def test_sampler_names() -> None:
    assert [sampler_name(s) for s in ("LCM", "EULER_ANCESTRAL_DISCRETE", "EULER_DISCRETE", "PNDM", None)] == [
        "LCM",
        "Euler a",
        "Euler",
        "PLMS",
        None,
    ]
    assert sampler_name("NEW_ONE") == "NEW_ONE", "a scheduler without an A1111 name keeps its own"
    assert sampler_name(None, "LCMScheduler") == "LCM", "no scheduler asked: the model's own class names it"
    assert sampler_name("DDIM", "LCMScheduler") == "DDIM", "the job's scheduler wins over the model's"
    assert sampler_name(None, "UniPCMultistepScheduler") == "UniPCMultistep"


def pixels(height: int = 24, width: int = 40) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, read by hand: what the file holds, not what Pillow makes of it."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    found, at = [], 8
    while at < len(png):
        size = int.from_bytes(png[at : at + 4], "big")
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + size]
        crc = int.from_bytes(png[at + 8 + size : at + 12 + size], "big")
        assert zlib.crc32(kind + data) == crc, f"bad CRC on {kind!r}"
        found.append((kind, data))
        at += 12 + size
    return found


def test_png_keeps_pixels_and_parameters_in_text_chunk() -> None:
    image, text = pixels(), parameters()
    png = png_bytes(image, text)
    assert read_parameters(png) == text
    assert (b"tEXt", b"parameters\x00" + text.encode("latin-1")) in chunks(png), "A1111 reads a tEXt chunk"
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.mode == "RGB" and decoded.size == (40, 24)
        assert np.array_equal(np.asarray(decoded), image), "PNG must be lossless"


def test_text_beyond_latin1_goes_in_itxt() -> None:
    text = parameters(prompt="東京の夜, café")
    png = png_bytes(pixels(), text)
    assert read_parameters(png) == text
    assert any(kind == b"iTXt" and data.startswith(b"parameters\x00") for kind, data in chunks(png)), chunks(png)


def test_png_of_a_strided_view() -> None:
    image = pixels(24, 80)[:, ::2]  # not contiguous
    with Image.open(io.BytesIO(png_bytes(image, "x"))) as decoded:
        assert np.array_equal(np.asarray(decoded), image)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)],
    ids=["grey", "rgba", "float"],
)
def test_png_refuses_other_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="pixels must be uint8 height x width x 3"):
        png_bytes(bad, "x")


def test_read_parameters_without_chunk() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="no 'parameters' text chunk"):
        read_parameters(buffer.getvalue())


def test_parameters_of_a_job() -> None:
    prompt, negative, params = parse_a1111(parameters_of(make_job()))
    assert (prompt, negative) == ("a red fox <lora:style@2:0.8>", "blurry")
    assert params == {
        "Steps": "4",
        "Sampler": "Euler a",
        "CFG scale": "1.5",
        "Seed": "42",
        "Size": "512x768",
        "Model hash": "abcdef1234",
        "Model": "lcm@3",
        "Lora hashes": "style@2: 0123456789ab",
    }
    _, _, plain = parse_a1111(parameters_of(make_job(scheduler=None, loras=())))
    assert "Sampler" not in plain and "Lora hashes" not in plain, plain
    _, _, own = parse_a1111(parameters_of(make_job(scheduler=None), model_scheduler="PNDMScheduler"))
    assert own["Sampler"] == "PLMS", f"the model's own PNDM scheduler is A1111's PLMS: {own}"


def test_sidecar_has_every_parameter() -> None:
    job = make_job()
    doc = json.loads(sidecar_json(job, {"text_encode_s": 0.0123456, "denoise_s": 1.5}, 1.61234567))
    assert doc == {
        "job_id": "j-1",
        "batch_id": "b-1",
        "row": 1,
        "source": "prompts.csv:2",
        "image": "0001-42-a-red-fox.png",
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 4,
        "guidance": 1.5,
        "width": 512,
        "height": 768,
        "scheduler": "EULER_ANCESTRAL_DISCRETE",
        "sampler": "Euler a",
        "model": {"ref": "lcm@3", "name": "lcm", "version": "3", "sha256": MODEL_SHA},
        "loras": [{"ref": "style@2", "name": "style", "version": "2", "sha256": STYLE_SHA, "alpha": 0.8}],
        "device": "CPU",
        "timings_s": {"text_encode_s": 0.0123, "denoise_s": 1.5},
        "processing_s": 1.6123,
        "parameters": parameters_of(job),
    }


def test_sidecar_is_utf8_json_text() -> None:
    data = sidecar_json(make_job(prompt="東京"), {}, 0.0)
    assert data.endswith(b"}\n") and "東京".encode() in data, "UTF-8, not \\u escapes, one trailing newline"
