"""Whisper's special token ids (from the model's JSON files) and text from token ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovbatch.errors import InputError

TIME_PRECISION_S = 0.02  # one timestamp token step


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    sot_prev: int
    sot_lm: int | None
    no_speech: int | None
    no_timestamps: int
    timestamp_begin: int
    transcribe: int
    translate: int
    languages: dict[str, int]  # "en" -> id of <|en|>
    suppress: tuple[int, ...]  # at every step
    begin_suppress: tuple[int, ...]  # at the first sampled step only
    max_initial_timestamp_index: int
    max_length: int

    @classmethod
    def from_json(cls, generation_config: str, tokenizer_json: str) -> SpecialTokens:
        gen = json.loads(generation_config)
        added = {t["content"]: int(t["id"]) for t in json.loads(tokenizer_json).get("added_tokens", [])}
        tasks = gen.get("task_to_id") or {
            "transcribe": added.get("<|transcribe|>"),
            "translate": added.get("<|translate|>"),
        }
        no_timestamps = int(gen.get("no_timestamps_token_id") or added["<|notimestamps|>"])
        specials = cls(
            eot=int(gen["eos_token_id"]),
            sot=int(gen["decoder_start_token_id"]),
            sot_prev=int(gen.get("prev_sot_token_id", added.get("<|startofprev|>", -1))),
            sot_lm=added.get("<|startoflm|>"),
            no_speech=added.get("<|nospeech|>", added.get("<|nocaptions|>")),
            no_timestamps=no_timestamps,
            timestamp_begin=no_timestamps + 1,
            transcribe=int(tasks["transcribe"]),
            translate=int(tasks["translate"]),
            languages={k.strip("<|>"): int(v) for k, v in gen.get("lang_to_id", {}).items()},
            suppress=tuple(int(t) for t in gen.get("suppress_tokens") or ()),
            begin_suppress=tuple(int(t) for t in gen.get("begin_suppress_tokens") or ()),
            max_initial_timestamp_index=int(gen.get("max_initial_timestamp_index", 50)),
            max_length=int(gen.get("max_length", 448)),
        )
        return specials

    def all_suppressed(self) -> tuple[int, ...]:
        """``suppress_tokens`` plus the control tokens openai-whisper never lets the model emit."""
        control = [self.sot, self.sot_prev, self.sot_lm, self.no_speech, self.transcribe, self.translate]
        return tuple(sorted({*self.suppress, *(t for t in control if t is not None and t >= 0)}))

    def language_id(self, language: str) -> int:
        if language not in self.languages:
            raise InputError(f"language {language!r} is not one this Whisper model knows ({len(self.languages)} codes)")
        return self.languages[language]

    def prompt(self, language: str, task: str, timestamps: bool = True) -> list[int]:
        """The start of every window: ``<|startoftranscript|><|xx|><|task|>``, then
        ``<|notimestamps|>`` where the window is decoded without timestamp tokens."""
        task_id = {"transcribe": self.transcribe, "translate": self.translate}.get(task)
        if task_id is None:
            raise InputError(f"task must be 'transcribe' or 'translate', not {task!r}")
        plain = [] if timestamps else [self.no_timestamps]
        if not self.languages:  # an English-only model has neither language nor task tokens
            return [self.sot, *plain]
        return [self.sot, self.language_id(language), task_id, *plain]


class Detokenizer:
    """Token ids -> text with the model's compiled OpenVINO detokenizer (special tokens skipped)."""

    def __init__(self, compiled: Any, eot: int, timestamp_begin: int) -> None:
        self._request = compiled.create_infer_request()
        self._eot = eot
        self._timestamp_begin = timestamp_begin

    def decode_batch(self, sequences: list[list[int]]) -> list[str]:
        """Text of each sequence; timestamp and special tokens do not appear in it."""
        texts = [[t for t in seq if t < self._eot] for seq in sequences]
        if not texts:
            return []
        width = max(1, max(len(t) for t in texts))
        ids = np.full((len(texts), width), self._eot, dtype=np.int64)
        for row, seq in enumerate(texts):
            ids[row, : len(seq)] = seq
        self._request.infer({0: ids})
        return [str(s) for s in self._request.get_output_tensor(0).str_data]

    def decode(self, tokens: list[int]) -> str:
        return self.decode_batch([tokens])[0]
