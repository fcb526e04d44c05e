"""The event-sourced write side: one Application over the Postgres event store."""

from collections.abc import Iterable
from typing import Any

from eventsourcing.application import Application

from controlroom.domain.lineage import LineageJob
from controlroom.domain.run import Run

SNAPSHOT_EVERY = 50
"""Runs with long logs reload from a snapshot instead of replaying every chunk."""


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """An aggregate from its snapshot (or nothing) and the events after it.

    The library's default projector checks every event against a runtime Protocol first; that
    check cost more than applying the event (a write loads its run, replaying up to
    SNAPSHOT_EVERY events). Our events are all the library's aggregate events, which mutate.
    """
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class ControlRoom(Application):
    """Stores Run aggregates; its name prefixes the event-store tables."""

    name = "controlroom"
    # A job reporting OpenLineage every few minutes for years must not replay it all to append.
    snapshotting_intervals = {Run: SNAPSHOT_EVERY, LineageJob: SNAPSHOT_EVERY}
    snapshotting_projectors = {Run: replay, LineageJob: replay}
