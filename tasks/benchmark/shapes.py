"""Input shapes as benchmark_app takes them, and a model's inputs read from its IR XML.

``--shape`` / ``--data-shape`` use benchmark_app's syntax: ``[1,3,224,224]`` for a model with one
input (or the same shape for every input), or ``name[1,80,3000],other[1,4]`` per input. In
``--shape`` a dimension may be ``?``/``-1`` (dynamic) or a range ``1..8``; ``--data-shape`` gives the
concrete shape of the random data for inputs that stay dynamic.

The registry records each model's inputs (``io`` in the manifest, read from the XML at import), so a
dynamic input without a data shape is refused before any job is queued.
"""

from __future__ import annotations

import re
from typing import Any

from ovbatch.errors import BadInputError
from ovbatch.registry.irio import model_io  # noqa: F401  (re-exported: the kind's one place for shapes)

_ENTRY = re.compile(r"\s*([^\[\],]*?)\s*\[([^\]]*)\]\s*(?:,|$)")
_DIM = re.compile(r"^(-1|\?|\d+|\d*\.\.\d*)$")

# OpenVINO IR element types -> numpy dtypes of the random data (as benchmark_app fills it)
NUMPY_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "float32",  # filled as f32 values; OpenVINO converts at the request
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "i16": "int16",
    "i8": "int8",
    "u64": "uint64",
    "u32": "uint32",
    "u16": "uint16",
    "u8": "uint8",
    "boolean": "bool",
}


def parse(spec: str | None, what: str) -> dict[str, list[str]]:
    """``name[1,3,?],x[2]`` -> {"name": ["1","3","?"], "x": ["2"]}; ``[1,3]`` -> {"": ["1","3"]}."""
    if spec is None or not spec.strip():
        return {}
    text, out, pos = spec.strip(), {}, 0
    while pos < len(text):
        m = _ENTRY.match(text, pos)
        if not m or m.end() == pos:
            raise BadInputError(
                f"{what} {spec!r}: use [1,3,224,224] for every input or name[1,80,3000],other[1,4] per input"
            )
        name, dims = m.group(1), [d.strip() for d in m.group(2).split(",") if d.strip()]
        for d in dims:
            if not _DIM.match(d):
                raise BadInputError(
                    f"{what} {spec!r}: dimension {d!r} of {name or 'the input'} is not a number, ? or a range a..b"
                )
        if name in out:
            raise BadInputError(f"{what} {spec!r}: input {name or '[..]'} is given twice")
        out[name] = dims
        pos = m.end()
    return out


def is_static(dims: list[str]) -> bool:
    return all(d.isdigit() for d in dims)


def for_inputs(parsed: dict[str, list[str]], names: list[str], what: str) -> dict[str, list[str]]:
    """Map a parsed spec onto the model's input names (an unnamed shape applies to every input)."""
    if not parsed:
        return {}
    if set(parsed) == {""}:
        return dict.fromkeys(names, parsed[""])
    unknown = [n for n in parsed if n not in names]
    if unknown:
        raise BadInputError(f"{what}: the model has no input {', '.join(unknown)}; its inputs: {', '.join(names)}")
    return dict(parsed)


def dynamic_inputs(io: dict[str, Any], shape: str | None, data_shape: str | None, batch: int | None) -> list[str]:
    """Inputs that stay dynamic after --shape/--batch and have no --data-shape: what a benchmark
    cannot fill with random data."""
    names = [i["name"] for i in io.get("inputs", [])]
    shapes = for_inputs(parse(shape, "--shape"), names, "--shape")
    data = for_inputs(parse(data_shape, "--data-shape"), names, "--data-shape")
    left = []
    for item in io.get("inputs", []):
        dims = list(shapes.get(item["name"], item["shape"]))
        if batch and dims:
            dims[0] = str(batch)
        if not is_static(dims) and item["name"] not in data:
            left.append(item["name"])
    return left


def example(io: dict[str, Any], names: list[str]) -> str:
    """A --data-shape example for the dynamic inputs: each dynamic dimension as 1."""
    by_name = {i["name"]: i for i in io.get("inputs", [])}
    parts = []
    for n in names:
        dims = [d if d.isdigit() else "1" for d in by_name.get(n, {}).get("shape", [])]
        parts.append(f"{n}[{','.join(dims)}]")
    return ",".join(parts)


def describe(io: dict[str, Any], names: list[str]) -> str:
    by_name = {i["name"]: i for i in io.get("inputs", [])}
    return ", ".join(f"{n} [{','.join(by_name.get(n, {}).get('shape', []))}]" for n in names)
