"""LoRA adapters as registry entries: kohya and PEFT/diffusers ``.safetensors`` -> one kohya form.

Conventions differ in names and in scale. kohya files (``lora_unet_<path>``, ``lora_te_<path>`` +
``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``) scale ``up @ down`` by alpha / rank; PEFT
and diffusers files (``unet.<path>.lora_A.weight``, ``base_model.model.<path>...``,
``...lora.down.weight``, ``...processor.to_q_lora.down.weight``) by lora_alpha / r from the adapter
config that diffusers writes into the safetensors metadata, or by 1 without one. openvino_genai
reads kohya names only (a ``unet.`` or ``base_model.model.`` prefixed name matches no layer and is
dropped without a word), and it ignores the file's alpha altogether: the update it adds is
``w * up @ down`` for the alpha ``w`` given at generate time (genai src/cpp/src/lora/adapter.cpp,
``collect_applicable_tensors``). So every adapter is stored as kohya names with alpha == rank and
its own scale folded into ``up``: then genai, diffusers and kohya all add ``w * scale * up @ down``.

``check_adapter_matches`` replays how genai pairs adapter modules with a base model's layers
(``lora/names_mapping.cpp`` then a substring search of each MatMul/Convolution node's name) on the
base's IR XML, and also compares shapes, which genai only discovers when compiling.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovbatch.errors import AdapterMismatchError, CorruptModelError, InputError, NotAModelError
from ovbatch.registry import safetensors_io
from ovbatch.registry.refs import ModelRef

ROLE = "adapter.safetensors"
KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
# the tensor name prefix genai's SD pipelines give each component (unet2d_condition_model.cpp, clip_text_model.cpp)
GENAI_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
SDXL_GENAI_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}

_KOHYA = re.compile(r"^(lora_(?:unet|te\d?)_.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_PROCESSOR = re.compile(r"^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_PEFT = re.compile(r"^(.+?)\.(?:lora_(A|B)(?:\.[A-Za-z0-9_]+)?|lora\.(down|up)|lora_linear_layer\.(down|up))\.weight$")
_ALPHA = re.compile(r"^(.+)\.alpha$")
_LYCORIS = {
    r"\.hada_": "LoHa (LyCORIS)",
    r"\.lokr_": "LoKr (LyCORIS)",
    r"\.lora_mid\.": "LoCon with CP decomposition (lora_mid)",
    r"dora_scale$|lora_magnitude_vector": "DoRA",
    r"\.diff(_b)?$": "a full weight difference",
}
_WRAPPERS = ("base_model.model.",)


@dataclass
class _Module:
    target: str  # unet, text_encoder, text_encoder_2
    path: str  # the diffusers/transformers module path, e.g. down_blocks.0.attentions.0.proj_in
    down: np.ndarray | None = None
    up: np.ndarray | None = None
    alpha: float | None = None
    kohya: bool = False  # kohya without an alpha means alpha = rank; PEFT without one, the adapter config's


@dataclass
class ConvertedAdapter:
    tensors: dict[str, np.ndarray]  # kohya names, alpha == rank, scale folded into lora_up
    info: dict[str, Any]  # what the manifest records


# -- reading any supported layout -------------------------------------------------------------
def _unsupported(keys: Iterable[str], path: Path) -> None:
    for key in keys:
        for marker, what in _LYCORIS.items():
            if re.search(marker, key):
                raise NotAModelError(f"{path} is {what}, not a plain LoRA (tensor {key!r}): only LoRA is supported")


def _split_target(module: str) -> tuple[str, str]:
    """(component, module path) of a PEFT/diffusers module name."""
    changed = True
    while changed:
        changed = False
        for wrapper in _WRAPPERS:
            if module.startswith(wrapper):
                module, changed = module[len(wrapper) :], True
    for target in ("text_encoder_2", "text_encoder", "unet"):
        if module.startswith(target + "."):
            return target, module[len(target) + 1 :].removeprefix("base_model.model.")
    return ("text_encoder" if module.startswith("text_model.") else "unet"), module


def _kohya_target(name: str) -> str:
    if name.startswith("lora_unet_"):
        return "unet"
    return "text_encoder_2" if name.startswith("lora_te2_") else "text_encoder"


def _classify(key: str) -> tuple[str, str, str, str, str | None] | None:
    """(kohya module name, component, module path, part: down/up/alpha, layout) of one tensor name."""
    if m := _KOHYA.match(key):
        name, part = m.group(1), m.group(2).removeprefix("lora_").removesuffix(".weight")
        return name, _kohya_target(name), name, part, "kohya"
    if m := _PROCESSOR.match(key):
        proj = "to_out.0" if m.group(2) == "to_out" else m.group(2)
        module, part, layout = f"{m.group(1)}.{proj}", m.group(3), "diffusers-attn-procs"
    elif m := _PEFT.match(key):
        module, layout = m.group(1), ("peft" if m.group(2) else "diffusers-old")
        part = {"A": "down", "B": "up"}.get(m.group(2) or "", m.group(3) or m.group(4) or "")
    elif m := _ALPHA.match(key):
        module, part, layout = m.group(1), "alpha", None
    else:
        return None
    target, path = _split_target(module)
    return KOHYA_PREFIXES[target] + path.replace(".", "_"), target, path, part, layout


def _parse(tensors: dict[str, np.ndarray], path: Path) -> tuple[dict[str, _Module], set[str]]:
    """Modules keyed by their kohya name, and the layouts seen."""
    modules: dict[str, _Module] = {}
    formats: set[str] = set()
    unknown = []
    for key, value in tensors.items():
        found = _classify(key)
        if found is None:
            unknown.append(key)
            continue
        name, target, module_path, part, layout = found
        module = modules.setdefault(name, _Module(target, module_path, kohya=layout == "kohya"))
        formats.update([layout] if layout else [])
        if part == "alpha":
            module.alpha = float(np.asarray(value, dtype=np.float32).reshape(-1)[0])
        else:
            setattr(module, part, value)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise NotAModelError(
            f"{path}: {len(unknown)} tensors are not LoRA weights in kohya (lora_unet_*/lora_te_* with "
            f".lora_down/.lora_up/.alpha) or PEFT/diffusers (*.lora_A/lora_B.weight) form: {shown}"
        )
    return modules, formats


def _peft_scale(module: _Module, rank: int, config: dict[str, Any]) -> float:
    """PEFT's lora_alpha / r (or / sqrt(r) with rsLoRA), with per-module patterns, for one component."""
    alpha = float(config.get(f"{module.target}.lora_alpha", rank))
    for pattern, value in (config.get(f"{module.target}.alpha_pattern") or {}).items():
        if module.path == pattern or module.path.endswith("." + pattern):
            alpha = float(value)
    r = rank
    for pattern, value in (config.get(f"{module.target}.rank_pattern") or {}).items():
        if module.path == pattern or module.path.endswith("." + pattern):
            r = int(value)
    return alpha / (r**0.5 if config.get(f"{module.target}.use_rslora") else r)


