"""Quantization jobs: NNCF recipes with an accuracy gate, results imported as new encrypted versions."""
