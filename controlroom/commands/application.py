"""The event-sourced write side: one Application over the Postgres event store."""

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Recording

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
    is_snapshotting_enabled = True

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Save, then snapshot each run or lineage job whose new events passed a multiple of
        SNAPSHOT_EVERY — from the aggregate in hand: the library's own snapshotting would
        first read the aggregate back from the log, which cost as much as the append."""
        due = [obj for obj in objs if isinstance(obj, Run | LineageJob) and any(
            e.originator_version % SNAPSHOT_EVERY == 0 for e in obj.pending_events)]
        recordings = super().save(*objs, **kwargs)
        if self.snapshots is not None:
            for aggregate in due:
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])
        return recordings
