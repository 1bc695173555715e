"""Rebuild a faster-whisper (CTranslate2) Whisper folder as a Hugging Face Whisper folder.

``model.bin`` layout (little-endian; string = u16 length incl. NUL, bytes, NUL): u32 binary
version, string spec name, u32 spec revision, u32 variable count, then per variable: string name,
u8 rank, rank x u32 dims, u8 dtype, u32 byte count, raw bytes; then u32 alias count and
(alias, target) string pairs. The names map one-to-one onto ``WhisperForConditionalGeneration``.
Needs the ``export`` extra (torch, transformers).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ovbatch.errors import CorruptModelError

_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
TIMESTAMP_TOKENS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps


def is_ct2_whisper(folder: Path) -> bool:
    model = folder / "model.bin"
    if not model.is_file():
        return False
    with open(model, "rb") as f:
        head = f.read(32)
    return len(head) > 18 and head[6:17] == b"WhisperSpec"


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise CorruptModelError(f"{self.path}: truncated CTranslate2 model (at byte {self.pos})")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (n,) = self.take("<H")
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw[:-1].decode("utf-8", errors="strict")

    def raw(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CorruptModelError(f"{self.path}: truncated CTranslate2 model (at byte {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` as float32/int arrays, aliases resolved."""
    data = memoryview(path.read_bytes())
    r = _Reader(data, path)
    (version,) = r.take("<I")
    spec = r.string()
    if version != 6 or spec != "WhisperSpec":
        raise CorruptModelError(f"{path}: not a CTranslate2 Whisper model (version {version}, spec {spec!r})")
    r.take("<I")  # spec revision
    (count,) = r.take("<I")
    out: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.take("<B")
        dims = r.take("<" + "I" * rank)
        (dtype_id,) = r.take("<B")
        (nbytes,) = r.take("<I")
        raw = r.raw(nbytes)
        dtype = _DTYPES.get(dtype_id)
        if dtype is None:
            raise CorruptModelError(f"{path}: variable {name} has unknown dtype {dtype_id}")
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype)
        if arr.size != int(np.prod(dims)):
            raise CorruptModelError(f"{path}: variable {name} size does not match its shape {dims}")
        out[name] = arr.reshape(dims)
    (aliases,) = r.take("<I")
    for _ in range(aliases):
        alias, target = r.string(), r.string()
        if target in out:
            out[alias] = out[target]
    return out


def _linear(sd: dict[str, Any], dst: str, var: dict[str, np.ndarray], src: str) -> None:
    sd[f"{dst}.weight"] = var[f"{src}/weight"]
    if f"{src}/bias" in var:
        sd[f"{dst}.bias"] = var[f"{src}/bias"]


def _norm(sd: dict[str, Any], dst: str, var: dict[str, np.ndarray], src: str) -> None:
    sd[f"{dst}.weight"] = var[f"{src}/gamma"]
    sd[f"{dst}.bias"] = var[f"{src}/beta"]


def _split_qkv(sd: dict[str, Any], dst: str, var: dict[str, np.ndarray], src: str, names: list[str]) -> None:
    weights = np.split(var[f"{src}/weight"], len(names), axis=0)
    biases = np.split(var[f"{src}/bias"], len(names), axis=0)
    for name, w, b in zip(names, weights, biases, strict=True):
        sd[f"{dst}.{name}.weight"] = w
        if name != "k_proj":  # Whisper's key projections have no bias; CTranslate2 stores zeros
            sd[f"{dst}.{name}.bias"] = b


def _layer_ids(var: dict[str, np.ndarray], side: str) -> list[int]:
    found = (re.match(rf"{side}/layer_(\d+)/", k) for k in var)
    return sorted({int(m.group(1)) for m in found if m})


