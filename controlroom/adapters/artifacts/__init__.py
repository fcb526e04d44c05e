"""Artifact bytes: on the local filesystem or in an S3-compatible object store."""
