"""Celery app, device queues, pinning and the per-process model cache (imported as ``ovbatch.workers``)."""
