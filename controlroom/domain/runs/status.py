"""Run statuses and the transitions between them."""

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its lifecycle."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

JOB_TYPES = ("spark_etl", "schema_migration", "diagram_export", "kb_catalog")
"""The job types a run can have."""
