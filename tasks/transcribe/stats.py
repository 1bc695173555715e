"""Where a Whisper engine's time goes, counted since it was built: pipeline benchmarks
(``tasks/pipebench``) read the difference over a run (encoder ms per 30 s window, decoder ms per token).

Counting costs two ``perf_counter`` calls per model call (well under a microsecond beside calls of
milliseconds), so every engine counts, always.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class EngineStats:
    features_s: float = 0.0  # log-mel of the windows (numpy)
    encoder_s: float = 0.0  # encoder infer calls
    encoder_calls: int = 0
    windows: int = 0  # 30 s windows encoded (rows of the encoder calls)
    language_s: float = 0.0  # language detection (one decoder call per batch that needs it)
    prefill_s: float = 0.0  # each decode's first decoder call: the prompt and the cross-attention cache
    prefill_calls: int = 0
    step_s: float = 0.0  # the one-token decoder calls
    steps: int = 0  # one-token calls; each advances every row of its batch
    tokens: int = 0  # tokens chosen by rows still decoding (each row's end-of-text included)
    decodes: int = 0  # windows decoded, temperature fallbacks included
    fallbacks: int = 0  # windows decoded again at a higher temperature
    rechecked: int = 0  # windows the fast (bf16) models doubted, encoded and decoded again in f32
    packs_redone: int = 0  # packs whose transcript could not be split with confidence (packing.doubtful)
    held: int = 0  # decodes whose text the hold (EngineConfig.hold_eot_s) kept going past Whisper's end
    unheld: int = 0  # ... of which what it added was improbable: the text ends where Whisper ended it

    def copy(self) -> EngineStats:
        return dataclasses.replace(self)

    def since(self, before: EngineStats) -> EngineStats:
        """What was counted between ``before`` (a copy) and now."""
        return EngineStats(
            **{f.name: getattr(self, f.name) - getattr(before, f.name) for f in dataclasses.fields(self)}
        )

    def figures(self) -> dict[str, float | int | None]:
        """The per-unit figures a report shows (None where nothing was counted)."""

        def per(total_s: float, count: int) -> float | None:
            return total_s * 1000 / count if count else None

        decoder_s = self.prefill_s + self.step_s
        return {
            "encoder_ms_per_window": per(self.encoder_s, self.windows),
            "encoder_ms_per_call": per(self.encoder_s, self.encoder_calls),
            "features_ms_per_window": per(self.features_s, self.windows),
            "decoder_ms_per_token": per(decoder_s, self.tokens),
            "decoder_first_call_ms": per(self.prefill_s, self.prefill_calls),
            "decoder_step_ms": per(self.step_s, self.steps),
            "language_detection_ms_per_window": per(self.language_s, self.windows) if self.language_s else None,
            "tokens_per_window": self.tokens / self.decodes if self.decodes else None,
        }
