"""Hugging Face folders: exported with optimum-intel, tokenizer and detokenizer by openvino-tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovbatch.errors import CorruptModelError
from ovbatch.registry.loader import decrypt_version, verify
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry

pytestmark = pytest.mark.slow

TEXT = ["the quick brown fox jumps over the lazy dog", "models are encrypted at rest", "hello world"] * 20


def build_tiny_gpt2(folder: Path) -> Path:
    """A real (tiny, random-weight) GPT-2 with a byte-level BPE tokenizer trained here, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_hf_folder_is_exported_with_tokenizers_and_verifies(registry: Registry, tmp_path: Path) -> None:
    src = build_tiny_gpt2(tmp_path / "tiny-gpt2")
    m = registry.import_folder(src, "tiny-gpt2")
    assert (m["kind"], m["source"]["type"]) == ("generic", "huggingface")
    roles = {f["role"] for f in m["files"]}
    assert {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml"} <= roles
    report = verify(registry, ModelRef.parse("tiny-gpt2"), "CPU")
    assert report["models"] == ["openvino_detokenizer.xml", "openvino_model.xml", "openvino_tokenizer.xml"]


def test_decrypted_tokenizer_round_trips_text(registry: Registry, tmp_path: Path) -> None:
    import numpy as np

    from ovbatch.ov import make_core

    registry.import_folder(build_tiny_gpt2(tmp_path / "tiny-gpt2"), "tiny-gpt2")
    version = decrypt_version(registry, ModelRef.parse("tiny-gpt2"))
    core = make_core()
    tokenize = core.compile_model(version.read_model(core, "openvino_tokenizer.xml"), "CPU")
    detokenize = core.compile_model(version.read_model(core, "openvino_detokenizer.xml"), "CPU")
    ids = tokenize(["hello world"])["input_ids"]
    text = detokenize(np.asarray(ids))["string_output"]
    assert list(text) == ["hello world"]


def test_broken_hf_folder_is_a_clear_error(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "broken"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "gpt2"}')
    (src / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CorruptModelError, match="optimum-intel could not export this model"):
        registry.import_folder(src, "broken")
    assert list(registry.store.list()) == []
