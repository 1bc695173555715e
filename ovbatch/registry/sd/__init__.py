"""Stable Diffusion support files: the CLIP BPE vocabulary and helpers that rebuild tokenizers from it."""