def _adapter_config(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    import json

    raw = metadata.get("lora_adapter_metadata")  # what diffusers' save_lora_weights writes
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise CorruptModelError(f"{path}: its lora_adapter_metadata is not JSON ({exc})") from exc
    return config if isinstance(config, dict) else {}


def _fold(name: str, module: _Module, scale: float, path: Path) -> dict[str, np.ndarray]:
    down, up = module.down, module.up
    if down is None or up is None:
        raise CorruptModelError(
            f"{path}: LoRA module {name} has {'no down (A)' if down is None else 'no up (B)'} matrix"
        )
    if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0]:
        raise CorruptModelError(
            f"{path}: LoRA module {name} has shapes down {down.shape} and up {up.shape}, which do not chain"
        )
    if down.ndim == 4 and (down.shape[2:] != (1, 1) or up.shape[2:] != (1, 1)):
        raise NotAModelError(
            f"{path}: LoRA module {name} has a {down.shape[2]}x{down.shape[3]} convolution kernel; openvino_genai "
            "applies only 1x1 (pointwise) convolution LoRAs"
        )
    rank = down.shape[0]
    if scale != 1.0:
        up = (up.astype(np.float32) * np.float32(scale)).astype(up.dtype)
    return {
        f"{name}.lora_down.weight": np.ascontiguousarray(down),
        f"{name}.lora_up.weight": np.ascontiguousarray(up),
        f"{name}.alpha": np.asarray(rank, dtype=np.float32),
    }


