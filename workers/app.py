"""The Celery app: Redis as broker and result backend, JSON only, settings for long jobs.

What Celery 5.7 / kombu 5.7 do with Redis (read in kombu/transport/redis.py):
* A delivered message is kept in the ``unacked`` hash with its delivery time in ``unacked_index``
  until the worker acknowledges it. ``restore_visible`` (at worker start and on idle polls, every
  10th call) puts back on the queue every message unacknowledged for longer than
  ``visibility_timeout``, whether or not its worker is still alive.
* So a job running longer than the visibility timeout is delivered a second time to another
  worker while the first still runs: the timeout must exceed the longest job (we enforce
  job_time_limit_s < visibility_timeout_s in Settings).
* A worker killed with SIGKILL never acknowledges: its job comes back once the visibility timeout
  has passed since delivery, to whichever worker polls next. ``reject_on_worker_lost`` requeues at
  once when a prefork *child* dies; our workers use the threads pool (OpenVINO is not fork-safe), so
  for them redelivery after the visibility timeout is the path, and job outputs are idempotent.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ovbatch.settings import Settings


def queue_for(device: str) -> str:
    """One queue per OpenVINO device: a job only reaches workers of its device."""
    return f"ovbatch.{device}"


def make_app(settings: Settings) -> Celery:
    app = Celery("ovbatch", broker=settings.broker_url, backend=settings.broker_url)
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        # messages carry references only, and JSON can't smuggle code into a worker (pickle could)
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # ack after the job, not before: a worker that dies mid-job leaves the message for redelivery
        task_acks_late=True,
        # a prefork child killed by the OOM killer or a signal: requeue instead of losing the job
        task_reject_on_worker_lost=True,
        # a worker holds only as many jobs as it runs at once (its threads); more would wait behind
        # hour-long ones while other workers idle
        worker_prefetch_multiplier=1,
        # redelivery happens only after this; it must exceed the longest job (see module docstring)
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        # a job must end before the visibility timeout could hand it to a second worker. Celery applies
        # these two only in its prefork pool (celery#9203: not with -P threads), so the job enforces
        # the same limit itself between blocks of audio (tasks/transcribe/job.py `watched`); they stay
        # set for tasks that would ever run in prefork
        task_time_limit=settings.job_time_limit_s,
        task_soft_time_limit=max(1, settings.job_time_limit_s - 60),
        # results are small JSON summaries; the outputs live in object storage
        result_expires=7 * 24 * 3600,
        task_track_started=True,
        # threads, not prefork: OpenVINO is not fork-safe, and threads share one compiled model
        worker_pool="threads",
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue_for("CPU"),
        task_create_missing_queues=True,
        # no remote control: anyone who can write to Redis (or reach Flower) could otherwise shut
        # workers down or change their pools; ovbatch's own view of workers is workers/presence.py
        worker_enable_remote_control=False,
    )
    return app
