"""What each read model makes of the log: the rows and messages that result, in memory.

The events come from the real commands on an in-memory event store and reach each projection
as the pipeline hands them over (decoded once, filtered by its topics, one batch bound to a
cursor); the cursor is `Tables`, which keeps the rows the statements leave.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from controlroom.commands.application import ControlRoom
from controlroom.commands.runs.handlers import RunCommands
from controlroom.domain.api_keys import ApiKey
from controlroom.domain.connections import Connection
from controlroom.domain.lineage.model import LineageJob
from controlroom.domain.webhooks.secret import WebhookSecret
from controlroom.domain.webhooks.subscription import Subscription
from controlroom.projections.api_keys import ApiKeysProjection, ApiKeysView
from controlroom.projections.connections import ConnectionsProjection, ConnectionsView
from controlroom.projections.events import RunEventsProjection, RunEventsView
from controlroom.projections.execution import DispatchProjection, DispatchView
from controlroom.projections.lineage import LineageProjection, LineageView
from controlroom.projections.runs import RunStatusProjection, RunStatusView
from controlroom.projections.view import NoBatchOpenError
from controlroom.projections.webhooks.messages import MAX_SUMMARY_CHARS
from controlroom.projections.webhooks.outbox import OutboxProjection, OutboxView
from tests.fast.memory import EPOCH, Queue, feed, job, run_commands
from tests.fast.tables import Tables

BASE = "https://controlroom.example.com"


@pytest.fixture
def commands() -> RunCommands:
    return run_commands()


def project(app: ControlRoom, projection_class: Any, view_class: Any,
            tables: Tables | None = None) -> Tables:
    """The tables after `projection_class` has read the whole log."""
    tables = tables or Tables()
    view = view_class()
    feed(app, projection_class(view), view, tables)
    return tables


def run_status(commands: RunCommands) -> Tables:
    return project(commands.app, RunStatusProjection, RunStatusView)


def running(commands: RunCommands, **overrides: Any) -> UUID:
    run_id = commands.submit(job(**overrides)).run_id
    commands.start(run_id, 1, "worker-1")
    return run_id


# -- run_status --------------------------------------------------------------------------


def test_a_run_shows_its_submission_and_its_progress_until_completed(commands: RunCommands) -> None:
    run_id = running(commands, labels={"team": "data"}, code={
        "files": [], "repo": "https://git.example.com/etl", "ref": "main"})
    commands.progress(run_id, 40.0, "loading", 1)
    commands.progress(run_id, None, "still loading", 1)
    commands.log(run_id, [("stdout", "a\nb", 2), ("stderr", "c", 1)], 1)
    row = run_status(commands).runs[run_id]
    assert (row["status"], row["attempt"], row["labels"], row["repo"]) == (
        "running", 1, {"team": "data"}, {"url": "https://git.example.com/etl", "ref": "main"})
    assert (row["progress_percent"], row["progress_message"], row["log_lines"]) == (
        40.0, "still loading", 3)
    commands.complete(run_id, summary="all good", exit_code=0, attempt=1)
    row = run_status(commands).runs[run_id]
    assert (row["status"], row["summary"], row["progress_percent"]) == ("completed", "all good", 100)
    assert row["last_position"] == commands.app.recorder.max_notification_id()


def test_a_failure_with_a_retry_to_follow_never_shows_failed(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    commands.fail(run_id, reason="exit_code", message="boom", exit_code=1, attempt=1)
    tables = Tables()
    view = RunStatusView()
    projection = RunStatusProjection(view)
    statuses = []
    for n in commands.app.recorder.select_notifications(start=1, limit=100):
        feed(commands.app, projection, view, tables, start=n.id, stop=n.id)  # a batch each
        statuses.append(tables.runs[run_id]["status"])
    assert "failed" not in statuses and statuses[-1] == "queued"
    row = tables.runs[run_id]
    assert (row["attempt"], row["error_reason"], row["error_message"]) == (2, "exit_code", "boom")
    assert row["next_attempt_at"] is not None


def test_a_new_attempt_clears_the_previous_attempts_error_and_a_final_failure_shows_it(
        commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    commands.fail(run_id, reason="exit_code", message="first", exit_code=1, attempt=1)
    commands.start(run_id, 2, "worker-2")
    row = run_status(commands).runs[run_id]
    assert (row["status"], row["attempt"], row["error_reason"]) == ("running", 2, None)
    commands.fail(run_id, reason="timeout", message="second", exit_code=None, attempt=2)
    row = run_status(commands).runs[run_id]
    assert (row["status"], row["error_reason"], row["error_message"]) == ("failed", "timeout", "second")


def test_a_cancel_request_shows_and_the_cancel_ends_the_run(commands: RunCommands) -> None:
    run_id = running(commands)
    commands.request_cancel("tenant-a", run_id, "bob")
    assert run_status(commands).runs[run_id]["cancel_requested"] is True
    commands.confirm_cancelled(run_id, "cancelled on request", 1)
    row = run_status(commands).runs[run_id]
    assert (row["status"], row["summary"]) == ("cancelled", "cancelled on request")


def test_log_chunks_keep_their_stream_and_attempt_and_a_nul_never_reaches_the_table(
        commands: RunCommands) -> None:
    run_id = running(commands)
    commands.log(run_id, [("stdout", "one\x00two", 1), ("stderr", "three", 1)], 1)
    chunks = list(run_status(commands).log_chunks.values())
    assert [(c["stream"], c["text"], c["attempt"]) for c in chunks] == [
        ("stdout", "one\ufffdtwo", 1), ("stderr", "three", 1)]


def test_an_artifact_is_listed_on_its_run_and_one_missing_required_fields_is_only_a_touch(
        commands: RunCommands) -> None:
    run_id = running(commands)
    good = {"artifact_id": str(uuid4()), "path": "out/a.csv", "size": 3, "sha256": "a" * 64,
            "content_type": "text/csv", "attempt": 1}
    commands.add_artifacts(run_id, [good, {"path": "no-id-or-digest.bin"},
                                    {"artifact_id": str(uuid4()), "path": "x", "external": True,
                                     "url": "s3://bucket/x"}], 1)
    tables = run_status(commands)
    row = tables.runs[run_id]
    assert [a["path"] for a in row["artifacts"]] == ["out/a.csv", "x"]
    assert [a["url"] for a in row["artifacts"]] == [None, "s3://bucket/x"]
    assert sorted(a["path"] for a in tables.artifacts.values()) == ["out/a.csv", "x"]
    assert row["event_count"] == 4  # the touch still counts the event and moves the position
    assert row["last_position"] == commands.app.recorder.max_notification_id()


def test_a_view_writes_only_inside_a_batch() -> None:
    with pytest.raises(NoBatchOpenError):
        RunStatusView().apply(None)  # type: ignore[arg-type]


# -- run_events (live streams) -------------------------------------------------------------


def stream(commands: RunCommands) -> list[dict[str, Any]]:
    rows = project(commands.app, RunEventsProjection, RunEventsView).run_events
    return [rows[k] for k in sorted(rows, key=lambda k: rows[k]["position"])]


def test_a_runs_stream_shows_each_event_once_by_version_and_never_its_secrets_or_code(
        commands: RunCommands) -> None:
    run_id = running(commands, secrets={"PW": "pa55word-x"}, idempotency_key="k-1",
                     callbacks={"on_complete": "https://hooks.example.com/x?token=abc"})
    commands.progress(run_id, 10.0, "p", 1)
    commands.complete(run_id, summary="ok", exit_code=0, attempt=1)
    rows = stream(commands)
    assert [(r["version"], r["event"], r["type"], r["terminal"]) for r in rows] == [
        (1, "status", "submitted", False), (2, "status", "started", False),
        (3, "progress", "progress", False), (4, "status", "completed", True)]
    assert {(r["tenant_id"], r["job_type"]) for r in rows} == {("tenant-a", "spark_etl")}
    shown = repr([r["data"] for r in rows])
    for hidden in ("pa55word", "token=abc", "print('hi')", "k-1", "sealed"):
        assert hidden not in shown


def test_a_failure_with_a_retry_to_follow_is_not_the_end_of_the_stream(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    commands.fail(run_id, reason="exit_code", message="boom", exit_code=1, attempt=1)
    failed, retry = stream(commands)[-2:]
    assert (failed["type"], failed["terminal"], failed["data"]["status"]) == ("failed", False, "running")
    assert failed["data"]["retrying"] is True
    assert (retry["type"], retry["data"]["status"], retry["data"]["attempt"]) == (
        "retry_scheduled", "queued", 2)


# -- lineage -------------------------------------------------------------------------------


def test_a_runs_edges_are_keyed_by_normalised_entities_and_counted_when_seen_again(
        commands: RunCommands) -> None:
    first = running(commands)
    commands.lineage(first, [("supabase://public.orders", "mart.daily"),
                             ("public.orders", "mart.daily")], 1)
    second = running(commands, tenant_id="tenant-a")
    commands.lineage(second, [("public.orders", "mart.daily")], 1)
    other = running(commands, tenant_id="tenant-b")
    commands.lineage(other, [("public.orders", "mart.daily")], 1)
    edges = project(commands.app, LineageProjection, LineageView).edges
    ours = {k: v for k, v in edges.items() if k[0] == "tenant-a"}
    ((key, edge),) = ours.items()
    assert key[1:3] == ("public.orders", "mart.daily")
    assert (edge["seen_count"], edge["source_namespace"], edge["job_name"]) == (3, "supabase", "nightly")
    assert edge["last_run_id"] == str(second)
    assert len(edges) == 2  # another tenant's edge is its own


def test_openlineage_reports_make_an_edge_per_input_and_output(commands: RunCommands) -> None:
    reported = LineageJob.register("tenant-a", "airflow", "etl")
    inputs = [{"name": "raw.a", "namespace": "pg"}, {"name": "raw.b"}]
    reported.report(run_id=str(uuid4()), event_type="COMPLETE", event_time=EPOCH, inputs=inputs,
                    outputs=[{"name": "mart.x"}, {"name": "mart.y"}], producer="test", now=EPOCH)
    commands.app.save(reported)
    edges = project(commands.app, LineageProjection, LineageView).edges
    assert sorted((k[1], k[2]) for k in edges) == [
        ("raw.a", "mart.x"), ("raw.a", "mart.y"), ("raw.b", "mart.x"), ("raw.b", "mart.y")]
    assert {e["job_namespace"] for e in edges.values()} == {"airflow"}


def test_lineage_reads_only_lineage_from_the_log(commands: RunCommands) -> None:
    run_id = running(commands)
    commands.log(run_id, [("stdout", "x", 1)] * 3, 1)
    tables = project(commands.app, LineageProjection, LineageView)
    assert len(tables.sent) == 1  # the submission: logs and starts never reach it


# -- the webhook outbox -----------------------------------------------------------------------


def subscribe(app: ControlRoom, tenant: str, *events: str) -> Subscription:
    sub = Subscription.create(subscription_id=uuid4(), tenant_id=tenant,
                              url="https://hooks.example.com/all", events=list(events), by="alice",
                              now=EPOCH)
    app.save(sub)
    return sub


def outbox(commands: RunCommands) -> Tables:
    return project(commands.app, OutboxProjection.linking_to(BASE + "/"), OutboxView)


def test_the_runs_own_callbacks_get_the_events_they_name(commands: RunCommands) -> None:
    run_id = running(commands, callbacks={"on_start": "https://cb.example.com/start",
                                          "on_complete": "https://cb.example.com/done"})
    commands.progress(run_id, 50.0, "half", 1)
    commands.complete(run_id, summary="ok", exit_code=0, attempt=1)
    tables = outbox(commands)
    assert [e["event_type"] for e in tables.webhook_events.values()] == [
        "run.submitted", "run.started", "run.progress", "run.completed"]
    assert [(d["event_type"], d["target"], d["url"]) for d in tables.deliveries] == [
        ("run.started", "on_start", "https://cb.example.com/start"),
        ("run.completed", "on_complete", "https://cb.example.com/done")]
    done = tables.deliveries[-1]["payload"]
    assert done["data"]["run_url"] == f"{BASE}/api/v1/runs/{run_id}"
    assert (done["data"]["status"], done["data"]["summary"], done["data"]["attempt"]) == (
        "completed", "ok", 1)


def test_subscriptions_get_only_the_events_they_asked_for_of_their_tenant(commands: RunCommands) -> None:
    done = subscribe(commands.app, "tenant-a", "run.completed")
    everything = subscribe(commands.app, "tenant-a", "run.submitted", "run.failed")
    subscribe(commands.app, "tenant-b", "run.completed")
    run_id = running(commands)
    commands.complete(run_id, summary="ok", exit_code=0, attempt=1)
    got = [(d["subscription_id"], d["event_type"]) for d in outbox(commands).deliveries]
    assert got == [(everything.id, "run.submitted"), (done.id, "run.completed")]


def test_a_retried_failure_is_run_retrying_and_only_the_final_one_run_failed(commands: RunCommands) -> None:
    sub = subscribe(commands.app, "tenant-a", "run.failed", "run.retrying")
    run_id = running(commands, max_retries=1, callbacks={"on_fail": "https://cb.example.com/fail"})
    commands.fail(run_id, reason="exit_code", message="first", exit_code=1, attempt=1)
    commands.start(run_id, 2, "worker-2")
    commands.fail(run_id, reason="exit_code", message="second", exit_code=1, attempt=2)
    deliveries = outbox(commands).deliveries
    assert [(d["event_type"], d["target"]) for d in deliveries] == [
        ("run.retrying", "subscription"), ("run.failed", "subscription"), ("run.failed", "on_fail")]
    assert {d["subscription_id"] for d in deliveries[:2]} == {sub.id}
    final = deliveries[-1]["payload"]["data"]
    assert (final["attempt"], final["error"]["message"], final["retrying"]) == (2, "second", False)


def test_a_deleted_subscription_gets_nothing_more_and_its_pending_deliveries_are_cancelled(
        commands: RunCommands) -> None:
    sub = subscribe(commands.app, "tenant-a", "run.submitted", "run.completed")
    run_id = running(commands)
    sub.delete(by="alice", now=EPOCH)
    commands.app.save(sub)
    commands.complete(run_id, summary="ok", exit_code=0, attempt=1)
    tables = outbox(commands)
    assert [(d["event_type"], d["status"]) for d in tables.deliveries] == [("run.submitted", "cancelled")]
    assert tables.subscriptions[sub.id]["status"] == "deleted"


def test_a_message_says_which_artifacts_the_run_made_and_caps_its_summary(commands: RunCommands) -> None:
    run_id = running(commands, callbacks={"on_complete": "https://cb.example.com/done"})
    artifact_id = str(uuid4())
    commands.add_artifacts(run_id, [{"artifact_id": artifact_id, "path": "out/a.csv", "size": 1,
                                     "sha256": "0" * 64, "attempt": 1}], 1)
    commands.complete(run_id, summary="s" * 5000, exit_code=0, attempt=1)
    (done,) = outbox(commands).deliveries
    data = done["payload"]["data"]
    assert data["artifacts"] == [{"path": "out/a.csv",
                                  "url": f"{BASE}/api/v1/artifacts/{artifact_id}/content"}]
    assert len(data["summary"]) == MAX_SUMMARY_CHARS and data["summary"].endswith("…")


def test_an_artifact_message_says_the_status_of_the_run_it_was_added_to(commands: RunCommands) -> None:
    subscribe(commands.app, "tenant-a", "run.artifact_added", "lineage.edge_recorded")
    run_id = commands.submit(job(max_retries=1)).run_id

    def artifact(path: str) -> dict[str, Any]:
        return {"artifact_id": str(uuid4()), "path": path, "size": 1, "sha256": "0" * 64}

    commands.add_artifacts(run_id, [artifact("queued.csv")])
    commands.start(run_id, 1, "worker-1")
    commands.add_artifacts(run_id, [artifact("running.csv")], 1)
    commands.lineage(run_id, [("s3://in", "s3://out")], 1)
    commands.fail(run_id, reason="exit_code", message="first", exit_code=1, attempt=1)
    commands.add_artifacts(run_id, [artifact("retry.csv")])
    sent = [(d["event_type"], d["payload"]["data"]) for d in outbox(commands).deliveries]
    assert [(kind, data.get("artifact", {}).get("path"), data["status"]) for kind, data in sent] == [
        ("run.artifact_added", "queued.csv", "queued"),
        ("run.artifact_added", "running.csv", "running"),
        ("lineage.edge_recorded", None, "running"),
        ("run.artifact_added", "retry.csv", "queued"),
    ]


def test_a_rotated_webhook_secret_is_kept_sealed(commands: RunCommands) -> None:
    secret = WebhookSecret.create("tenant-a")
    secret.rotate(sealed="sealed-secret-1", grace_s=0, now=EPOCH)
    commands.app.save(secret)
    assert outbox(commands).webhook_secrets["tenant-a"]["current"] == "sealed-secret-1"


# -- dispatch, connections, API keys ------------------------------------------------------------


def test_the_dispatcher_sends_each_submission_and_each_retry_with_its_wait(commands: RunCommands) -> None:
    run_id = running(commands, max_retries=1)
    commands.fail(run_id, reason="exit_code", message="", exit_code=1, attempt=1)
    queue = Queue()
    project(commands.app, DispatchProjection.feeding(queue), DispatchView)
    retry = commands.load(run_id)
    assert queue.sent == [(run_id, 1, None), (run_id, 2, retry.not_before)]


def test_a_connection_is_kept_sealed_with_its_masked_form_and_goes_when_deleted(
        commands: RunCommands) -> None:
    conn = Connection.create("tenant-a", "warehouse")
    conn.set(sealed_dsn="sealed-1", display_dsn="postgresql://u:***@db/w", by="alice", now=EPOCH)
    commands.app.save(conn)
    rows = project(commands.app, ConnectionsProjection, ConnectionsView).connections
    assert rows[("tenant-a", "warehouse")]["sealed_dsn"] == "sealed-1"
    assert rows[("tenant-a", "warehouse")]["display_dsn"] == "postgresql://u:***@db/w"
    conn.delete(by="alice", now=EPOCH)
    commands.app.save(conn)
    assert project(commands.app, ConnectionsProjection, ConnectionsView).connections == {}


def test_an_api_key_is_stored_by_hash_only_and_its_revocation_shows(commands: RunCommands) -> None:
    plain = "cr_" + uuid4().hex
    key = ApiKey.issue(key_id=uuid4(), tenant_id="tenant-a", name="ci", scopes=None, key=plain,
                       by="alice", now=EPOCH)
    commands.app.save(key)
    tables = project(commands.app, ApiKeysProjection, ApiKeysView)
    row = tables.api_keys[key.id]
    assert plain not in repr(tables.sent) and row["last4"] == plain[-4:]
    assert row["revoked_at"] is None
    key.revoke(by="bob", now=EPOCH)
    commands.app.save(key)
    row = project(commands.app, ApiKeysProjection, ApiKeysView).api_keys[key.id]
    assert (row["revoked_at"], row["revoked_by"]) == (EPOCH, "bob")
