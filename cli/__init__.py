"""The Click command line (imported as ``ovbatch.cli``)."""
