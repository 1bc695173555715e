"""Job kinds (imported as ``ovbatch.tasks``): one subpackage per kind, each declaring a
``ovbatch.kinds.JobKind`` named ``KIND`` in its ``kind`` module. docs/JOB_KINDS.md says how to add one.

Registering a kind is one line here: its name (the Celery task is ``ovbatch.<name>``) and the module
holding its ``KIND``. Kinds are imported only when first used.
"""

KINDS: dict[str, str] = {
    "transcribe": "ovbatch.tasks.transcribe.kind",
    "txt2img": "ovbatch.tasks.imagegen.kind",
    "quantize": "ovbatch.tasks.quantize.kind",
    "benchmark": "ovbatch.tasks.benchmark.kind",
    "pipeline": "ovbatch.tasks.pipebench.kind",
}
