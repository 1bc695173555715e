"""Celery app, device queues, pinning and the per-process model cache (imported as
``ovbatch.workers``). Arrives with the transcription issue; nothing is started from here yet."""
