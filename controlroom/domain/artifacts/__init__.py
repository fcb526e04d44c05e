"""Artifacts of a run: stored or external, and the paths reserved for the service."""
