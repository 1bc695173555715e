"""Recipes for any OpenVINO IR (``generic`` registry models): every model of the version is
quantized; calibration and evaluation samples are ``.npz`` files of input tensors.

The gate's metric is output agreement with the parent on the evaluation samples:
``100 x (1 - mean relative L2 error)`` over every output, 100 for the parent itself. Without an
evaluation set, seeded random inputs from the model's static shapes are used (and the report says so).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from ovbatch.errors import BadInputError
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.tasks.quantize.datasets import Dataset

RANDOM_SAMPLES = 16


def samples_for(model: Any, dataset: Dataset, open_input: Callable[[str], Any]) -> list[dict[str, np.ndarray]]:
    """One input dict per ``.npz`` item, keyed by the model's input names, checked against its shapes."""
    names = [p.get_any_name() for p in model.inputs]
    out = []
    for item in dataset.items:
        assert item.url is not None
        with open_input(item.url) as raw:
            data = raw.read()
        try:
            arrays = np.load(io.BytesIO(data), allow_pickle=False)
            files = list(arrays.files)
            by_name = {n: arrays[n] for n in names if n in files}
            if len(by_name) < len(names):
                positional = [f for f in files if f.startswith("arr_")]
                if len(positional) == len(names):
                    by_name = {
                        n: arrays[f] for n, f in zip(names, sorted(positional, key=lambda f: int(f[4:])), strict=True)
                    }
        except (ValueError, OSError) as exc:
            raise BadInputError(f"{item.name}: not a readable .npz file ({exc})") from None
        missing = [n for n in names if n not in by_name]
        if missing:
            raise BadInputError(
                f"{item.name}: no array for input(s) {', '.join(missing)} (has {', '.join(files) or 'nothing'}); "
                f"name arrays after the model's inputs: {', '.join(names)}"
            )
        for port, name in zip(model.inputs, names, strict=True):
            import openvino as ov

            shape = port.get_partial_shape()
            if not shape.compatible(ov.PartialShape(list(by_name[name].shape))):
                raise BadInputError(
                    f"{item.name}: input {name} has shape {by_name[name].shape}, the model takes {shape}"
                )
        out.append(by_name)
    return out


def random_samples(model: Any, count: int = RANDOM_SAMPLES, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            if shape.is_dynamic:
                raise BadInputError(
                    f"input {port.get_any_name()} has a dynamic shape {shape}: "
                    "give an evaluation set (--eval DIR of .npz)"
                )
            dtype = port.get_element_type().to_dtype()
            sample[port.get_any_name()] = rng.standard_normal(shape.to_shape()).astype(dtype)
        samples.append(sample)
    return samples


def agreement(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """100 x (1 - mean relative L2 error), over samples and outputs."""
    errors = []
    for ref_sample, out_sample in zip(reference, outputs, strict=True):
        for ref, out in zip(ref_sample, out_sample, strict=True):
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            errors.append(float(np.linalg.norm(out64 - ref64)) / max(float(np.linalg.norm(ref64)), 1e-12))
    return round(100.0 * (1.0 - float(np.mean(errors))), 4)


def run_all(compiled: Any, samples: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    request = compiled.create_infer_request()
    results = []
    for sample in samples:
        request.infer(sample)
        results.append([request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))])
    return results


def quantize(
    version: DecryptedVersion,
    core: Any,
    recipe: str,
    params: dict[str, Any],
    calibration: dict[str, list[dict[str, np.ndarray]]] | None,
    evaluation: dict[str, list[dict[str, np.ndarray]]],
    reference: dict[str, list[list[np.ndarray]]],
    max_drop: float,
    device: str,
) -> dict[str, Any]:
    """Every model of the version quantized by ``recipe``, as in-memory ``ov.Model``s."""
    import nncf

    out = {}
    for role in version.model_roles():
        model = version.read_model(core, role)
        if recipe == "int8-weights":
            out[role] = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        elif recipe == "int4-weights":
            mode = nncf.CompressWeightsMode.INT4_SYM if params["symmetric"] else nncf.CompressWeightsMode.INT4_ASYM
            out[role] = nncf.compress_weights(
                model, mode=mode, ratio=float(params["ratio"]), group_size=int(params["group_size"])
            )
        else:
            assert calibration is not None
            preset = (
                nncf.QuantizationPreset.MIXED if params["preset"] == "mixed" else nncf.QuantizationPreset.PERFORMANCE
            )
            model_type = nncf.ModelType.TRANSFORMER if params["model_type"] == "transformer" else None
            data = calibration[role]
            if recipe == "int8":
                out[role] = nncf.quantize(
                    model,
                    nncf.Dataset(data),
                    preset=preset,
                    model_type=model_type,
                    subset_size=len(data),
                    fast_bias_correction=bool(params["fast_bias_correction"]),
                )
            elif recipe == "int8-accuracy":
                from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

                refs = reference[role]
                pairs = list(zip(evaluation[role], refs, strict=True))

                def validate(compiled: Any, items: Any) -> float:
                    items = list(items)
                    return agreement([r for _s, r in items], run_all(compiled, [s for s, _r in items]))

                out[role] = nncf.quantize_with_accuracy_control(
                    model,
                    nncf.Dataset(data),
                    nncf.Dataset(pairs, lambda pair: pair[0]),
                    validation_fn=validate,
                    max_drop=max_drop,
                    drop_type=nncf.DropType.ABSOLUTE,
                    preset=preset,
                    model_type=model_type,
                    subset_size=len(data),
                    advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                        max_num_iterations=int(params["max_layers"])
                    ),
                )
            else:
                raise ValueError(f"no IR recipe {recipe!r}")
    return out
