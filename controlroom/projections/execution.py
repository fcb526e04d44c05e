"""Dispatcher: turns RunSubmitted / RunRetryScheduled into queue messages (at-least-once)."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from controlroom.commands.ports import RunQueue
from controlroom.domain.runs.run import Run
from controlroom.projections.view import ReadModelView


class DispatchView(ReadModelView):
    """Nothing to write: the queue is its effect, its position the pipeline's."""

    projection_name = "dispatch"


# eventsourcing bounds a projection's view by TrackingRecorder; a ReadModelView is none (the
# pipeline records its position with the batch it writes in).
class DispatchProjection(Projection[DispatchView]):  # type: ignore[type-var]
    """Enqueues before tracking, so a crash in between re-sends rather than loses."""

    name = "dispatch"
    topics = (get_topic(Run.RunSubmitted), get_topic(Run.RunRetryScheduled))
    queue: ClassVar[RunQueue]

    @classmethod
    def feeding(cls, queue: RunQueue) -> type[DispatchProjection]:
        """This projection bound to a queue (the runner constructs it itself)."""
        return type(cls.__name__, (cls,), {"name": cls.name, "queue": queue})

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Other events only advance the position."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Run.RunSubmitted, tracking: Tracking) -> None:
        self.queue.enqueue(e.originator_id, 1)
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Run.RunRetryScheduled, tracking: Tracking) -> None:
        self.queue.enqueue(e.originator_id, e.attempt, e.not_before)
        self.view.insert_tracking(tracking)
