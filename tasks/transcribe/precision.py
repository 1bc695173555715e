"""Whisper's inference precision on CPU: f32 for float versions, the plugin's default for quantized ones.

On CPUs with AVX-512 BF16 OpenVINO infers in bf16 by default. Measured on Whisper base (ovbatch's
engine, greedy, English): on 240 espeak-ng clips of the accuracy set (benchmarks/speech.py,
``make_accuracy_set``) bf16 made 585 word errors against f32's 569 (+0.70 points; worse on 10 clips,
better on 8; a flipped early token derails a whole clip, e.g. "produces twelve thousand bottles" ->
"brand new since 2012"); on a held-out 60-clip set 100 against 94. Per part, to find where:

    encoder f32, decoder bf16            580    KV cache f32 (decoder bf16)         585
    decoder f32, encoder bf16            593    logits MatMul f32                   585
    layer norms (MVN) f32 in the encoder 584    all f32                             569

No single part carries the loss: only f32 everywhere reaches f32's accuracy (the per-node markings
were applied through the IR's ``DisablePrecisionConversion`` rt_info; FullyConnected nodes fused with
their bias drop it, so the encoder's linear layers could not be kept in f32 alone). So "auto" (the
default, ``OVBATCH_WHISPER_PRECISION``) compiles float versions in f32, at a cost in speed: 80 clips
of the set took 51.5 s against bf16's 29.7 s. Quantized versions (``ovbatch quantize``, manifest
precision int8/int4) keep the plugin's default: the INT8-hybrid version made 584 errors in bf16 and
592 in f32, in 20.6 and 24.3 s; on an AMX Xeon, f32 for its float parts helped on one calibration
split and hurt on the other (benchmarks/RESULTS.md, "Which part of the INT8 encoder loses words"),
and the recipe that keeps encoder layer 0 in float loses nothing in bf16. Its quantize gate measures
it the same way. ``device`` (or ``bf16``) takes the old default back for every version.
"""

from __future__ import annotations

from typing import Any

QUANTIZED = ("int8", "int4")


def whisper_config(config: dict[str, Any], device: str, precision: str, model_precision: str = "") -> dict[str, Any]:
    """``config`` with the inference precision hint for a Whisper version whose weights are
    ``model_precision`` (its manifest's) on ``device``; a hint the config already holds wins, and
    ``device`` leaves the plugin's default."""
    if precision == "auto":
        precision = "device" if model_precision in QUANTIZED else "f32"
    if precision == "device" or "INFERENCE_PRECISION_HINT" in config or not device.startswith("CPU"):
        return dict(config)
    return {**config, "INFERENCE_PRECISION_HINT": precision}
