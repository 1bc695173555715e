"""The Celery tasks: one per job kind (``ovbatch.<kind>``), a few lines each around ``process_job``.

The worker's resources (registry, model cache, Core) are made once at startup and handed to
``bind_context``; the tasks find them there, as arq's ``ctx``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from redis.exceptions import RedisError

from ovbatch.crypto import signing
from ovbatch.errors import ForgedMessageError, StaleMessageError, WorkerStopping
from ovbatch.kinds import JobKind, all_kinds
from ovbatch.workers.runtime import JobLocked, WorkerContext, process_job

log = logging.getLogger(__name__)
NOOP = "ovbatch.noop"
_context: WorkerContext | None = None


def bind_context(ctx: WorkerContext) -> None:
    global _context
    _context = ctx


def register_kind(app: Celery, kind: JobKind) -> None:
    # ignore_result: a job's outcome lives in its batch record; a Celery result per job (kept 7 days)
    # would cost Redis ~0.5 KB per job for nothing (docs/SCALE.md)
    @app.task(name=kind.task_name, bind=True, max_retries=None, ignore_result=True)
    def run(self: Any, payload: dict[str, Any], auth: Any = None) -> dict[str, Any]:
        ctx = _context
        assert ctx is not None, "worker context not bound"
        try:  # only what a keyring holder queued runs (ovbatch/crypto/signing.py)
            signing.verify(ctx.registry.keyring, kind.task_name, payload, auth, ctx.settings.message_max_age_s)
            return process_job(ctx, kind, payload, attempt=self.request.retries + 1)
        except (ForgedMessageError, StaleMessageError) as exc:  # dropped: no record changes, nothing runs
            log.error("message %s dropped: %s", self.request.id, exc)
            ctx.refused += 1
            raise Reject(str(exc), requeue=False) from exc
        except RedisError as exc:  # Redis stayed away longer than the job's retries: the message goes back
            # (or, if Redis cannot take it now, stays unacknowledged and workers/redeliver.py restores it)
            log.error("job message %s goes back to its queue: Redis unreachable (%s)", self.request.id, exc)
            raise Reject(str(exc), requeue=True) from exc
        except JobLocked as exc:  # a duplicate delivery while the first run is alive: look again later
            raise self.retry(exc=exc, countdown=5, max_retries=None) from exc
        except WorkerStopping as exc:  # SIGTERM mid-job: back in the queue now, not after the visibility
            # timeout (hours); kombu's Redis reject with requeue restores the message (LPUSH: it is
            # consumed with BRPOP, so it waits behind the jobs already queued)
            raise Reject(str(exc), requeue=True) from exc


def register(app: Celery) -> None:
    for kind in all_kinds():
        register_kind(app, kind)

    @app.task(name=NOOP)
    def noop(payload: dict[str, Any]) -> dict[str, Any]:
        """Round trip through Redis and a worker, nothing else: the queue's own overhead."""
        return payload
