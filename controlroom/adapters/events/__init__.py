"""Live run events: the read model's queries, the per-process feed and each subscriber's queue."""
