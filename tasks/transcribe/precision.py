"""Whisper's inference precision on CPU: bf16 first and f32 where it doubts, for float versions; the
plugin's default for quantized ones.

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
their bias drop it, so the encoder's linear layers could not be kept in f32 alone). But the loss is
not spread over the windows either: 7 of the 10 clips bf16 got worse, holding 24 of its 28 extra
errors there, had a greedy text whose average log-probability was low (below -0.73; the clip bf16
derailed: -0.91; the set's median -0.50; benchmarks/recheck_probe.py). So ``recheck`` (what
"auto" picks for float versions where the device's default is bf16) compiles the encoder and
decoder twice, bf16 and f32: every window is decoded in bf16, and the
windows whose greedy text's average log-probability is below ``EngineConfig.recheck_logprob`` (or
that would fall back to sampling) are encoded and decoded again in f32, which gives them exactly
f32's text. On the 240 clips that redid 38 windows of 240 (16 %) and left the errors at f32's
(569; a rerun on another VM, after doubted windows began to wait for each other: 570, as a window's
f32 text can follow its batch's composition; benchmarks/RESULTS.md, "bf16 first, f32 where it
doubts"). Where the device's default is
already f32 (no BF16), "auto" compiles once, in f32. Quantized versions (``ovbatch quantize``,
manifest precision int8/int4) keep the plugin's default: the INT8-hybrid version made 584 errors
in bf16 and 592 in f32, in 20.6 and 24.3 s; on an AMX Xeon, f32 for its float parts helped on one
calibration split and hurt on the other (benchmarks/RESULTS.md, "Which part of the INT8 encoder
loses words"), and the recipe that keeps encoder layer 0 in float loses nothing in bf16. Its
quantize gate measures the float parent in f32 (``whisper_config``), what "recheck" matches.
``f32`` compiles float versions once in f32; ``device`` (or ``bf16``) takes the plugin's default
back for every version.
"""

from __future__ import annotations

from typing import Any

QUANTIZED = ("int8", "int4")
CAREFUL_ROLES = ("openvino_encoder_model.xml", "openvino_decoder_model.xml")


def whisper_config(config: dict[str, Any], device: str, precision: str, model_precision: str = "") -> dict[str, Any]:
    """``config`` with the inference precision hint for a Whisper version whose weights are
    ``model_precision`` (its manifest's) on ``device``; a hint the config already holds wins, and
    ``device`` leaves the plugin's default."""
    if precision == "auto":
        precision = "device" if model_precision in QUANTIZED else "f32"
    if precision == "recheck":
        precision = "f32"
    if precision == "device" or "INFERENCE_PRECISION_HINT" in config or not device.startswith("CPU"):
        return dict(config)
    return {**config, "INFERENCE_PRECISION_HINT": precision}


def device_default(core: Any, device: str) -> str:
    """The device's own inference precision ("bf16", "f32", ...; "" where it has no such property)."""
    try:
        value = core.get_property(device, "INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return ""
    return str(value.to_string() if hasattr(value, "to_string") else value).lower()


def whisper_configs(
    config: dict[str, Any], device: str, precision: str, model_precision: str = "", default: str = ""
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config a Whisper version compiles with and, for ``recheck``, the config of its careful
    (f32) encoder and decoder, else None. ``default``: the device's own precision
    (``device_default``); "auto" rechecks float versions where it is bf16. A hint the config
    already holds wins (no careful copy)."""
    if precision == "auto" and model_precision not in QUANTIZED:
        precision = "recheck"
    if precision != "recheck":
        return whisper_config(config, device, precision, model_precision), None
    if not device.startswith("CPU") or "INFERENCE_PRECISION_HINT" in config:
        return dict(config), None
    if default != "bf16":  # f32 is already the fast precision: one copy, in f32
        return {**config, "INFERENCE_PRECISION_HINT": "f32"}, None
    return dict(config), {**config, "INFERENCE_PRECISION_HINT": "f32"}


def load_whisper_models(load: Any, timings: Any = None) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """Decrypt and compile the Whisper version of ``load`` (an ``EngineLoad``) as this module's rules
    say for the worker's precision setting, its manifest's weights and the device's default: the
    decrypted version, its compiled models, and the careful (f32) encoder and decoder or None.
    What transcription workers and pipeline benchmarks both load."""
    from ovbatch.registry.loader import load_and_compile

    precision = load.settings.whisper_precision if load.settings is not None else "auto"
    model_precision = str(load.manifest.get("precision", ""))
    default = device_default(load.core, load.device)
    config, careful_config = whisper_configs(load.config, load.device, precision, model_precision, default)
    version, compiled = load_and_compile(load.registry, load.ref, load.core, load.device, timings, config=config)
    return version, compiled, compile_careful(version, load.core, load.device, careful_config)


def compile_careful(version: Any, core: Any, device: str, config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The version's encoder and decoder compiled again with ``config`` (from the decrypted buffers,
    in memory), or None without one."""
    if config is None:
        return None
    return {role: core.compile_model(version.read_model(core, role), device, config) for role in CAREFUL_ROLES}
