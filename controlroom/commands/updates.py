"""Load, decide, save: one aggregate changed against the log, retried on a conflicting append."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from controlroom.commands.errors import ConcurrencyError

MAX_CONFLICT_RETRIES = 8
"""Appends lost to another writer before giving up: a stream this contended is a client's loop."""

A = TypeVar("A", bound=Aggregate)


def update(
    app: Application[UUID], agg_id: UUID, decide: Callable[[A], object], *,
    load: Callable[[UUID], A], loaded: A | None = None, held: A | None = None,
    name: str | None = None,
) -> tuple[A, int | None]:
    """Decide on the aggregate (`loaded`, else `held`, else `load(agg_id)`) and save it: the
    aggregate after the decision, and the log position of its last new event — None when it
    appended nothing.

    None rather than a position because what a reader must then wait for depends on the read
    model: the caller says. A conflict (another writer appended first) loads the aggregate
    again and decides on that; `loaded` spares a caller who holds a current copy one load.
    `held` is a copy that may be behind the log (one this process kept, unchecked): only an
    append decided on it that succeeds stands, since the append's version would conflict with
    anything appended since; a refusal, a no-op or a conflict is decided again on the
    aggregate from the log. `decide` may raise to refuse: nothing is saved.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        unchecked = loaded is None and held is not None
        agg = loaded if loaded is not None else held if held is not None else load(agg_id)
        loaded = held = None
        try:
            decide(agg)
        except Exception:
            if unchecked:
                continue
            raise
        if not agg.pending_events:
            if unchecked:
                continue
            return agg, None
        try:
            recordings = app.save(agg)
        except IntegrityError:
            continue
        return agg, recordings[-1].notification.id
    raise ConcurrencyError(f"{name or agg_id} is changing too fast; try again")


def or_created(app: Application[UUID], create: Callable[[], A]) -> Callable[[UUID], A]:
    """A loader of the aggregate from the log that makes a new one where the log has none."""

    def load(agg_id: UUID) -> A:
        try:
            agg: A = app.repository.get(agg_id)
        except AggregateNotFoundError:
            return create()
        return agg

    return load


def existing(
    app: Application[UUID], kind: type[A], missing: Callable[[], Exception]
) -> Callable[[UUID], A]:
    """A loader of the aggregate of `kind` from the log that raises `missing()` where the log
    has none (a change to something that was never made is refused, never made up)."""

    def load(agg_id: UUID) -> A:
        try:
            agg: object = app.repository.get(agg_id)
        except AggregateNotFoundError:
            raise missing() from None
        if not isinstance(agg, kind):
            raise missing()
        return agg

    return load