def convert_adapter(path: Path) -> ConvertedAdapter:
    """Read a kohya or PEFT/diffusers LoRA file and return it in the stored kohya form."""
    if path.suffix.lower() != ".safetensors":
        raise NotAModelError(
            f"{path}: a LoRA adapter must be a .safetensors file (pickled .ckpt/.pt/.bin are never read)"
        )
    tensors, metadata = safetensors_io.load(path)
    if not tensors:
        raise NotAModelError(f"{path} holds no tensors, so it is no LoRA adapter")
    _unsupported(tensors, path)
    modules, formats = _parse(tensors, path)
    config = _adapter_config(metadata, path)
    out: dict[str, np.ndarray] = {}
    scales, ranks = set(), set()
    for name, module in sorted(modules.items()):
        rank = module.down.shape[0] if module.down is not None else 0
        if module.alpha is not None:
            scale = module.alpha / rank if rank else 1.0
        elif module.kohya:
            scale = 1.0  # sd-scripts and diffusers take a missing kohya alpha as the rank
        else:
            scale = _peft_scale(module, rank, config) if rank else 1.0
        out.update(_fold(name, module, scale, path))
        scales.add(round(scale, 6))
        ranks.add(rank)
    dtypes = sorted({str(v.dtype) for k, v in out.items() if not k.endswith(".alpha")})
    info = {
        "source_format": "+".join(sorted(formats)),
        "ranks": sorted(ranks),
        "targets": sorted({m.target for m in modules.values()}),
        "modules": len(modules),
        "keys": len(out),
        "dtype": dtypes[0] if len(dtypes) == 1 else "mixed",
        "scales_folded": sorted(scales),
    }
    return ConvertedAdapter(out, info)


# -- how genai pairs adapter modules with layers ---------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """A MatMul or Convolution of an IR, with the shape of its constant weight."""

    name: str
    in_features: int
    out_features: int


def ir_layers(xml_text: str) -> list[Layer]:
    """The IR's MatMul/Convolution nodes whose weight input is a constant (maybe through a Convert)."""
    root = ET.fromstring(xml_text)
    layers = {el.get("id"): el for el in root.iter("layer")}
    producer = {(e.get("to-layer"), e.get("to-port")): e.get("from-layer") for e in root.iter("edge")}
    found = []
    for lid, el in layers.items():
        kind = el.get("type")
        if kind not in ("MatMul", "Convolution"):
            continue
        source = producer.get((lid, _port_id(el, 1)))
        for _ in range(4):  # decompression: Const -> Convert (-> Subtract -> Multiply) -> weight
            node = layers.get(source or "")
            if node is None or node.get("type") == "Const":
                break
            source = producer.get((source, _port_id(node, 0)))
        node = layers.get(source or "")
        if node is None or node.get("type") != "Const":
            continue
        dims = _input_dims(el, 1)
        data = el.find("data")
        if kind == "MatMul" and len(dims) == 2:
            transposed = data is not None and data.get("transpose_b") == "true"
            out_f, in_f = (dims[0], dims[1]) if transposed else (dims[1], dims[0])
        elif kind == "Convolution" and len(dims) >= 2:
            out_f, in_f = dims[0], dims[1]
        else:
            continue
        found.append(Layer(el.get("name", ""), in_f, out_f))
    return found


def _port_id(layer: ET.Element, index: int) -> str:
    ports = layer.find("input")
    items = list(ports.iter("port")) if ports is not None else []
    return items[index].get("id", str(index)) if index < len(items) else str(index)


def _input_dims(layer: ET.Element, index: int) -> list[int]:
    ports = layer.find("input")
    items = list(ports.iter("port")) if ports is not None else []
    if index >= len(items):
        return []
    return [int(d.text or "0") for d in items[index].iter("dim") if (d.text or "").lstrip("-").isdigit()]


