"""Job messages are signed: a worker runs only what a holder of the keyring queued.

Redis is not trusted to carry authority: anyone who can write to it (or reach a Flower that can
send tasks) could otherwise enqueue a job that reads any path the worker's credentials reach and
writes anywhere. Each message the CLI enqueues carries, beside its payload, a small ``auth`` object:

    {"kid": "<key id>", "ts": <unix seconds>, "nonce": "<hex>", "mac": "<hex HMAC-SHA256>"}

The MAC covers the task name (a transcription message cannot be sent to the quantize task), the
payload in canonical JSON, the time and the nonce. Its key is derived with HKDF-SHA256 from the
keyring's KEK ``kid`` for this purpose alone (``info`` below), so no key ever travels in a message
and no new secret has to be distributed: the holders of the keyring are the ones who may queue jobs.
Any key id the worker's keyring holds is accepted (rotation: the client signs with the new active
KEK, workers reload their keyring when they meet an id they do not hold).

A message older than ``max_age_s`` (the batch record's lifetime) or dated in the future is refused.
A replay of a valid message changes nothing: the worker runs a job only while its batch record is
open (queued or running) and its outputs are not finished, so a replayed message of a finished job
is dropped, and one of a queued job is the same job (one run at a time, by the job lock).

This is the HMAC of Python's stdlib and HKDF of ``cryptography``; Celery's own message signing
(``security`` serializer) needs X.509 certificates and private keys on every worker, which this
project does not otherwise have to manage.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import CryptoError, ForgedMessageError, OvbatchError

INFO = b"ovbatch job message signing v1"
CLOCK_SKEW_S = 300  # a message dated this far in the future is still accepted (clocks differ)


def _key(keyring: Keyring, kid: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(keyring.key(kid))


def _material(task: str, payload: Any, ts: int, nonce: str) -> bytes:
    body = {"task": task, "payload": payload, "ts": ts, "nonce": nonce}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(keyring: Keyring, task: str, payload: Any, now: float | None = None) -> dict[str, Any]:
    """The ``auth`` object for ``payload`` sent to ``task``, signed with the keyring's active key."""
    kid, _ = keyring.active_key()
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(12)
    mac = hmac.new(_key(keyring, kid), _material(task, payload, ts, nonce), hashlib.sha256).hexdigest()
    return {"kid": kid, "ts": ts, "nonce": nonce, "mac": mac}


def verify(keyring: Keyring, task: str, payload: Any, auth: Any, max_age_s: float, now: float | None = None) -> None:
    """Raise ForgedMessageError unless ``auth`` is a valid, fresh signature of ``payload`` for ``task``."""
    if not isinstance(auth, dict):
        raise ForgedMessageError(
            f"{task} message refused: it carries no signature (queued by something other than ovbatch?)"
        )
    kid, ts, nonce, mac = (auth.get(k) for k in ("kid", "ts", "nonce", "mac"))
    if not (isinstance(kid, str) and isinstance(ts, int) and isinstance(nonce, str) and isinstance(mac, str)):
        raise ForgedMessageError(f"{task} message refused: malformed signature")
    now = time.time() if now is None else now
    if ts > now + CLOCK_SKEW_S:
        raise ForgedMessageError(f"{task} message refused: signed {ts - now:.0f} s in the future")
    if now - ts > max_age_s:
        raise ForgedMessageError(
            f"{task} message refused: signed {(now - ts) / 3600:.1f} h ago, older than "
            f"OVBATCH_MESSAGE_MAX_AGE_S={max_age_s:g} s (`ovbatch retry` queues a fresh one)"
        )
    try:
        key = _key(keyring, kid)
    except (CryptoError, OvbatchError) as exc:
        raise ForgedMessageError(
            f"{task} message refused: signed with key {kid!r}, which this worker's keyring does not hold ({exc})"
        ) from None
    expected = hmac.new(key, _material(task, payload, ts, nonce), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise ForgedMessageError(f"{task} message refused: bad signature (forged or altered)")
