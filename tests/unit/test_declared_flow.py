"""What a run's spec declares it reads and writes, the lineage that implies, and submissions
recorded before a run could name its client (events are forever)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from controlroom.commands.application import ControlRoom
from controlroom.domain.lineage.data_flow import DeclarationError, declared, lineage_edges
from controlroom.domain.runs.run import Run

PRD_INPUTS = {"source": "supabase://schema.table", "target": "supabase://schema.output_table"}


def test_the_prd_object_of_roles_reads_every_role_but_target() -> None:
    spec = {"inputs": {**PRD_INPUTS, "lookup": "ref.codes"}, "outputs": ["mart.daily"]}
    assert [(d.field, d.uri, d.written) for d in declared(spec)] == [
        ("spec.inputs.source", "supabase://schema.table", False),
        ("spec.inputs.target", "supabase://schema.output_table", True),
        ("spec.inputs.lookup", "ref.codes", False),
        ("spec.outputs[0]", "mart.daily", True),
    ]
    assert lineage_edges({"inputs": PRD_INPUTS}) == [
        ("supabase://schema.table", "supabase://schema.output_table")]


def test_lists_pair_every_input_with_every_output_once_and_never_an_entity_with_itself() -> None:
    spec = {"inputs": ["a.x", "b.y", "a.x"], "outputs": ["c.z", "b.y"]}
    assert lineage_edges(spec) == [("a.x", "c.z"), ("a.x", "b.y"), ("b.y", "c.z")]


@pytest.mark.parametrize("spec", [
    {"inputs": ["a.x"]}, {"outputs": ["a.x"]}, {}, {"inputs": PRD_INPUTS, "dry_run": True},
    {"inputs": "a.x", "outputs": ["b.y"]},
])
def test_no_edges_without_both_ends_in_a_dry_run_or_from_a_malformed_spec(spec: dict[str, Any]) -> None:
    assert lineage_edges(spec) == []


@pytest.mark.parametrize(("spec", "field"), [
    ({"inputs": "a.x"}, "spec.inputs"),
    ({"inputs": {"source": 5}}, "spec.inputs.source"),
    ({"outputs": [None]}, "spec.outputs[0]"),
    ({"outputs": {"target": "a.b"}}, "spec.outputs"),
])
def test_a_malformed_declaration_names_its_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(DeclarationError) as raised:
        declared(spec)
    assert raised.value.field == field


def test_a_submission_recorded_before_clients_were_named_still_loads() -> None:
    app = ControlRoom(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    run = Run.submit(
        run_id=uuid4(), tenant_id="t", job_type="spark_etl", created_by="alice",
        code={"files": [{"path": "main.py", "content": ""}]}, spec={}, sealed_secrets=None,
        timeout_s=60, max_retries=0, labels={}, callbacks={}, idempotency_key=None,
        request_hash="h", job_name="j", submitted_at=datetime(2024, 1, 1, tzinfo=UTC),
        client="continue-ide-plugin",
    )
    (event,) = run.collect_events()
    stored = app.mapper.to_stored_event(event)
    # As a release before `client` wrote it: no class_version, no client.
    state = app.mapper.transcoder.decode(stored.state)
    del state["client"], state["class_version"]
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      app.mapper.transcoder.encode(state))
    loaded = app.mapper.to_domain_event(old)
    assert isinstance(loaded, Run.RunSubmitted) and loaded.client is None
    assert loaded.mutate(None).client is None  # type: ignore[union-attr]
    assert app.mapper.to_domain_event(stored).client == "continue-ide-plugin"  # type: ignore[attr-defined]
