from __future__ import annotations

import click
import msgspec
import pytest

from ovbatch.tasks.transcribe.cli import _options
from ovbatch.tasks.transcribe.spec import job_id_for
from ovbatch.tasks.transcribe.types import TranscribeOptions


def test_timestamps_default_on_and_left_out_of_the_json_so_old_job_ids_hold() -> None:
    default = TranscribeOptions(language="en")
    assert default.timestamps and "timestamps" not in default.to_json(), default.to_json()
    assert TranscribeOptions.from_json({"language": "en", "task": "transcribe", "word_timestamps": False}) == default
    plain = TranscribeOptions(language="en", timestamps=False)
    assert TranscribeOptions.from_json(plain.to_json()) == plain
    ids = {job_id_for("ab" * 32, "m@1", o, ("txt",), "file:///out", "a.wav") for o in (default, plain)}
    assert len(ids) == 2, "decoding without timestamps is another job (other outputs)"


def test_word_timestamps_without_segment_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="word timestamps need segment timestamps"):
        TranscribeOptions(word_timestamps=True, timestamps=False)
    with pytest.raises(msgspec.ValidationError, match="word timestamps need segment timestamps"):
        TranscribeOptions.from_json({"word_timestamps": True, "timestamps": False})


def test_the_cli_decodes_no_timestamps_when_txt_is_the_only_output() -> None:
    assert not _options("txt", "en", "transcribe")[1].timestamps, "txt alone shows no times"
    assert _options("txt,json", "en", "transcribe")[1].timestamps
    assert _options("srt", "auto", "transcribe")[1].timestamps
    assert _options("txt", "en", "transcribe", word_timestamps=True)[1].timestamps, "words need timestamps"
    assert not _options("txt,srt", "en", "transcribe", timestamps=False)[1].timestamps, "asked for: off"
    assert _options("txt", "en", "transcribe", timestamps=True)[1].timestamps, "asked for: on"
    with pytest.raises(click.BadParameter, match="--word-timestamps needs segment timestamps"):
        _options("json", "en", "transcribe", word_timestamps=True, timestamps=False)