def _sgm_to_diffusers(names: set[str], layers_per_block: int = 2) -> dict[str, str]:
    """genai's ``maybe_map_sgm_blocks_to_diffusers``: LDM block numbers (input_blocks_4_1_...) to diffusers ones."""
    patterns = ("input_blocks", "middle_block", "output_blocks")
    if not any(p in k for k in names for p in patterns):
        return {}
    inner = ("resnets", "attentions", "upsamplers")
    mapping = {}
    for key in sorted(names):
        if "text" in key:
            continue
        parts = key.split("_")
        if len(parts) < 6 or not (parts[4].isdigit() and parts[5].isdigit()):
            raise ValueError(f"genai cannot map the LDM-style name {key}")
        i, j = int(parts[4]), int(parts[5])
        if "input_blocks" in key:
            block, layer = (i - 1) // (layers_per_block + 1), (i - 1) % (layers_per_block + 1)
            new = [str(block), "downsamplers", "0"] if "op" in key else [str(block), inner[j], str(layer)]
            mapping[key] = "_".join(parts[:4] + new + parts[6:])
        elif "middle_block" in key:
            part = {0: ["resnets", "0"], 1: ["attentions", "0"], 2: ["resnets", "1"]}.get(i)
            if part is None:
                raise ValueError(f"genai cannot map middle block {i} of {key}")
            mapping[key] = "_".join(parts[:4] + part + parts[5:])
        elif "output_blocks" in key:
            block, layer = i // (layers_per_block + 1), i % (layers_per_block + 1)
            mapping[key] = "_".join(parts[:4] + [str(block), inner[j], str(layer) if j < 2 else "0"] + parts[6:])
        else:
            raise ValueError(f"genai does not support the LDM-style layer {key}")
    return mapping


_GENAI_UNET_RULES = (
    (r"input\.blocks", "down_blocks"),
    (r"down\.blocks", "down_blocks"),
    (r"middle\.block", "mid_block"),
    (r"mid\.block", "mid_block"),
    (r"output\.blocks", "up_blocks"),
    (r"up\.blocks", "up_blocks"),
    (r"transformer\.blocks", "transformer_blocks"),
    (r"to\.q", "to_q"),
    (r"to\.k", "to_k"),
    (r"to\.v", "to_v"),
    (r"to\.out\.0", "to_out"),
    (r"proj\.in", "proj_in"),
    (r"proj\.out", "proj_out"),
    (r"emb\.layers", "time_emb_proj"),
)


def genai_name(key: str) -> str:
    """genai's ``_convert_unet_lora_key``: the name it searches the model for (it lacks diffusers'
    LyCORIS rules, so kohya ``time_emb_proj`` and ``conv_shortcut`` names find nothing)."""
    name = re.sub("lora.unet", "lora_unet", key)
    if not name.startswith("lora_unet"):
        return name if "lora_te" in name else "lora_unet." + re.sub(r"\.processor\.", ".", name)
    name = name.replace("_", ".")
    for pattern, replacement in _GENAI_UNET_RULES:
        name = re.sub(pattern, replacement, name)
    if "emb" in name and "time.emb.proj" not in name:
        name = re.sub(r"\.\d+(?=\D*$)", "", name)
    if ".in." in name:
        name = re.sub(r"in\.layers\.2", "conv1", name)
    if ".out." in name:
        name = re.sub(r"out\.layers\.3", "conv2", name)
    if "downsamplers" in name or "upsamplers" in name:
        name = name.replace("op", "conv")
    if "skip" in name:
        name = re.sub(r"skip\.connection", "conv_shortcut", name)
    for pattern, replacement in (("lora.unet", "lora_unet"), ("lora.te", "lora_te"), ("base.model", "base_model")):
        name = re.sub(pattern, replacement, name)
    return name


_GROUP_A = re.compile(r"((.*)[_.](lora[_.](A|down)\.weight))|((.*lora[12])\.(down\.weight))")
_GROUP_B = re.compile(r"((.*)[_.](lora[_.](B|up)\.weight))|((.*lora[12])\.(up\.weight))")


