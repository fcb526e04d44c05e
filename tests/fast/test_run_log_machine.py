"""Any sequence of commands, through the real handlers and the log, keeps the run and what
`run_status` shows of it in agreement.

tests/unit/test_run_state_machine.py drives the `Run` aggregate alone; this drives
`RunCommands` on an in-memory event store with a run cache (the path a process takes), and
after every step checks that:

- the run as loaded (cache, snapshot and events) is the run replayed from all its events;
- the stream's versions are contiguous from 1;
- `run_status`, fed each new event as its own batch, shows the run's status, attempt and
  cancel flag, and never a `failed` that a retry follows.
"""

from __future__ import annotations

import contextlib
import functools
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.errors import DomainError
from controlroom.domain.runs.retry import RetryPolicy
from controlroom.domain.runs.run import Run
from controlroom.projections.runs import RunStatusProjection, RunStatusView
from tests.fast.memory import CACHED, Clock, control_room, events, feed, job, run_commands
from tests.fast.tables import Tables


class RunThroughTheLog(RuleBasedStateMachine):
    commands: RunCommands
    run_id: UUID

    @initialize(max_retries=st.integers(0, 3))
    def submit(self, max_retries: int) -> None:
        self.clock = Clock()
        self.commands = run_commands(control_room(CACHED), clock=self.clock,
                                     retry=RetryPolicy(base_delay_s=1.0, max_delay_s=8.0))
        self.run_id = self.commands.submit(job(max_retries=max_retries)).run_id
        self.tables = Tables()
        self.view = RunStatusView()
        self.projection = RunStatusProjection(self.view)
        self.position = 0
        self.shown: list[str] = []

    def _try(self, command: functools.partial[object]) -> None:
        self.clock.advance(1)
        with contextlib.suppress(DomainError):  # refused: the invariants check nothing was recorded
            command()

    def _attempt(self, offset: int) -> int:
        return self.commands.load(self.run_id).attempt + offset

    @rule(offset=st.sampled_from([0, 0, 0, 1, -1]))
    def start(self, offset: int) -> None:
        self._try(functools.partial(self.commands.start, self.run_id, self._attempt(offset), "w"))

    @rule(offset=st.sampled_from([0, 0, -1]), lines=st.integers(1, 12))
    def log(self, offset: int, lines: int) -> None:
        chunks = [("stdout", f"line {i}", 1) for i in range(lines)]
        self._try(functools.partial(self.commands.log, self.run_id, chunks, self._attempt(offset)))

    @rule(offset=st.sampled_from([0, 0, -1]))
    def complete(self, offset: int) -> None:
        self._try(functools.partial(self.commands.complete, self.run_id, summary="ok", exit_code=0,
                                    attempt=self._attempt(offset)))

    @rule(offset=st.sampled_from([0, 0, -1]))
    def fail(self, offset: int) -> None:
        self._try(functools.partial(self.commands.fail, self.run_id, reason="exit_code",
                                    message="boom", exit_code=1, attempt=self._attempt(offset)))

    @rule()
    def request_cancel(self) -> None:
        self._try(functools.partial(self.commands.request_cancel, "tenant-a", self.run_id, "bob"))

    @rule()
    def confirm_cancelled(self) -> None:
        self._try(functools.partial(self.commands.confirm_cancelled, self.run_id, "stopped",
                                    self._attempt(0)))

    @invariant()
    def the_loaded_run_is_the_replayed_run(self) -> None:
        stream = events(self.commands, self.run_id)
        assert [e.originator_version for e in stream] == list(range(1, len(stream) + 1))
        replayed: Run = functools.reduce(lambda run, e: e.mutate(run), stream, None)
        loaded = self.commands.load(self.run_id)
        assert (loaded.version, loaded.status, loaded.attempt, loaded.cancel_requested) == (
            replayed.version, replayed.status, replayed.attempt, replayed.cancel_requested)

    @invariant()
    def run_status_shows_the_run(self) -> None:
        last = self.commands.app.recorder.max_notification_id() or 0
        for position in range(self.position + 1, last + 1):  # one batch per event
            feed(self.commands.app, self.projection, self.view, self.tables, start=position,
                 stop=position)
            self.shown.append(self.tables.runs[self.run_id]["status"])
        self.position = last
        run = self.commands.load(self.run_id)
        row = self.tables.runs[self.run_id]
        assert (row["status"], row["attempt"], row["cancel_requested"]) == (
            run.status, run.attempt, run.cancel_requested)
        if "failed" in self.shown:
            assert self.shown[-1] == "failed" == run.status, "a failed run came back"


RunThroughTheLog.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRunThroughTheLog = RunThroughTheLog.TestCase
