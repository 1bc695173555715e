"""Whisper's logit rules, vectorised over a batch of rows (openai-whisper's decoding.py filters).

``suppress_tokens`` at every step, ``begin_suppress_tokens`` at the first sampled step, and the
timestamp rules: timestamps come in pairs, never decrease, the first token is a timestamp no later
than ``max_initial_timestamp_index``, and a timestamp is forced when the timestamp tokens together
are more probable than any single text token. A *plain* row (its prompt ends in ``<|notimestamps|>``)
gets no timestamp token at all, as openai-whisper's ``without_timestamps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ovbatch.tasks.transcribe.tokens import SpecialTokens

NEG_INF = np.float32(-np.inf)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(B, V)`` float32 logits (``-inf`` entries stay ``-inf``)."""
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class RowHistory:
    """What the timestamp rules need to know of each row's sampled tokens, kept incrementally."""

    size: int
    plain: np.ndarray | None = None  # per row: decoded without timestamps (default: none is)
    # per row: no <|endoftext|> before a timestamp this high (relative index) has been sampled
    # (default 0: never held); the engine sets it just before the end of a window's audible sound
    eot_from: np.ndarray | None = None
    n_sampled: np.ndarray = field(init=False)
    last_ts: np.ndarray = field(init=False)  # the last sampled token was a timestamp
    penult_ts: np.ndarray = field(init=False)  # the one before it was too (or there is none)
    max_ts: np.ndarray = field(init=False)  # highest timestamp token so far, -1 if none

    def __post_init__(self) -> None:
        self.n_sampled = np.zeros(self.size, dtype=np.int64)
        self.last_ts = np.zeros(self.size, dtype=bool)
        self.penult_ts = np.ones(self.size, dtype=bool)
        self.max_ts = np.full(self.size, -1, dtype=np.int64)
        self.plain = np.zeros(self.size, dtype=bool) if self.plain is None else np.asarray(self.plain, dtype=bool)
        self.eot_from = (
            np.zeros(self.size, dtype=np.int64) if self.eot_from is None else np.asarray(self.eot_from, dtype=np.int64)
        )

    def push(self, tokens: np.ndarray, timestamp_begin: int, rows: np.ndarray | None = None) -> None:
        """The tokens just sampled; ``rows`` (a mask): only those rows sampled (the others were fed
        a token of their prompt, which the rules do not count)."""
        take = np.ones(self.size, dtype=bool) if rows is None else rows
        is_ts = tokens >= timestamp_begin
        self.penult_ts = np.where(take, np.where(self.n_sampled == 0, True, self.last_ts), self.penult_ts)
        self.last_ts = np.where(take, is_ts, self.last_ts)
        self.max_ts = np.where(take & is_ts, np.maximum(self.max_ts, tokens), self.max_ts)
        self.n_sampled += take


class LogitRules:
    """Applies every rule in place to the ``(B, V)`` logits of one step."""

    def __init__(self, specials: SpecialTokens, vocab_size: int) -> None:
        self.t = specials
        self.vocab_size = vocab_size
        self._suppress = np.array([i for i in specials.all_suppressed() if i < vocab_size], dtype=np.int64)
        self._begin_suppress = np.array(specials.begin_suppress, dtype=np.int64)
        self._ts_offsets = np.arange(vocab_size - specials.timestamp_begin)
        self.stopped = np.zeros(0, dtype=bool)  # set by each ``apply``: see there
        self.eot_logits = np.zeros(0, dtype=np.float32)

    def apply(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        t = self.t
        logits[:, self._suppress] = NEG_INF
        logits[:, t.no_timestamps] = NEG_INF
        plain = history.plain
        assert plain is not None
        first = history.n_sampled == 0
        if first.any():
            self._first_step(logits, first, plain)
        logits[plain, t.timestamp_begin :] = NEG_INF
        after_pair = history.last_ts & history.penult_ts & ~first
        logits[after_pair, t.timestamp_begin :] = NEG_INF  # a pair is closed: text (or eot) next
        after_single = history.last_ts & ~history.penult_ts
        logits[after_single, : t.eot] = NEG_INF  # an open segment: its end timestamp (or eot) next
        self._no_decreasing_timestamps(logits, history, after_single)
        assert history.eot_from is not None
        # a segment was just opened (a pair: its start after the last one's end) well before the
        # window's sound ends: Whisper says speech goes on there, so its text may not end yet
        held = after_pair & (history.n_sampled >= 2) & (history.max_ts - t.timestamp_begin < history.eot_from)
        self.stopped = held  # rows where <|endoftext|> was the likeliest token: those the hold keeps going
        if held.any():
            self.stopped = held & (logits[:, t.eot] >= logits.max(axis=-1))
            self.eot_logits = logits[:, t.eot].copy()  # (its logit, for the text Whisper would have ended)
            logits[held, t.eot] = NEG_INF
        self._prefer_timestamps(logits)
        return logits

    def _first_step(self, logits: np.ndarray, rows: np.ndarray, plain: np.ndarray) -> None:
        t = self.t
        idx = np.flatnonzero(rows)
        if self._begin_suppress.size:
            logits[np.ix_(idx, self._begin_suppress)] = NEG_INF
        idx = np.flatnonzero(rows & ~plain)
        logits[idx, : t.timestamp_begin] = NEG_INF  # the first token is a timestamp
        last_allowed = t.timestamp_begin + t.max_initial_timestamp_index
        logits[idx, last_allowed + 1 :] = NEG_INF

    def _no_decreasing_timestamps(self, logits: np.ndarray, history: RowHistory, open_rows: np.ndarray) -> None:
        has_ts = history.max_ts >= 0
        if not has_ts.any():
            return
        # an open segment may end at its start time; otherwise every new timestamp is strictly later
        limit = np.where(open_rows, history.max_ts, history.max_ts + 1) - self.t.timestamp_begin
        mask = (self._ts_offsets[None, :] < limit[:, None]) & has_ts[:, None]
        logits[:, self.t.timestamp_begin :][mask] = NEG_INF

    def _prefer_timestamps(self, logits: np.ndarray) -> None:
        tb = self.t.timestamp_begin
        logprobs = log_softmax(logits)
        ts = logprobs[:, tb:]
        top = ts.max(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ts_logprob = top + np.log(np.exp(ts - top[:, None]).sum(axis=-1))
        text_max = logprobs[:, :tb].max(axis=-1)
        logits[ts_logprob > text_max, :tb] = NEG_INF  # never on a plain row: its timestamps are -inf