def adapter_modules(keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """genai's grouping of tensor names into modules: module -> (its A/down key, its B/up key)."""
    parts: dict[str, list[str]] = {}
    for key in keys:
        for slot, pattern in ((0, _GROUP_A), (1, _GROUP_B)):
            if m := pattern.fullmatch(key):
                parts.setdefault(m.group(2) or m.group(6), ["", ""])[slot] = key
                break
    return {module: (a, b) for module, (a, b) in parts.items() if a and b}


@dataclass
class MatchReport:
    matched: int  # adapter modules that genai applies to a layer of the right shape
    total: int  # adapter modules
    base_layers: int  # MatMul/Convolution layers with weights in the base's UNet and text encoders
    unmatched: list[str] = field(default_factory=list)
    misfits: list[str] = field(default_factory=list)  # name matches, shape does not: genai fails to compile


def _component_irs(base: Any) -> dict[str, str]:
    if isinstance(base, str):
        return {"text_encoder" if "text_model." in base else "unet": base}
    if isinstance(base, Mapping):
        return {str(k): str(v) for k, v in base.items()}
    roles = set(base.buffers)  # a DecryptedVersion; decrypt_base leaves the weights out
    return {c: base.text(f"{c}/openvino_model.xml") for c in GENAI_PREFIXES if f"{c}/openvino_model.xml" in roles}


def match_report(adapter_keys: Iterable[str] | Mapping[str, Any], base: Any) -> MatchReport:
    """How genai would apply an adapter (its tensor names, or names -> arrays/shapes) to ``base``.

    ``base``: a ``DecryptedVersion`` of an SD pipeline (its XML roles suffice), one IR's XML text, or
    a mapping ``{"unet": xml, "text_encoder": xml}``.
    """
    shapes = {k: _shape(v) for k, v in adapter_keys.items()} if isinstance(adapter_keys, Mapping) else {}
    modules = adapter_modules(shapes or adapter_keys)
    applied, base_layers = _pair_with_layers(list(modules), _component_irs(base))
    report = MatchReport(0, len(modules), base_layers)
    for module in sorted(modules):
        layers = applied.get(module, [])
        down, up = modules[module]
        if not layers:
            report.unmatched.append(module)
        elif not shapes or any(_fits(shapes[down], shapes[up], layer) for layer in layers):
            report.matched += 1
        else:
            name = layers[0].name.split("/")[0]
            report.misfits.append(
                f"{module}: LoRA {shapes[down][1]}->{shapes[up][0]}, "
                f"layer {name} {layers[0].in_features}->{layers[0].out_features}"
            )
    return report


def _pair_with_layers(modules: list[str], irs: dict[str, str]) -> tuple[dict[str, list[Layer]], int]:
    """genai's pairing: each layer takes the first module (in name order) whose normalised name,
    less the component's prefix, is found in the layer's name (dotted, or with dots as underscores)."""
    prefixes = SDXL_GENAI_PREFIXES if "text_encoder_2" in irs else GENAI_PREFIXES
    try:
        sgm = _sgm_to_diffusers(set(modules))
    except ValueError:
        sgm = {m: "" for m in modules}  # genai throws on such an adapter: nothing applies
    normalised = sorted((genai_name(sgm.get(m, m)) if sgm.get(m, m) else "", m) for m in modules)
    applied: dict[str, list[Layer]] = {}
    base_layers = 0
    for component, xml in irs.items():
        prefix = prefixes.get(component, "")
        layers = ir_layers(xml)
        base_layers += len(layers)
        candidates = [(n[len(prefix) :], m) for n, m in normalised if prefix and n.startswith(prefix) and n != prefix]
        for layer in layers:
            variants = (layer.name, layer.name.replace(".", "_"))
            module = next((m for rest, m in candidates if any(rest in v for v in variants)), None)
            if module is not None:
                applied.setdefault(module, []).append(layer)
    return applied, base_layers


def _shape(value: Any) -> tuple[int, ...]:
    """An array's shape, or a shape given as such."""
    return tuple(int(d) for d in getattr(value, "shape", value))


def _fits(down: tuple[int, ...], up: tuple[int, ...], layer: Layer) -> bool:
    return len(down) >= 2 and len(up) >= 2 and down[1] == layer.in_features and up[0] == layer.out_features


def check_adapter_matches(adapter_keys: Iterable[str] | Mapping[str, Any], base: Any) -> tuple[int, int]:
    """(adapter modules genai applies to ``base``, adapter modules); see ``match_report``."""
    report = match_report(adapter_keys, base)
    return report.matched, report.total


_CONTEXT_WIDTHS = {2048: "SDXL", 1024: "SD 2.x", 768: "SD 1.x", 4096: "SD3"}


def _made_for(adapter_keys: Iterable[str] | Mapping[str, Any]) -> str:
    """A guess at the adapter's base model, for the error message."""
    names = " ".join(adapter_keys)
    if isinstance(adapter_keys, Mapping):  # cross-attention key/value inputs are as wide as the text features
        for key, value in adapter_keys.items():
            shape = _shape(value)
            width = shape[1] if len(shape) == 2 else None
            if re.search(r"attn2[._]to_[kv]\W.*(down|lora_A)\.weight$", key) and width in _CONTEXT_WIDTHS:
                return _CONTEXT_WIDTHS[width]
    if "lora_te2_" in names or "lora_te1_" in names or re.search(r"transformer_blocks[._][1-9]", names):
        return "SDXL"
    if "double_blocks" in names or "single_blocks" in names or "single_transformer_blocks" in names:
        return "Flux"
    if "joint_blocks" in names:
        return "SD3"
    if re.search(r"(^|\s)(unet|text_encoder|base_model)\.", names):
        return "this base, but in PEFT names genai ignores: import it with `ovbatch models import --lora`"
    return "another base model, e.g. SDXL"


def require_match(adapter_keys: Mapping[str, Any], base: Any, adapter_label: str, base_label: str) -> MatchReport:
    """``match_report``, raising ``AdapterMismatchError`` when nothing applies or a layer's shape differs."""
    report = match_report(adapter_keys, base)
    if report.base_layers == 0:
        raise AdapterMismatchError(f"{base_label} has no UNet or text encoder layers a LoRA could apply to")
    if report.misfits:
        raise AdapterMismatchError(
            f"LoRA {adapter_label!r} does not fit {base_label}: {len(report.misfits)} of its {report.total} modules "
            f"name layers of other shapes (e.g. {report.misfits[0]}); it was made for "
            f"{_made_for(adapter_keys)}"
        )
    if report.matched == 0:
        raise AdapterMismatchError(
            f"LoRA {adapter_label!r} matches none of the {report.base_layers} layers of {base_label} "
            f"(it was made for {_made_for(adapter_keys)})"
        )
    return report


# -- registry import ----------------------------------------------------------------------------
SD_KINDS = ("stable-diffusion", "lcm")


def decrypt_base(registry: Any, ref: ModelRef) -> Any:
    """The base version's UNet and text encoder IR XML, decrypted in memory (weights stay sealed)."""
    from ovbatch.registry.loader import decrypt_version

    manifest = registry.manifest(ref, verify_mac=True)
    label = f"{manifest['name']}@{manifest['version']}"
    if manifest.get("kind") not in SD_KINDS:
        raise AdapterMismatchError(
            f"base {label} is a {manifest.get('kind')!r} model: LoRA adapters apply to Stable Diffusion pipelines"
        )
    roles = [f"{c}/openvino_model.xml" for c in GENAI_PREFIXES]
    present = [r for r in roles if r in {f["role"] for f in manifest["files"]}]
    return decrypt_version(registry, ModelRef(manifest["name"], manifest["version"]), roles=present)


@contextlib.contextmanager
def prepare(path: Path, name: str, base: Any = None) -> Iterator[Any]:
    """Yield a ``PreparedModel`` folder holding the converted adapter (a temp dir, removed afterwards).

    With ``base`` (``decrypt_base``'s result), refuse an adapter that does not apply to it.
    """
    from ovbatch.registry.sources import PreparedModel

    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file: a LoRA adapter is one .safetensors file")
    converted = convert_adapter(path)
    info = dict(converted.info)
    if base is not None:
        report = require_match(converted.tensors, base, name, str(base.ref))
        # modules genai leaves out (e.g. kohya time_emb_proj): the first few, and how many
        info.update(base=str(base.ref), matched=report.matched, unmatched=report.unmatched[:20])
        info["unmatched_count"] = len(report.unmatched)
    work = Path(tempfile.mkdtemp(prefix="ovbatch-lora-"))
    try:
        (work / ROLE).write_bytes(safetensors_io.dumps(converted.tensors, {"format": "pt"}))
        source = {"type": f"lora-{info['source_format']}", "path": str(path.resolve())}
        precision = {"float16": "fp16", "float32": "fp32"}.get(info["dtype"], info["dtype"])
        yield PreparedModel(work, source, "lora", precision, extra={"lora": info})
    finally:
        shutil.rmtree(work, ignore_errors=True)
