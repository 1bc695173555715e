"""Greedy / sampled decoding of a batch of 30 s windows on the stateful OpenVINO Whisper decoder.

The decoder (optimum-intel ``automatic-speech-recognition-with-past``, stateful) keeps the self-
and cross-attention caches in its state: the first call takes the encoder output and the prompt,
every later call one token per row. Rows stay in place for the whole call (the CPU plugin cannot
drop rows of its cache), so a row that has finished is fed ``<|endoftext|>`` until all are done.
Prompts may differ in length (a window decoded without timestamps has one more token,
``<|notimestamps|>``): the first call takes the shortest length of every prompt, and a longer
prompt's remaining tokens are fed to its row in the next steps while the other rows already
sample, each row at its own positions as if its whole prompt had gone in first; the decoder's
cost does not change (one call per step for the batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovbatch.tasks.transcribe.rules import LogitRules, RowHistory, log_softmax
from ovbatch.tasks.transcribe.stats import EngineStats
from ovbatch.tasks.transcribe.tokens import SpecialTokens


@dataclass(frozen=True)
class DecodeResult:
    tokens: list[int]  # sampled tokens, without the prompt and without <|endoftext|>
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    # where the hold (``eot_from``) kept the text going: the index in ``tokens`` where Whisper would
    # have ended it (-1: never), the log-probability of its tokens before that point, and of the
    # <|endoftext|> it would have chosen there
    held_at: int = -1
    logprob_before_hold: float = 0.0
    eot_logprob_at_hold: float = 0.0

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)

    @property
    def held_avg_logprob(self) -> float:
        """Average log-probability of what the hold added: its tokens and the final <|endoftext|>."""
        if self.held_at < 0:
            return 0.0
        return (self.sum_logprob - self.logprob_before_hold) / (len(self.tokens) - self.held_at + 1)

    def unheld(self) -> DecodeResult:
        """The text as Whisper would have ended it without the hold (the same tokens up to there)."""
        if self.held_at < 0:
            return self
        total = self.logprob_before_hold + self.eot_logprob_at_hold
        return DecodeResult(self.tokens[: self.held_at], total, self.no_speech_prob, self.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class WindowDecoder:
    """Decodes windows of one model; reuses one infer request (not thread-safe)."""

    def __init__(
        self, compiled_decoder: Any, specials: SpecialTokens, vocab_size: int, stats: EngineStats | None = None
    ) -> None:
        self.stats = stats if stats is not None else EngineStats()
        self._request = compiled_decoder.create_infer_request()
        self.specials = specials
        self.rules = LogitRules(specials, vocab_size)
        self.sample_len = min(224, specials.max_length // 2)
        self._lang_ids = np.array(sorted(specials.languages.values()), dtype=np.int64)
        self._lang_names = {v: k for k, v in specials.languages.items()}

    def _infer(self, input_ids: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        beam_idx = np.arange(input_ids.shape[0], dtype=np.int32)
        self._request.infer({"input_ids": input_ids, "encoder_hidden_states": hidden, "beam_idx": beam_idx})
        return self._request.get_output_tensor(0).data

    def detect_language(self, hidden: np.ndarray) -> list[str]:
        """Most probable language of each window (argmax over the language tokens after SOT)."""
        self._request.reset_state()
        sot = np.full((hidden.shape[0], 1), self.specials.sot, dtype=np.int64)
        t0 = time.perf_counter()
        logits = self._infer(sot, hidden)[:, 0]
        self.stats.language_s += time.perf_counter() - t0
        return [self._lang_names[int(self._lang_ids[i])] for i in logits[:, self._lang_ids].argmax(axis=-1)]

    def decode(
        self,
        hidden: np.ndarray,
        prompts: list[list[int]],
        temperatures: list[float],
        rngs: list[np.random.Generator],
        between: Callable[[], None] = lambda: None,
        eot_from: list[int] | None = None,
    ) -> list[DecodeResult]:
        """Decode each row of ``hidden`` (``(B, frames, d)``) from its prompt; a prompt that ends in
        ``<|notimestamps|>`` decodes text only. ``between`` is called after every token step and may
        raise to abandon the decode."""
        n = hidden.shape[0]
        stats = self.stats
        shared = min(len(p) for p in prompts)
        # the prompt tokens each row is still fed after the first call (none where all are as long)
        fed = np.full((n, max(len(p) for p in prompts) - shared), -1, dtype=np.int64)
        for row, prompt in enumerate(prompts):
            fed[row, : len(prompt) - shared] = prompt[shared:]
        self._request.reset_state()
        t0 = time.perf_counter()
        first = self._infer(np.asarray([p[:shared] for p in prompts], dtype=np.int64), hidden)
        stats.prefill_s += time.perf_counter() - t0
        stats.prefill_calls += 1
        stats.decodes += n
        no_speech = self._no_speech_probs(first[:, 0])
        logits = first[:, -1].copy()
        small = np.ascontiguousarray(hidden[:, :1])  # ignored after the first call: the cache holds it
        temps = np.asarray(temperatures, dtype=np.float32)
        plain = np.array([p[-1] == self.specials.no_timestamps for p in prompts])
        history = RowHistory(n, plain=plain, eot_from=None if eot_from is None else np.asarray(eot_from))
        tokens = np.zeros((n, self.sample_len), dtype=np.int64)
        sum_logprobs = np.zeros(n, dtype=np.float64)
        done = np.zeros(n, dtype=bool)
        starts = np.array([len(p) - shared for p in prompts], dtype=np.int64)  # first sampled step per row
        lengths = np.full(n, self.sample_len, dtype=np.int64)
        held_at = np.full(n, -1, dtype=np.int64)
        before_hold = np.zeros(n, dtype=np.float64)
        eot_at_hold = np.zeros(n, dtype=np.float64)
        for step in range(self.sample_len):
            feeding = step < starts
            next_tokens, logprobs = self._choose(logits, history, np.where(feeding, 0.0, temps), rngs)
            if feeding.any():  # a longer prompt's own token, not sampled: no probability, not counted
                next_tokens = np.where(feeding, fed[:, min(step, fed.shape[1] - 1)], next_tokens)
                logprobs = np.where(feeding, 0.0, logprobs)
            sampling = ~done & ~feeding
            for r in np.flatnonzero(self.rules.stopped & sampling & (held_at < 0)):
                held_at[r] = step - starts[r]  # Whisper would have ended the text here
                before_hold[r] = sum_logprobs[r]
                eot = float(self.rules.eot_logits[r])  # its log-probability had it been allowed:
                top = float(logits[r].max())  # logits are the rules' (in place), <|endoftext|> barred
                eot_at_hold[r] = eot - np.logaddexp(top + np.log(np.exp(logits[r] - top).sum()), eot)
            stats.tokens += int(sampling.sum())
            sum_logprobs += np.where(sampling, logprobs, 0.0)
            next_tokens = np.where(done, self.specials.eot, next_tokens)
            tokens[:, step] = next_tokens
            finished = sampling & (next_tokens == self.specials.eot)
            lengths[finished] = step
            done |= finished
            history.push(next_tokens, self.specials.timestamp_begin, rows=~feeding)
            if done.all() or step == self.sample_len - 1:
                break
            between()
            t0 = time.perf_counter()
            logits = self._infer(next_tokens[:, None], small)[:, -1].copy()
            stats.step_s += time.perf_counter() - t0
            stats.steps += 1
        return [
            DecodeResult(
                tokens[i, starts[i] : lengths[i]].tolist(),
                float(sum_logprobs[i]),
                float(no_speech[i]),
                float(temps[i]),
                int(held_at[i]),
                float(before_hold[i]),
                float(eot_at_hold[i]),
            )
            for i in range(n)
        ]

    def _no_speech_probs(self, logits_at_sot: np.ndarray) -> np.ndarray:
        if self.specials.no_speech is None:
            return np.zeros(logits_at_sot.shape[0])
        return softmax(logits_at_sot.astype(np.float64))[:, self.specials.no_speech]

    def _choose(
        self, logits: np.ndarray, history: RowHistory, temps: np.ndarray, rngs: list[np.random.Generator]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Next token of each row (argmax at temperature 0, else sampled) and its log-probability;
        a row's random draws are its own sampled steps' (rows fed their prompt draw nothing)."""
        logits = self.rules.apply(logits, history)
        logprobs = log_softmax(logits)
        choice = logits.argmax(axis=-1)
        for row in np.flatnonzero(temps > 0):  # Gumbel-max: a sample of softmax(logits / T)
            gumbel = np.asarray(rngs[row].gumbel(size=logits.shape[1]), dtype=np.float32)
            choice[row] = (logits[row] / temps[row] + gumbel).argmax()
        return choice, logprobs[np.arange(len(choice)), choice]
