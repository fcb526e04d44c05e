"""The event-sourced write side: one Application over the Postgres event store."""

import copy
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, Repository
from eventsourcing.persistence import Recording

from controlroom.commands.aggregate_cache import SizedCache
from controlroom.domain.lineage.model import LineageJob
from controlroom.domain.runs.run import Run

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


class ControlRoom(Application[UUID]):
    """Stores Run aggregates; its name prefixes the event-store tables."""

    name = "controlroom"
    # A job reporting OpenLineage every few minutes for years must not replay it all to append.
    is_snapshotting_enabled = True

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository, with a cache bounded by size as well as count."""
        repository = super().construct_repository()
        if repository.cache is not None:
            maxsize = int(self.env.get(self.AGGREGATE_CACHE_MAXSIZE) or 0)
            repository.cache = SizedCache(maxsize)  # type: ignore[assignment]
        return repository

    def held(self, agg_id: UUID) -> Any:
        """A copy of the aggregate as this process last saw it, not checked against the log
        (None if it keeps none): what a write may decide on first, its append's version
        catching anything since (commands/updates.py)."""
        cache = self.repository.cache
        if cache is None:
            return None
        try:
            return copy.deepcopy(cache.get(agg_id))
        except KeyError:
            return None

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Save; then keep a copy of each saved run in the cache and snapshot each run or
        lineage job whose new events passed a multiple of SNAPSHOT_EVERY.

        Both from the aggregate in hand. The library, fast-forwarding its cache, leaves the
        cached copy where it was, so the next write would read back and replay every event
        this one appended; and its own snapshotting reads the aggregate back from the log
        first, which cost as much as the append. A copy goes in the cache because the caller
        may go on deciding on the one it saved; one saved by another process, or by another
        thread in between, is still caught up from the log before use.
        """
        aggregates = [obj for obj in objs if isinstance(obj, Run | LineageJob)]
        due = [a for a in aggregates
               if any(e.originator_version % SNAPSHOT_EVERY == 0 for e in a.pending_events)]
        recordings = super().save(*objs, **kwargs)
        cache = self.repository.cache
        if cache is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, copy.deepcopy(aggregate))
        if self.snapshots is not None:
            for aggregate in due:
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])
        return recordings
