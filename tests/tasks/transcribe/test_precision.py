"""Which precision a Whisper version compiles with, and when it gets a careful (f32) copy."""

from __future__ import annotations

from ovbatch.settings import Settings
from ovbatch.tasks.transcribe.precision import whisper_config, whisper_configs

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def test_auto_rechecks_float_versions_in_f32_where_the_cpu_defaults_to_bf16() -> None:
    default = Settings.from_env({}).whisper_precision
    assert default == "auto"
    threads = {"INFERENCE_NUM_THREADS": 2}
    fast, careful = whisper_configs(threads, "CPU", default, "", "bf16")
    assert fast == threads, "the fast copy keeps the plugin's default (bf16)"
    assert careful == {**threads, **F32}, "doubtful windows are decoded again in f32"
    assert whisper_configs(threads, "CPU", default, "f16", "bf16") == (threads, {**threads, **F32})


def test_auto_compiles_once_where_f32_is_already_the_fast_precision() -> None:
    assert whisper_configs({}, "CPU", "auto", "", "f32") == (F32, None), "no BF16: one copy, in f32"
    assert whisper_configs({}, "CPU", "recheck", "", "f32") == (F32, None)
    assert whisper_configs({}, "CPU", "auto", "", "") == (F32, None), "unknown default: f32, as before"


def test_quantized_versions_other_devices_and_explicit_hints_get_no_careful_copy() -> None:
    assert whisper_configs({}, "CPU", "auto", "int8", "bf16") == ({}, None), "quantized: the plugin's default"
    assert whisper_configs({}, "CPU", "recheck", "int8", "bf16") == ({}, F32), "recheck asked for: every version"
    assert whisper_configs({}, "GPU", "auto", "", "f16") == ({}, None), "only the CPU plugin is rechecked"
    hinted = {"INFERENCE_PRECISION_HINT": "bf16"}
    assert whisper_configs(hinted, "CPU", "auto", "", "bf16") == (hinted, None), "a hint in the config wins"
    assert whisper_configs({}, "CPU", "f32", "", "bf16") == (F32, None)
    assert whisper_configs({}, "CPU", "device", "", "bf16") == ({}, None)
    assert whisper_configs({}, "CPU", "bf16", "", "bf16") == ({"INFERENCE_PRECISION_HINT": "bf16"}, None)


def test_the_single_config_of_the_quantize_gate_measures_float_parents_in_f32() -> None:
    """``whisper_config`` (one config, no careful copy) is what the quantize gate compiles the float
    parent with: f32, whose accuracy "recheck" matches."""
    assert whisper_config({"INFERENCE_NUM_THREADS": 2}, "CPU", "auto") == {"INFERENCE_NUM_THREADS": 2, **F32}
    assert whisper_config({}, "CPU", "recheck") == F32
    assert whisper_config({}, "CPU", "device") == {}, "'device' leaves OpenVINO's own default"
    assert whisper_config({}, "CPU", "auto", "int8") == {}, "quantized versions keep the plugin's default"
    assert whisper_config({}, "CPU", "auto", "f16") == F32
    assert whisper_config({"INFERENCE_PRECISION_HINT": "bf16"}, "CPU", "f32")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert whisper_config({}, "GPU", "f32") == {}, "only the CPU plugin's bf16 default is overridden"


def test_the_cpu_plugin_names_its_default_as_the_configs_expect() -> None:
    """``device_default`` reads OpenVINO's Type (``bfloat16``) as the hint's own name (``bf16``): were
    it anything else, "auto" would silently compile once in f32 on a bf16 CPU."""
    from ovbatch.ov import make_core
    from ovbatch.tasks.transcribe.precision import device_default

    default = device_default(make_core(), "CPU")
    assert default in ("bf16", "f32", "f16"), f"the CPU plugin's default precision read as {default!r}"
