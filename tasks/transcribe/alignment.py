"""The aligner: the Whisper decoder IR with its alignment heads' cross-attention weights as outputs.

The stateful decoder that optimum-intel exports computes attention inside fused
``ScaledDotProductAttention`` ops, so the weights never exist as tensors. ``add_alignment_outputs``
rebuilds them beside the graph from each cross-attention op's own inputs: for the heads named in
``generation_config.json`` ``alignment_heads``, ``softmax(Q K^T * scale + mask)`` (the op's scale
input, else ``1/sqrt(head_dim)``; optimum folds ``1/sqrt(64)`` into Q and passes scale 1), all heads
concatenated into one ``(batch, heads, tokens, frames)`` output. A cross-attention op is one whose key
is computed from ``encoder_hidden_states`` and not from ``input_ids`` (shape arithmetic aside); layers
come in topological order, since each layer's query is computed from the previous layer's output.
The logits output becomes ``token_probs``: at each position the probability, among text tokens, of
the next input token (openai-whisper's ``text_token_probs``), so no ``(tokens, 51865)`` array leaves
the model.

The aligner is stateless (each ``ReadValue`` replaced by the cache it would compute on a first
call, the ``Assign`` sinks dropped): one teacher-forced call per window, nothing kept between calls.
It is read again from the decrypted model (nothing written to disk) and compiled only when a job
asks for word timestamps. Measured on whisper base, 2 threads, against transformers' eager
attention on the same encoder output and tokens: compiled at f32 the weights agree within 3e-6,
at the CPU's default bf16 within 0.015 (mean 1e-5), which moved the 1458 word times of two
6-minute files by 2 ms on average, 0.18 s at most. So the aligner runs at the device's default
precision: bf16 takes 25 ms a window instead of 45 ms and holds 200 MB instead of 315 MB (one
window per call; each more window in a call adds 45 MB).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

WEIGHTS_OUTPUT, PROBS_OUTPUT = "alignment_weights", "token_probs"
DECODER = "openvino_decoder_model.xml"
SDPA = "ScaledDotProductAttention"


def _data_sources(node: Any) -> set[str]:
    """Names of the parameters ``node`` computes from, not counting paths through ``ShapeOf``."""
    seen: set[str] = set()
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current.get_instance_id() in seen:
            continue
        seen.add(current.get_instance_id())
        kind = current.get_type_name()
        if kind == "Parameter":
            found |= set(current.output(0).get_names())
        elif kind != "ShapeOf":
            stack.extend(v.get_node() for v in current.input_values())
    return found


def cross_attention_ops(model: Any) -> list[Any]:
    """The decoder's cross-attention ``ScaledDotProductAttention`` ops, first layer first."""
    ops = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == SDPA:
            sources = _data_sources(op.input_value(1).get_node())
            if "encoder_hidden_states" in sources and "input_ids" not in sources:
                ops.append(op)
    return ops


def _attention_weights(op: Any, heads: list[int]) -> Any:
    """``softmax(Q K^T * scale + mask)`` of ``heads``, from ``op``'s inputs: ``(B, len(heads), T, S)``."""
    import openvino as ov
    import openvino.opset13 as ops

    if op.get_attributes().get("causal"):
        raise ValueError(f"{op.get_friendly_name()}: a causal cross-attention is not expected")
    index = ops.constant(np.asarray(heads, dtype=np.int64))
    axis = ops.constant(np.int64(1))
    q = ops.gather(op.input_value(0), index, axis)
    k = ops.gather(op.input_value(1), index, axis)
    scores = ops.matmul(q, k, transpose_a=False, transpose_b=True)
    if op.get_input_size() > 4:
        scale = op.input_value(4)
    else:
        head_dim = op.input_value(0).get_partial_shape()[3].get_length()
        scale = ops.constant(np.float32(1.0 / np.sqrt(head_dim)))
    scores = ops.multiply(scores, ops.convert_like(scale, scores))
    if op.get_input_size() > 3:
        mask = op.input_value(3)
        if mask.get_element_type() == ov.Type.boolean:  # True: take part
            minus_inf = ops.constant(np.float32(-np.inf))
            mask = ops.select(mask, ops.constant(np.float32(0.0)), minus_inf)
        scores = ops.add(scores, ops.convert_like(mask, scores))
    return ops.softmax(scores, -1)


def _next_token_probs(logits: Any, input_ids: Any, text_vocab: int) -> Any:
    """``softmax(logits[:, i, :text_vocab])[input_ids[:, i + 1]]``: ``(B, T - 1)``; positions whose
    next token is not text get some text token's probability (callers ignore them)."""
    import openvino.opset13 as ops

    def part(x: Any, start: int, stop: int, axis: int) -> Any:
        start_, stop_, step_, axis_ = (np.array([v], dtype=np.int64) for v in (start, stop, 1, axis))
        return ops.slice(x, start_, stop_, step_, axis_)

    big = np.iinfo(np.int64).max
    probs = ops.softmax(part(part(logits, 0, -1, 1), 0, text_vocab, 2), -1)
    targets = ops.minimum(ops.convert(part(input_ids, 1, big, 1), "i64"), ops.constant(np.int64(text_vocab - 1)))
    picked = ops.gather_elements(probs, ops.unsqueeze(targets, ops.constant(np.int64(2))), 2)
    return ops.squeeze(picked, ops.constant(np.int64(2)))


