"""Artifacts: uploads, listing, metadata and the bytes."""
