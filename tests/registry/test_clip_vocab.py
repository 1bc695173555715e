"""The CLIP tokenizer rebuilt from the committed BPE merges matches Stable Diffusion 1.x's, id for id."""

from __future__ import annotations

import pytest

from ovbatch.registry.sd.clip_vocab import BOS, EOS, N_MERGES, VOCAB_SIZE, clip_merges, clip_tokenizer, clip_vocab

pytestmark = pytest.mark.timeout(60)


def test_vocabulary_has_clips_ids() -> None:
    vocab = clip_vocab()
    assert len(vocab) == VOCAB_SIZE == 49_408
    assert len(clip_merges()) == N_MERGES
    assert (vocab[BOS], vocab[EOS]) == (49_406, 49_407)
    assert vocab["!"] == 0 and vocab["!</w>"] == 256


def test_tokenizer_encodes_like_sd_and_truncates_at_77() -> None:
    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    long = tokenizer("word " * 200, truncation=True).input_ids
    assert len(long) == 77 and long[-1] == 49407
