"""Whisper recipes: calibration inputs captured from real transcription, NNCF on the in-memory
encoder and decoder, and the WER gate on short clips and long files.

Recipes (measured on Whisper base on these machines: see benchmarks/RESULTS.md):

* ``int8-hybrid`` (default): encoder ``nncf.quantize`` (transformer model type, SmoothQuant alpha
  ``smooth_quant_alpha`` for MatMuls) on encoder inputs captured from the calibration audio; decoder
  weight-only INT8 (``INT8_ASYM``). The decoder's activations stay in float: quantizing them breaks
  long-form decoding (repetition loops). ``keep_float`` leaves parts of the encoder out of the PTQ:
  ``stem`` (its two convolutions), ``layerN`` (every operation of encoder layer N), ``attention``
  (attention's Q and K inputs). The default, ``stem,layer0,layer1``: on an AMX Xeon, the encoder's
  output SQNR against the float encoder was 20.7 dB with the stem alone in float, 21.0-22.7 with any
  one kind of linear layer kept in float across all layers, 26.8 with layer 0 kept, 27.3 with layers
  0 and 1; on 180 held-out clips the WER loss went from +1.40 / +0.82 points (two calibration
  splits) to about zero with layer 0 or layers 0 and 1 in float, and on ``make demo``'s calibration
  set from +0.87 (layer 0) to -0.17 (layers 0 and 1), for 3 % of the speed (benchmarks/
  int8_recipe_bench.py, RESULTS.md).
* ``int8-weights``: weight-only INT8 for both, no calibration needed.
* ``int4-weights``: decoder weights INT4 (``ratio`` of the layers, ``group_size``; data-aware AWQ /
  scale estimation with ``awq``/``scale_estimation`` and a calibration set), encoder weights INT8.
* ``int8-full``: the seed post's full PTQ of encoder and decoder (decoder activations too). The
  gate is expected to reject it on long audio; it is here so that the gate is seen to work.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovbatch.jobs import Watch
from ovbatch.registry.loader import DecryptedVersion
from ovbatch.tasks.quantize.datasets import Dataset, Item
from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER

LONG_S = 30.0  # a file longer than one window is "long": decoded with seeking, where PTQ fails
GROUP_FILES = 8  # evaluation files transcribed at once (the engine batches their windows)


@dataclass
class Capture:
    """Model inputs recorded while the parent transcribed the calibration audio."""

    encoder: list[dict[Any, np.ndarray]] = field(default_factory=list)
    decoder: list[dict[str, np.ndarray]] = field(default_factory=list)
    audio_s: float = 0.0


class _Recorder:
    """An infer request that keeps a copy of the inputs of its first ``limit`` calls."""

    def __init__(self, request: Any, limit: int, split: bool = False) -> None:
        self._request, self.limit, self.split = request, limit, split
        self.samples: list[dict[Any, np.ndarray]] = []

    def infer(self, inputs: dict[Any, Any]) -> Any:
        if len(self.samples) < self.limit:
            if self.split:  # a batch of windows: one sample per window
                ((key, value),) = inputs.items()
                for row in np.asarray(value)[: self.limit - len(self.samples)]:
                    self.samples.append({key: row[None].copy()})
            else:
                self.samples.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return self._request.infer(inputs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def compile_all(core: Any, models: dict[str, Any], device: str, config: dict[str, Any]) -> dict[str, Any]:
    return {role: core.compile_model(model, device, config) for role, model in models.items()}


def engine_for(version: DecryptedVersion, compiled: dict[str, Any], packed: bool = True) -> Any:
    """The transcription engine; ``packed=False`` gives every clip a window of its own (calibration:
    the recipes' defaults were measured on encoder inputs captured that way, which also gives more
    windows per clip)."""
    from ovbatch.tasks.transcribe.engine import EngineConfig, WhisperEngine

    return WhisperEngine.from_loaded(version, compiled, None if packed else EngineConfig(pack_max_s=0))


def _streams(
    items: list[Item], open_input: Callable[[str], Any], watch: Watch, durations: dict[str, float]
) -> list[Iterator[np.ndarray]]:
    from ovbatch.tasks.transcribe import audio
    from ovbatch.tasks.transcribe.job import seekable

    def blocks(item: Item) -> Iterator[np.ndarray]:
        assert item.url is not None
        total = 0
        with open_input(item.url) as raw, seekable(raw) as stream:
            for block in audio.iter_blocks(stream, item.name):
                watch.check("the set was being transcribed")
                total += len(block)
                yield block
        durations[item.name] = total / audio.SAMPLE_RATE

    return [blocks(i) for i in items]


def transcribe_set(
    engine: Any,
    dataset: Dataset,
    open_input: Callable[[str], Any],
    watch: Watch,
    on_file: Callable[[int], None] = lambda _n: None,
    language: str | None = None,
) -> tuple[list[str], dict[str, float]]:
    """Transcripts of every file of the set (in order) and their durations; a bad file raises
    ``InputError`` naming it."""
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    texts: list[str] = []
    durations: dict[str, float] = {}
    for start in range(0, len(dataset.items), GROUP_FILES):
        group = dataset.items[start : start + GROUP_FILES]
        transcripts = engine.transcribe_streams(
            _streams(group, open_input, watch, durations), TranscribeOptions(language=language)
        )
        texts += [t.text for t in transcripts]
        on_file(len(group))
    return texts, durations


def capture(
    version: DecryptedVersion,
    core: Any,
    device: str,
    config: dict[str, Any],
    dataset: Dataset,
    open_input: Callable[[str], Any],
    watch: Watch,
    on_file: Callable[[int], None],
    encoder_samples: int,
    decoder_samples: int,
    language: str | None = None,
) -> Capture:
    models = {r: version.read_model(core, r) for r in (ENCODER, DECODER, DETOKENIZER)}
    engine = engine_for(version, compile_all(core, models, device, config), packed=False)
    enc = _Recorder(engine._encoder, encoder_samples, split=True)
    dec = _Recorder(engine.decoder._request, decoder_samples)
    engine._encoder, engine.decoder._request = enc, dec
    _texts, durations = transcribe_set(engine, dataset, open_input, watch, on_file, language)
    return Capture(enc.samples, dec.samples, sum(durations.values()))


def _from_constants(node: Any, depth: int = 0) -> bool:
    """A node computed from constants only (a weight, perhaps decompressed: Convert, Multiply...)."""
    if node.get_type_name() == "Constant":
        return True
    if depth > 4 or node.get_input_size() == 0:
        return False
    return all(_from_constants(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))


KEEP_FLOAT = ("attention", "stem")
_LAYER = re.compile(r"layer(\d+)")


def kept_float(model: Any, keep: str) -> Any:
    """NNCF's ignored scope for ``keep`` (comma-separated): ``attention`` leaves attention's inputs in
    float (ScaledDotProductAttention's Q and K, which NNCF's transformer type quantizes, and any MatMul
    of two computed tensors), ``stem`` the convolutions in front of the encoder's layers, ``layerN``
    every operation of encoder layer N (counted from 0; found by the exported names ``layers.N.``)."""
    import nncf

    parts = {p.strip() for p in keep.split(",") if p.strip()}
    unknown = {p for p in parts if p not in KEEP_FLOAT and not _LAYER.fullmatch(p)}
    if unknown:
        raise ValueError(f"keep_float {keep!r}: use a comma-separated choice of {', '.join(KEEP_FLOAT)}, layerN")
    if not parts:
        return None
    names, types = [], []
    ops = list(model.get_ordered_ops())
    if "attention" in parts:
        types.append("ScaledDotProductAttention")
        names += [
            op.get_friendly_name()
            for op in ops
            if op.get_type_name() == "MatMul" and not any(_from_constants(op.input_value(i).get_node()) for i in (0, 1))
        ]
    if "stem" in parts:
        types.append("Convolution")
    for part in sorted(parts):
        if (layer := _LAYER.fullmatch(part)) is not None:
            inside = re.compile(rf"(^|[^\w])layers\.{int(layer.group(1))}\.")
            found = [op.get_friendly_name() for op in ops if inside.search(op.get_friendly_name())]
            if not found:
                raise ValueError(f"keep_float {part}: the model has no operations named 'layers.{layer.group(1)}.'")
            names += found
    return nncf.IgnoredScope(names=names, types=types, validate=False)


def ptq(model: Any, samples: list[Any], alpha: float, keep: str = "") -> Any:
    """NNCF post-training quantization of one Whisper part as the int8 PTQ recipes do it: transformer
    model type, SmoothQuant alpha for MatMuls, every sample, the ``keep`` parts left in float."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
        ),
        ignored_scope=kept_float(model, keep),
    )