def state_dict(var: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 variable names onto ``WhisperForConditionalGeneration`` parameter names."""
    sd: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        for i in _layer_ids(var, side):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _split_qkv(sd, f"{dst}.self_attn", var, f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            _linear(sd, f"{dst}.self_attn.out_proj", var, f"{src}/self_attention/linear_1")
            _norm(sd, f"{dst}.self_attn_layer_norm", var, f"{src}/self_attention/layer_norm")
            if side == "decoder":
                _linear(sd, f"{dst}.encoder_attn.q_proj", var, f"{src}/attention/linear_0")
                _split_qkv(sd, f"{dst}.encoder_attn", var, f"{src}/attention/linear_1", ["k_proj", "v_proj"])
                _linear(sd, f"{dst}.encoder_attn.out_proj", var, f"{src}/attention/linear_2")
                _norm(sd, f"{dst}.encoder_attn_layer_norm", var, f"{src}/attention/layer_norm")
            _linear(sd, f"{dst}.fc1", var, f"{src}/ffn/linear_0")
            _linear(sd, f"{dst}.fc2", var, f"{src}/ffn/linear_1")
            _norm(sd, f"{dst}.final_layer_norm", var, f"{src}/ffn/layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = var[f"{side}/position_encodings/encodings"]
        _norm(sd, f"model.{side}.layer_norm", var, f"{side}/layer_norm")
    for conv in ("conv1", "conv2"):
        _linear(sd, f"model.encoder.{conv}", var, f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = var["decoder/embeddings/weight"]
    sd["proj_out.weight"] = var["decoder/embeddings/weight"]
    return sd


def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def generation_config(ct2_config: dict[str, Any], specials: dict[str, int], layers: int) -> dict[str, Any]:
    """Whisper generation settings (transformers 5 needs lang_to_id/task_to_id for language=/task=)."""
    id_to_token = {v: k for k, v in specials.items()}
    lang_to_id = {id_to_token[i]: i for i in ct2_config["lang_ids"] if i in id_to_token}
    eot = specials["<|endoftext|>"]
    return {
        "alignment_heads": ct2_config.get("alignment_heads", []),
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", [220, eot]),
        "suppress_tokens": ct2_config.get("suppress_ids", []),
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": specials["<|startoftranscript|>"],
        "is_multilingual": len(lang_to_id) > 1,
        "lang_to_id": lang_to_id,
        "task_to_id": {"transcribe": specials["<|transcribe|>"], "translate": specials["<|translate|>"]},
        "no_timestamps_token_id": specials["<|notimestamps|>"],
        "prev_sot_token_id": specials["<|startofprev|>"],
        "max_initial_timestamp_index": 50,
        "max_length": 448,
        "return_timestamps": False,
    }


def rebuild_hf_whisper(src: Path, dst: Path) -> None:
    """Write a Hugging Face Whisper folder (safetensors, configs, tokenizer, processor) into ``dst``."""
    try:
        import torch
        import transformers
        from transformers import (
            AddedToken,
            GenerationConfig,
            WhisperConfig,
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
            WhisperProcessor,
        )
    except ImportError as exc:
        raise CorruptModelError(
            f"importing {src} needs the export extra: pip install 'ovbatch[export]' ({exc})"
        ) from exc
    for needed in ("config.json", "tokenizer.json"):
        if not (src / needed).is_file():
            raise CorruptModelError(f"{src}: CTranslate2 Whisper folder lacks {needed}")
    try:
        ct2_config = json.loads((src / "config.json").read_text())
        tok_json = json.loads((src / "tokenizer.json").read_text())
    except ValueError as exc:
        raise CorruptModelError(f"{src}: config.json or tokenizer.json is not valid JSON: {exc}") from exc
    var = read_ct2(src / "model.bin")
    vocab, d_model = var["decoder/embeddings/weight"].shape
    enc_layers, dec_layers = len(_layer_ids(var, "encoder")), len(_layer_ids(var, "decoder"))
    specials = _special_ids(tok_json)
    dims: dict[str, Any] = dict(
        vocab_size=int(vocab),
        num_mel_bins=int(var["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=int(var["encoder/num_heads"]),
        decoder_attention_heads=int(var["decoder/num_heads"]),
        encoder_ffn_dim=int(var["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(var["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(var["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(var["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=specials["<|startoftranscript|>"],
        bos_token_id=specials["<|endoftext|>"],
        eos_token_id=specials["<|endoftext|>"],
        pad_token_id=specials["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    config = WhisperConfig(**dims)
    model = WhisperForConditionalGeneration(config).eval()
    weights = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state_dict(var).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CorruptModelError(
            f"{src}: weights do not fit Whisper (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.generation_config = GenerationConfig(**generation_config(ct2_config, specials, dec_layers))
    model.save_pretrained(dst)

    tokenizer = transformers.WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))  # type: ignore[attr-defined]
    n_missing = int(vocab) - len(tokenizer)
    if n_missing == TIMESTAMP_TOKENS:  # CTranslate2 exports leave out the timestamp tokens
        tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False) for i in range(n_missing)])
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(dst)
    features.save_pretrained(dst)  # preprocessor_config.json, which openvino_genai reads
