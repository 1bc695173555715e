"""Job kinds (imported as ``ovbatch.tasks``): one module per kind, each a pure function plus a thin
Celery task. Transcription arrives with the next issue; nothing is registered yet."""