def quantize(
    version: DecryptedVersion, core: Any, recipe: str, params: dict[str, Any], calib: Capture | None
) -> dict[str, Any]:
    """The recipe's quantized encoder and decoder as in-memory ``ov.Model``s."""
    import nncf

    encoder, decoder = version.read_model(core, ENCODER), version.read_model(core, DECODER)
    int8 = nncf.CompressWeightsMode.INT8_ASYM

    if recipe == "int8-weights":
        return {ENCODER: nncf.compress_weights(encoder, mode=int8), DECODER: nncf.compress_weights(decoder, mode=int8)}
    if recipe == "int4-weights":
        data_aware = bool(params["awq"] or params["scale_estimation"])
        dataset = nncf.Dataset(calib.decoder) if data_aware and calib else None
        mode = nncf.CompressWeightsMode.INT4_SYM if params["symmetric"] else nncf.CompressWeightsMode.INT4_ASYM
        dec = nncf.compress_weights(
            decoder,
            mode=mode,
            ratio=float(params["ratio"]),
            group_size=int(params["group_size"]),
            dataset=dataset,
            awq=bool(params["awq"]) if dataset else None,
            scale_estimation=bool(params["scale_estimation"]) if dataset else None,
        )
        return {ENCODER: nncf.compress_weights(encoder, mode=int8), DECODER: dec}
    assert calib is not None and calib.encoder, "int8 PTQ recipes need calibration audio"
    alpha = float(params["smooth_quant_alpha"])
    q_encoder = ptq(encoder, calib.encoder, alpha, str(params.get("keep_float", "")))
    if recipe == "int8-hybrid":
        return {ENCODER: q_encoder, DECODER: nncf.compress_weights(decoder, mode=int8)}
    if recipe == "int8-full":
        return {ENCODER: q_encoder, DECODER: ptq(decoder, calib.decoder, alpha)}
    raise ValueError(f"no Whisper recipe {recipe!r}")


