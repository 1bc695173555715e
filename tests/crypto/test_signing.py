"""Job messages carry an HMAC from a key derived from the keyring: altered, forged, expired or foreign
messages are refused, and nothing secret travels in the message."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ovbatch.crypto import signing
from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import ForgedMessageError

TASK = "ovbatch.transcribe"
DAY = 24 * 3600.0
PAYLOAD = {"batch_id": "b", "job_id": "j", "input_url": "file:///data/a.wav", "max_audio_duration_s": 60.0}


def test_a_signed_message_verifies_and_holds_no_key(keyring: Keyring) -> None:
    auth = signing.sign(keyring, TASK, PAYLOAD)
    signing.verify(keyring, TASK, PAYLOAD, auth, max_age_s=DAY)
    kid, key = keyring.active_key()
    text = json.dumps(auth)
    assert auth["kid"] == kid and key.hex() not in text and keyring.keys[kid]["key"] not in text


@pytest.mark.parametrize(
    "change",
    [
        {"input_url": "file:///etc/shadow"},
        {"max_audio_duration_s": None},  # turning a limit off is an alteration like any other
        {"extra": 1},
        {"job_id": "j2"},
    ],
)
def test_any_change_to_the_payload_is_refused(keyring: Keyring, change: dict[str, object]) -> None:
    auth = signing.sign(keyring, TASK, PAYLOAD)
    with pytest.raises(ForgedMessageError, match="bad signature"):
        signing.verify(keyring, TASK, {**PAYLOAD, **change}, auth, max_age_s=DAY)


def test_a_message_signed_for_one_task_is_refused_by_another(keyring: Keyring) -> None:
    auth = signing.sign(keyring, TASK, PAYLOAD)
    with pytest.raises(ForgedMessageError, match="bad signature"):
        signing.verify(keyring, "ovbatch.quantize", PAYLOAD, auth, max_age_s=DAY)


@pytest.mark.parametrize("auth", [None, {}, "x", {"kid": 1, "ts": 1, "nonce": "n", "mac": "m"}])
def test_missing_or_malformed_signatures_are_refused(keyring: Keyring, auth: object) -> None:
    with pytest.raises(ForgedMessageError, match="carries no signature|malformed signature"):
        signing.verify(keyring, TASK, PAYLOAD, auth, max_age_s=DAY)


def test_altered_fields_of_the_signature_are_refused(keyring: Keyring) -> None:
    auth = signing.sign(keyring, TASK, PAYLOAD)
    for change in ({"nonce": "0" * 24}, {"ts": auth["ts"] - 1}, {"mac": "0" * 64}):
        with pytest.raises(ForgedMessageError, match="bad signature"):
            signing.verify(keyring, TASK, PAYLOAD, {**auth, **change}, max_age_s=DAY)


def test_old_and_future_messages_are_refused(keyring: Keyring) -> None:
    now = time.time()
    old = signing.sign(keyring, TASK, PAYLOAD, now=now - 2 * DAY)
    with pytest.raises(ForgedMessageError, match="older than OVBATCH_MESSAGE_MAX_AGE_S"):
        signing.verify(keyring, TASK, PAYLOAD, old, max_age_s=DAY, now=now)
    future = signing.sign(keyring, TASK, PAYLOAD, now=now + 3600)
    with pytest.raises(ForgedMessageError, match="in the future"):
        signing.verify(keyring, TASK, PAYLOAD, future, max_age_s=DAY, now=now)


def test_another_keyring_cannot_sign_for_this_fleet(keyring: Keyring, tmp_path: Path) -> None:
    other = Keyring(tmp_path / "other.json")
    other.add_new_key()
    with pytest.raises(ForgedMessageError, match="does not hold"):
        signing.verify(keyring, TASK, PAYLOAD, signing.sign(other, TASK, PAYLOAD), max_age_s=DAY)
    # the same key id with other key material: a forger who knows the id but not the key
    forged = Keyring(tmp_path / "forged.json", active=keyring.active, keys={keyring.active: other.keys[other.active]})  # type: ignore[dict-item]
    with pytest.raises(ForgedMessageError, match="bad signature"):
        signing.verify(keyring, TASK, PAYLOAD, signing.sign(forged, TASK, PAYLOAD), max_age_s=DAY)


def test_messages_signed_with_an_older_key_still_verify_after_a_new_key(keyring: Keyring) -> None:
    before = signing.sign(keyring, TASK, PAYLOAD)
    keyring.add_new_key()
    signing.verify(keyring, TASK, PAYLOAD, before, max_age_s=DAY)
    after = signing.sign(keyring, TASK, PAYLOAD)
    assert after["kid"] != before["kid"]
    signing.verify(keyring, TASK, PAYLOAD, after, max_age_s=DAY)