def add_alignment_outputs(model: Any, alignment_heads: Sequence[Sequence[int]], text_vocab: int) -> Any:
    """The aligner: a new ``ov.Model`` over the decoder ``model``'s nodes (read it afresh for this)."""
    import openvino as ov
    import openvino.opset13 as ops

    cross = cross_attention_ops(model)
    layers = sorted({int(layer) for layer, _ in alignment_heads})
    if not cross or layers[-1] >= len(cross):
        raise ValueError(
            f"the decoder has {len(cross)} cross-attention ops; alignment_heads name layers up to {layers[-1]}"
        )
    parts = [
        _attention_weights(cross[layer], [int(h) for lyr, h in alignment_heads if int(lyr) == layer])
        for layer in layers
    ]
    weights = ops.convert(ops.concat(parts, 1) if len(parts) > 1 else parts[0], "f32")
    weights.output(0).set_names({WEIGHTS_OUTPUT})
    logits = model.output("logits").get_node().input_value(0)  # what the Result reads
    probs = ops.convert(_next_token_probs(logits, model.input("input_ids"), text_vocab), "f32")
    probs.output(0).set_names({PROBS_OUTPUT})
    for op in model.get_ordered_ops():  # stateless: each cache is what its first call computes
        if op.get_type_name() == "ReadValue":
            op.output(0).replace(op.input_value(0))
    results = [ops.result(weights), ops.result(probs)]
    return ov.Model(results, [], model.get_parameters(), "whisper-aligner")


def head_order(alignment_heads: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """The (layer, head) of each channel of the weights output, in output order."""
    layers = sorted({int(layer) for layer, _ in alignment_heads})
    return [(layer, int(h)) for layer in layers for lyr, h in alignment_heads if int(lyr) == layer]


def default_alignment_heads(decoder_layers: int, heads: int) -> list[list[int]]:
    """openai-whisper's fallback for models that name none: every head of the upper half of layers."""
    return [[layer, h] for layer in range(decoder_layers // 2, decoder_layers) for h in range(heads)]


def compile_aligner(
    version: Any,
    compiled_decoder: Any,
    alignment_heads: Sequence[Sequence[int]],
    text_vocab: int,
    precision: str | None = None,
) -> Any:
    """Read the decoder again from ``version``'s decrypted buffers, make it the aligner and compile
    it on the decoder's device with its thread count, at ``precision`` (default: the decoder's)."""
    from ovbatch.ov import make_core

    core = make_core()
    model = add_alignment_outputs(version.read_model(core, DECODER), alignment_heads, text_vocab)
    device = str(compiled_decoder.get_property("EXECUTION_DEVICES")[0])
    if precision is None and device.startswith("CPU"):
        precision = compiled_decoder.get_property("INFERENCE_PRECISION_HINT").to_string()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    if device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = int(compiled_decoder.get_property("INFERENCE_NUM_THREADS"))
    return core.compile_model(model, device, config)


class Aligner:
    """Runs the aligner, compiled by ``build`` on first use; one infer request (not thread-safe)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._request: Any = None
        self._failed: BaseException | None = None
        self._lock = threading.Lock()
        self.calls = 0
        self.on_compiled: Callable[[], None] = lambda: None  # the worker's cache counts the memory

    @property
    def compiled(self) -> bool:
        return self._request is not None

    def ensure(self) -> None:
        """Compile now if not yet (any thread); a model the aligner cannot be built for fails every
        later call at once, with the same error, instead of compiling again."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._request is not None:
                return
            try:
                self._request = self._build().create_infer_request()
            except Exception as exc:
                self._failed = exc
                raise
        self.on_compiled()

    def run(self, hidden: np.ndarray, sequences: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced pass of each row of ``hidden`` over its token sequence (padded at the end
        with ``pad``; the causal mask keeps padding out of earlier positions). Returns the weights
        ``(B, heads, T, frames)`` and the next-token probabilities ``(B, T - 1)``."""
        self.ensure()
        self.calls += 1
        width = max(len(s) for s in sequences)
        ids = np.full((len(sequences), width), pad, dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
        beam_idx = np.arange(len(sequences), dtype=np.int32)
        self._request.infer({"input_ids": ids, "encoder_hidden_states": hidden, "beam_idx": beam_idx})
        weights = self._request.get_tensor(WEIGHTS_OUTPUT).data.copy()
        probs = self._request.get_tensor(PROBS_OUTPUT).data.copy()
        return weights, probs