# --- the gate --------------------------------------------------------------------------------------


def _normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def error_units(references: list[str], hypotheses: list[str]) -> np.ndarray:
    """``(files, 2)``: each file's reference words and word errors, after Whisper's English
    normaliser (a file with an empty reference counts 0 and 0)."""
    import jiwer

    norm = _normalizer()
    units = np.zeros((len(references), 2), dtype=np.int64)
    for i, (ref, hyp) in enumerate(zip(references, hypotheses, strict=True)):
        r, h = norm(ref), norm(hyp)
        if not r.strip():
            continue
        out = jiwer.process_words(r, h if h.strip() else "<empty>")
        units[i] = (len(r.split()), out.substitutions + out.deletions + out.insertions)
    return units


def drop_interval(after: np.ndarray, before: np.ndarray, resamples: int = 10000, seed: int = 0) -> list[float]:
    """A 95 % paired bootstrap interval of the WER drop (after - before, points), resampling files:
    an interval that holds 0 means the evaluation set cannot tell the two models apart."""
    words, diff = after[:, 0], after[:, 1] - before[:, 1]
    if words.sum() == 0:
        return [0.0, 0.0]
    picks = np.random.default_rng(seed).integers(0, len(words), size=(resamples, len(words)))
    boot = diff[picks].sum(axis=1) / np.maximum(words[picks].sum(axis=1), 1) * 100
    return [round(float(np.percentile(boot, 2.5)), 2), round(float(np.percentile(boot, 97.5)), 2)]


@dataclass
class Scored:
    texts: list[str]
    durations: dict[str, float]
    seconds: float


def score(
    engine: Any,
    dataset: Dataset,
    open_input: Callable[[str], Any],
    watch: Watch,
    on_file: Callable[[int], None],
    language: str | None = None,
) -> Scored:
    t0 = time.perf_counter()
    texts, durations = transcribe_set(engine, dataset, open_input, watch, on_file, language)
    return Scored(texts, durations, time.perf_counter() - t0)


def gate_metrics(dataset: Dataset, parent: Scored, child: Scored) -> dict[str, Any]:
    """WER before and after on the short and the long files (references), or the quantized model's
    WER against the parent's transcripts (no references: before is 0 by definition)."""
    groups: dict[str, list[int]] = {"short": [], "long": []}
    for i, item in enumerate(dataset.items):
        groups["long" if parent.durations.get(item.name, 0.0) > LONG_S else "short"].append(i)
    metrics: dict[str, Any] = {"metric": "wer_points", "mode": "references" if dataset.references else "agreement"}
    for group, rows in groups.items():
        if not rows:
            continue
        child_texts = [child.texts[i] for i in rows]
        if dataset.references:
            refs = [dataset.items[i].text or "" for i in rows]
            units_before = error_units(refs, [parent.texts[i] for i in rows])
            units_after = error_units(refs, child_texts)
        else:  # the parent's transcripts are the references: no errors before, by definition
            units_after = error_units([parent.texts[i] for i in rows], child_texts)
            units_before = np.zeros_like(units_after)
        words = max(int(units_after[:, 0].sum()), 1)
        before = round(100.0 * float(units_before[:, 1].sum()) / words, 3)
        after = round(100.0 * float(units_after[:, 1].sum()) / words, 3)
        metrics[group] = {
            "files": len(rows),
            "audio_s": round(sum(parent.durations.get(dataset.items[i].name, 0.0) for i in rows), 1),
            "before": before,
            "after": after,
            "drop": round(after - before, 3),
            # how sure: the drop's 95 % interval over files, and the words it is counted on (the gate
            # decides on the drop itself; on 1,712 words transcribe_bench --accuracy measured 3.2-4.1 points)
            "drop_ci95": drop_interval(units_after, units_before),
            "words": int(units_after[:, 0].sum()),
        }
    metrics["speed"] = {"parent_s": round(parent.seconds, 2), "quantized_s": round(child.seconds, 2)}
    return metrics
