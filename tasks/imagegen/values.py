"""The settings of an image row, from CLI text, CSV cells or JSON values, checked without the model.

Every check raises ``InputError`` saying what is wrong and what would be right. JSON values must have
the JSON type the field wants (``"steps": "four"`` is refused as ``got string "four"``); CSV cells are
text and go through ``csv_value`` first. Model-specific limits (the largest side) are checked later.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovbatch.errors import InputError
from ovbatch.registry.refs import ModelRef

FIELDS = ("prompt", "negative_prompt", "seeds", "steps", "guidance", "width", "height", "loras", "scheduler")
# openvino_genai.Scheduler.Type names that Stable Diffusion 1.x / LCM pipelines run (genai 2026.4 builds
# a DDIM scheduler for LMS_DISCRETE, so it is not offered); its AUTO (the model's own) is None here
SCHEDULERS = ("LCM", "DDIM", "EULER_DISCRETE", "EULER_ANCESTRAL_DISCRETE", "PNDM")
MAX_SEED = 2**32 - 1  # genai's TorchGenerator takes a uint32 seed, as torch.Generator().manual_seed does
MAX_SEEDS_PER_ROW = 10_000
MIN_SIDE, MAX_SIDE, SIDE_STEP = 64, 4096, 8
MAX_STEPS = 200
MAX_GUIDANCE = 50.0
MAX_ABS_ALPHA = 10.0
MAX_PROMPT_CHARS = 10_000  # as the job message allows (spec.py)
SEEDS_HINT = "write seeds like 0-3,7"
LORA_HINT = "write name[@version][:alpha]"


@dataclass(frozen=True)
class LoraUse:
    ref: str  # ``name`` or ``name@version``
    alpha: float


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-3, 7"`` -> ``(0, 1, 2, 3, 7)``, in the order given."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise InputError(f"no seeds given: {SEEDS_HINT}")
    spans = [_seed_span(part, text) for part in parts]
    count = sum(high - low + 1 for low, high in spans)
    if count > MAX_SEEDS_PER_ROW:  # counted before the range is made: 0-99999999999 must not fill memory
        raise InputError(f"seeds {text.strip()} make {count} images; at most {MAX_SEEDS_PER_ROW} per prompt")
    return check_seeds(tuple(seed for low, high in spans for seed in range(low, high + 1)))


def check_seeds(seeds: tuple[int, ...]) -> tuple[int, ...]:
    if not seeds:
        raise InputError(f"no seeds given: {SEEDS_HINT}")
    if len(seeds) > MAX_SEEDS_PER_ROW:
        raise InputError(f"{len(seeds)} seeds; at most {MAX_SEEDS_PER_ROW} per prompt")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed {seed} is out of range: seeds are 0 to {MAX_SEED}")
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise InputError(f"seed {seed} is listed twice: a seed makes the same image every time")
        seen.add(seed)
    return seeds


def cli_seeds(seeds: str | None, images_per_prompt: int | None) -> tuple[int, ...]:
    """The default seeds from ``--seeds TEXT`` or ``--images-per-prompt N`` (0..N-1); neither: ``(0,)``."""
    if seeds is not None and images_per_prompt is not None:
        raise InputError("use --seeds or --images-per-prompt, not both (--images-per-prompt 4 is --seeds 0-3)")
    if images_per_prompt is None:
        return parse_seeds(seeds) if seeds is not None else (0,)
    if not 1 <= images_per_prompt <= MAX_SEEDS_PER_ROW:
        raise InputError(f"--images-per-prompt {images_per_prompt}: use 1 to {MAX_SEEDS_PER_ROW}")
    return tuple(range(images_per_prompt))


def parse_lora(text: str) -> LoraUse:
    """``"style@2:0.8"`` -> ``LoraUse("style@2", 0.8)``; without ``:alpha`` the alpha is 1."""
    ref_text, colon, alpha_text = text.strip().rpartition(":")
    if not colon:
        ref_text, alpha_text = alpha_text, "1"
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise InputError(f"LoRA {text.strip()!r}: alpha {alpha_text!r} is not a number ({LORA_HINT})") from None
    ref = lora_ref(ref_text)
    return LoraUse(ref, check_alpha(alpha, ref))


def lora_ref(text: str) -> str:
    """``name`` or ``name@version`` as the registry spells it (``style@02`` -> ``style@2``)."""
    try:
        return str(ModelRef.parse(text.strip()))
    except InputError as exc:
        raise InputError(f"LoRA {text.strip()!r}: {exc} ({LORA_HINT})") from None


def check_alpha(alpha: float, ref: str) -> float:
    if not math.isfinite(alpha) or abs(alpha) > MAX_ABS_ALPHA:
        raise InputError(f"LoRA {ref} alpha {alpha} is out of range: use -{MAX_ABS_ALPHA:g} to {MAX_ABS_ALPHA:g}")
    return alpha


def parse_scheduler(text: str) -> str | None:
    """A ``SCHEDULERS`` name, forgiving case and ``-`` or spaces for ``_``; ``auto`` or nothing is None."""
    name = re.sub(r"[\s-]+", "_", text.strip()).upper()
    if name in ("", "AUTO"):
        return None
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {text.strip()!r}: choose from {', '.join(SCHEDULERS)} or AUTO")
    return name


def number_reasons(width: int, height: int, steps: int, guidance: float, prefix: str = "") -> list[str]:
    """What is wrong with a size, a step count and a guidance; ``prefix="--"`` names CLI options."""
    reasons = [_side_reason(prefix + "width", width), _side_reason(prefix + "height", height)]
    if steps < 1:
        reasons.append(f"{prefix}steps {steps} is too few (use 1 to {MAX_STEPS})")
    elif steps > MAX_STEPS:
        reasons.append(f"{prefix}steps {steps} is absurd (use 1 to {MAX_STEPS}; LCM models need 4 to 8)")
    if not (math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
        reasons.append(f"{prefix}guidance {guidance} is out of range (use 0 to {MAX_GUIDANCE:g})")
    return [reason for reason in reasons if reason]


def nearest(value: int, step: int) -> str:
    """The multiples of ``step`` either side of ``value``, as a hint: ``"496 or 504"``."""
    low = value // step * step
    if low == value:
        return str(value)
    return f"{low} or {low + step}" if low > 0 else str(step)


def _side_reason(label: str, value: int) -> str | None:
    if not MIN_SIDE <= value <= MAX_SIDE:
        return f"{label} {value} is out of range (use {MIN_SIDE} to {MAX_SIDE}, a multiple of {SIDE_STEP})"
    if value % SIDE_STEP:
        return f"{label} {value} is not a multiple of {SIDE_STEP} (use {nearest(value, SIDE_STEP)})"
    return None


def _seed_span(part: str, text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
    if match is None:
        where = f" in {text.strip()!r}" if part != text.strip() else ""
        raise InputError(f"seeds: {part!r}{where} is not a seed or a range a-b ({SEEDS_HINT}; 0 to {MAX_SEED})")
    low, high = match.group(1), match.group(2) or match.group(1)
    for digits in (low, high):
        if len(digits) > 20 or int(digits) > MAX_SEED:  # int() of thousands of digits is refused anyway
            raise InputError(f"seed {digits} is out of range: seeds are 0 to {MAX_SEED}")
    if int(low) > int(high):
        raise InputError(f"seed range {part} runs backwards (write {high}-{low})")
    return int(low), int(high)


# --- one field of a row, from JSON ------------------------------------------------------------------


def parse_field(name: str, value: Any) -> Any:
    """The checked value of field ``name`` (one of ``FIELDS``) from its JSON value (not None)."""
    return _PARSERS[name](value)


def csv_value(name: str, cell: str) -> Any:
    """A CSV cell as the JSON value ``parse_field`` takes: numbers for the numeric fields, else the text."""
    convert = _CSV_NUMBERS.get(name)
    if convert is None:
        return cell
    try:
        return convert(cell.strip())
    except ValueError:
        kind = "a whole number" if convert is int else "a number"
        raise InputError(f"{name} {cell.strip()!r} is not {kind}") from None


def json_type(value: object) -> str:
    """How a JSON value reads in a message: ``string "four"``, ``number 4.5``, ``array``."""
    names = {bool: "boolean", str: "string", int: "number", float: "number", list: "array", dict: "object"}
    name = "null" if value is None else names.get(type(value), type(value).__name__)
    if name not in ("boolean", "string", "number"):
        return name
    shown = json.dumps(value, ensure_ascii=False)
    return f"{name} {shown if len(shown) <= 40 else shown[:37] + '...'}"


def _text(name: str, value: Any, limit: int = MAX_PROMPT_CHARS) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {json_type(value)}")
    if "\x00" in value:
        raise InputError(f"{name} holds a NUL character")
    if len(value.strip()) > limit:
        raise InputError(f"{name} is {len(value.strip())} characters long; at most {limit}")
    return value.strip()


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, got {json_type(value)}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number, got {json_type(value)}")
    return float(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        return parse_seeds(value)
    if isinstance(value, list):
        return check_seeds(tuple(_whole(f"seeds[{i}]", seed) for i, seed in enumerate(value)))
    if isinstance(value, int) and not isinstance(value, bool):
        return check_seeds((value,))
    raise InputError(f'seeds must be a list of whole numbers, one, or a string like "0-3,7"; got {json_type(value)}')


def _loras(value: Any) -> tuple[LoraUse, ...]:
    if isinstance(value, str):
        uses = [parse_lora(text) for text in value.split(";") if text.strip()]
    elif isinstance(value, list):
        uses = [_lora_item(i, item) for i, item in enumerate(value)]
    else:
        raise InputError(f'loras must be a list of "name[@version][:alpha]" or {{name, alpha}}; got {json_type(value)}')
    names = [use.ref.partition("@")[0] for use in uses]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"LoRA {', '.join(twice)} is listed twice; give each once, with its alpha")
    return tuple(uses)


def _lora_item(index: int, item: Any) -> LoraUse:
    if isinstance(item, str):
        return parse_lora(item)
    if not isinstance(item, dict):
        raise InputError(f"loras[{index}] must be a string or an object {{name, alpha}}, got {json_type(item)}")
    unknown = sorted(set(item) - {"name", "alpha"})
    if unknown:
        raise InputError(f"loras[{index}]: unknown field {', '.join(unknown)} (a LoRA has name and alpha)")
    if "name" not in item:
        raise InputError(f"loras[{index}] has no name")
    ref = lora_ref(_text(f"loras[{index}].name", item["name"]))
    return LoraUse(ref, check_alpha(_number(f"loras[{index}].alpha", item.get("alpha", 1.0)), ref))


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "prompt": lambda value: _text("prompt", value),
    "negative_prompt": lambda value: _text("negative_prompt", value),
    "seeds": _seeds,
    "steps": lambda value: _whole("steps", value),
    "guidance": lambda value: _number("guidance", value),
    "width": lambda value: _whole("width", value),
    "height": lambda value: _whole("height", value),
    "loras": _loras,
    "scheduler": lambda value: parse_scheduler(_text("scheduler", value)),
}
_CSV_NUMBERS: dict[str, Callable[[str], Any]] = {"steps": int, "width": int, "height": int, "guidance": float}
