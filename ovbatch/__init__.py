"""ovbatch: batch processor for OpenVINO inference.

The shared core lives here: settings, errors, object storage, model encryption and the
model registry. ``ovbatch.cli``, ``ovbatch.tasks`` and ``ovbatch.workers`` are mapped in
from the top-level ``cli/``, ``tasks/`` and ``workers/`` folders.
"""

__version__ = "0.1.0"
