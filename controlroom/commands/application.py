"""The event-sourced write side: one Application over the Postgres event store."""

from eventsourcing.application import Application

from controlroom.domain.lineage import LineageJob
from controlroom.domain.run import Run

SNAPSHOT_EVERY = 50
"""Runs with long logs reload from a snapshot instead of replaying every chunk."""


class ControlRoom(Application):
    """Stores Run aggregates; its name prefixes the event-store tables."""

    name = "controlroom"
    # A job reporting OpenLineage every few minutes for years must not replay it all to append.
    snapshotting_intervals = {Run: SNAPSHOT_EVERY, LineageJob: SNAPSHOT_EVERY}
