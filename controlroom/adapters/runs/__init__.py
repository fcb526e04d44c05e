"""Runs: read-model queries, active runs for re-queueing, run tokens, pre-flight's view of the world."""
