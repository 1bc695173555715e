"""The encrypted model registry in object storage."""
