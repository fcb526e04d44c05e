"""The API's status types name exactly the run statuses there are."""

from __future__ import annotations

from typing import get_args

from controlroom.api.runs.routes import StatusFilter
from controlroom.commands.webhooks.inbound import Status
from controlroom.domain.runs.status import RunStatus


def test_the_runs_status_filter_names_every_status() -> None:
    assert set(get_args(StatusFilter)) == {s.value for s in RunStatus}


def test_an_external_runner_reports_every_status_but_queued() -> None:
    assert set(get_args(Status)) == {s.value for s in RunStatus} - {RunStatus.QUEUED.value}
