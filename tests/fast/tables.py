"""A stand-in for the cursor of the pipeline's open batch, holding the read-model tables in memory.

Each read model writes through a handful of statements (the constants of its module). The
fake knows what each of them does to its rows — only those, by identity: a statement it has
not been taught fails the test at once rather than being passed over, so a read model that
starts writing something new can't go unnoticed here. What the statements do is mirrored
from their SQL; the SQL itself is run against PostgreSQL by the integration tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from controlroom.projections import api_keys, connections, lineage
from controlroom.projections import events as run_events
from controlroom.projections import runs as run_status
from controlroom.projections.webhooks import outbox

Row = dict[str, Any]
Params = dict[str, Any]


def _plain(value: Any) -> Any:
    return value.obj if isinstance(value, Jsonb) else value


@dataclass
class Tables:
    """The rows the statements of this batch (and the ones before) left."""

    runs: dict[Any, Row] = field(default_factory=dict)
    log_chunks: dict[tuple[Any, int], Row] = field(default_factory=dict)
    artifacts: dict[Any, Row] = field(default_factory=dict)
    run_events: dict[tuple[Any, int], Row] = field(default_factory=dict)
    lineage_runs: dict[Any, Row] = field(default_factory=dict)
    edges: dict[tuple[str, str, str, Any], Row] = field(default_factory=dict)
    webhook_runs: dict[Any, Row] = field(default_factory=dict)
    webhook_events: dict[int, Row] = field(default_factory=dict)
    deliveries: list[Row] = field(default_factory=list)
    subscriptions: dict[Any, Row] = field(default_factory=dict)
    webhook_secrets: dict[str, Row] = field(default_factory=dict)
    connections: dict[tuple[str, str], Row] = field(default_factory=dict)
    api_keys: dict[Any, Row] = field(default_factory=dict)
    sent: list[tuple[str, Params]] = field(default_factory=list)
    """Every statement in order, with its parameters as bound."""

    # -- the psycopg cursor, as far as the views use it ------------------------------

    def execute(self, sql: str, params: Any = None, *, prepare: bool | None = None) -> Tables:
        self.sent.append((sql, params))
        self._fetched = self._do(sql, params)
        return self

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        for params in rows:
            self.execute(sql, params)

    def fetchone(self) -> Row | None:
        return self._fetched

    def _do(self, sql: str, params: Any) -> Row | None:
        effect = self._effects().get(sql)
        if effect is None:
            raise AssertionError(f"a statement the fake does not model:\n{sql}")
        return effect(params)

    def _effects(self) -> dict[str, Callable[[Any], Row | None]]:
        rs, lg, ob = run_status, lineage, outbox
        return {
            rs.INSERT_RUN: self._insert_run, rs.STARTED: self._run(self._started),
            rs.PROGRESSED: self._run(self._progressed), rs.LOGGED: self._logged,
            rs.COMPLETED: self._run(self._completed), rs.FAILED: self._run(self._failed),
            rs.ATTEMPT_FAILED: self._run(self._attempt_failed),
            rs.CANCEL_REQUESTED: self._run(lambda r, p: r.update(cancel_requested=True)),
            rs.CANCELLED: self._run(lambda r, p: r.update(
                status="cancelled", completed_at=p["at"], summary=p["reason"])),
            rs.RETRY_SCHEDULED: self._run(self._retry_scheduled),
            rs.TOUCHED: self._run(lambda r, p: None),
            rs.ARTIFACT_ADDED: self._run(lambda r, p: r["artifacts"].extend(_plain(p["shown"]))),
            rs.INSERT_ARTIFACT: self._insert_artifact,
            run_events.INSERT_FIRST: self._run_event,
            run_events.INSERT_NEXT: self._run_event,
            lg.INSERT_RUN: self._lineage_run,
            lg.UPSERT_RUN_EDGES: lambda p: self._edges(p, self.lineage_runs.get(p["run_id"])),
            lg.UPSERT_JOB_EDGES: lambda p: self._edges(p, {
                "tenant_id": p["tenant_id"], "job_id": p["job_id"], "job_name": p["job_name"],
                "job_namespace": p["job_namespace"]}),
            ob.GET_FACTS: lambda p: self.webhook_runs.get(p[0]),
            ob.PUT_FACTS: self._put_facts, ob.INSERT_EVENT: self._webhook_event,
            ob.FAN_OUT: self._fan_out, ob.PUT_SUBSCRIPTION: self._subscribe,
            ob.END_SUBSCRIPTION: self._end_subscription,
            ob.PUT_SECRET: lambda p: self.webhook_secrets.__setitem__(p["tenant_id"], dict(p)),
            connections.UPSERT: self._connection,
            connections.DELETE: lambda p: self.connections.pop((p["tenant_id"], p["name"]), None),
            api_keys.INSERT: lambda p: self.api_keys.setdefault(p["id"], {**p, "revoked_at": None}),
            api_keys.REVOKE: self._revoke,
        }

    # -- run_status ----------------------------------------------------------------------

    def _insert_run(self, p: Params) -> None:
        row = {k: _plain(v) for k, v in p.items()}
        row.update(status="queued", attempt=1, created_at=p["at"], updated_at=p["at"],
                   last_position=p["position"], event_count=0, log_lines=0, artifacts=[],
                   cancel_requested=False, progress_percent=None, progress_message=None,
                   error_reason=None, error_message=None, exit_code=None, summary=None,
                   started_at=None, completed_at=None, next_attempt_at=None)
        self.runs.setdefault(p["run_id"], row)

    def _run(self, change: Callable[[Row, Params], object]) -> Callable[[Params], None]:
        def update(p: Params) -> None:
            row = self.runs.get(p["run_id"])
            if row is not None:
                change(row, p)
                row.update(updated_at=p["at"], last_position=p["position"],
                           event_count=row["event_count"] + 1)
        return update

    @staticmethod
    def _started(r: Row, p: Params) -> None:
        r.update(status="running", started_at=p["at"], attempt=p["attempt"], progress_percent=None,
                 progress_message=None, error_reason=None, error_message=None, exit_code=None)

    @staticmethod
    def _progressed(r: Row, p: Params) -> None:
        if p["percent"] is not None:
            r["progress_percent"] = p["percent"]
        r["progress_message"] = p["message"]

    @staticmethod
    def _completed(r: Row, p: Params) -> None:
        r.update(status="completed", completed_at=p["at"], summary=p["summary"],
                 exit_code=p["exit_code"], progress_percent=100, error_reason=None,
                 error_message=None)

    @staticmethod
    def _failed(r: Row, p: Params) -> None:
        r.update(status="failed", completed_at=p["at"])
        Tables._attempt_failed(r, p)

    @staticmethod
    def _attempt_failed(r: Row, p: Params) -> None:
        r.update(error_reason=p["reason"], error_message=p["message"], exit_code=p["exit_code"])

    @staticmethod
    def _retry_scheduled(r: Row, p: Params) -> None:
        r.update(status="queued", attempt=p["attempt"], next_attempt_at=p["not_before"],
                 cancel_requested=False, started_at=None, completed_at=None)

    def _logged(self, p: Params) -> None:
        row = self.runs.get(p["run_id"])
        if row is None:
            return
        self._run(lambda r, q: r.update(log_lines=r["log_lines"] + q["lines"]))(p)
        self.log_chunks.setdefault((p["run_id"], p["position"]), {
            "tenant_id": row["tenant_id"], "attempt": p["attempt"], "stream": p["stream"],
            "text": p["text"], "lines": p["lines"]})

    def _insert_artifact(self, p: Params) -> None:
        row = self.runs.get(p["run_id"])
        if row is not None:
            self.artifacts.setdefault(p["artifact_id"], {**p, "tenant_id": row["tenant_id"]})

    # -- run_events ----------------------------------------------------------------------

    def _run_event(self, p: Params) -> None:
        first = self.run_events.get((p["run_id"], 1))
        if "tenant_id" not in p and first is None:
            return  # a run whose submission this model never saw: nothing to take them from
        owner = {"tenant_id": p.get("tenant_id", first and first["tenant_id"]),
                 "job_type": p.get("job_type", first and first["job_type"])}
        self.run_events.setdefault((p["run_id"], p["version"]),
                                   {**p, **owner, "data": _plain(p["data"])})

    # -- lineage -------------------------------------------------------------------------

    def _lineage_run(self, p: Params) -> None:
        self.lineage_runs.setdefault(str(p["run_id"]), {**p, "job_namespace": lineage.RUN_JOB_NAMESPACE})

    def _edges(self, p: Params, job: Row | None) -> None:
        if job is None:
            return
        assert len(set(zip(p["sources"], p["targets"], strict=True))) == len(p["sources"]), \
            "PostgreSQL refuses an upsert touching one row twice"
        for source, target, sns, tns in zip(p["sources"], p["targets"], p["sns"], p["tns"], strict=True):
            key = (job["tenant_id"], source, target, job["job_id"])
            edge = self.edges.get(key)
            if edge is None:
                self.edges[key] = {"job_name": job["job_name"], "job_namespace": job["job_namespace"],
                                   "source_namespace": sns, "target_namespace": tns,
                                   "first_run_id": p["run_id"], "last_run_id": p["run_id"],
                                   "seen_count": 1, "position": p["position"]}
            else:
                edge.update(last_run_id=p["run_id"], seen_count=edge["seen_count"] + 1,
                            position=p["position"],
                            source_namespace=sns or edge["source_namespace"],
                            target_namespace=tns or edge["target_namespace"])

    # -- the webhook outbox --------------------------------------------------------------

    def _put_facts(self, p: Params) -> None:
        fields = ("tenant_id", "job_type", "job_name", "callbacks", "attempt", "started_at",
                  "artifacts")
        self.webhook_runs[p["run_id"]] = {k: _plain(p[k]) for k in fields}

    def _webhook_event(self, p: Params) -> None:
        self.webhook_events.setdefault(p["position"], {
            "tenant_id": p["tenant_id"], "run_id": p["run_id"], "event_type": p["event_type"],
            "payload": _plain(p["payload"])})

    def _fan_out(self, p: Params) -> None:
        targets = [(s["subscription_id"], "subscription", s["url"])
                   for s in self.subscriptions.values()
                   if s["tenant_id"] == p["tenant_id"] and s["status"] == "active"
                   and p["event_type"] in s["events"]]
        if p["callback_url"] is not None:
            targets.append((None, p["callback"], p["callback_url"]))
        for subscription_id, target, url in targets:
            delivery = {"position": p["position"], "run_id": p["run_id"],
                        "event_type": p["event_type"], "target": target, "url": url,
                        "subscription_id": subscription_id, "payload": _plain(p["payload"]),
                        "status": "pending"}
            if not any(d["position"] == p["position"] and d["target"] == target
                       and d["subscription_id"] == subscription_id for d in self.deliveries):
                self.deliveries.append(delivery)

    def _subscribe(self, p: Params) -> None:
        self.subscriptions.setdefault(p["id"], {
            "subscription_id": p["id"], "tenant_id": p["tenant_id"], "url": p["url"],
            "events": list(p["events"]), "status": "active"})

    def _end_subscription(self, p: Params) -> None:
        if p["id"] in self.subscriptions:
            self.subscriptions[p["id"]].update(status=p["status"], status_reason=p["reason"])
        for d in self.deliveries:
            if d["subscription_id"] == p["id"] and d["status"] == "pending":
                d["status"] = "cancelled"

    # -- connections and API keys --------------------------------------------------------

    def _connection(self, p: Params) -> None:
        key = (p["tenant_id"], p["name"])
        current = self.connections.get(key)
        if current is None or current["last_position"] < p["position"]:
            self.connections[key] = {**p, "last_position": p["position"]}

    def _revoke(self, p: Params) -> None:
        key = self.api_keys.get(p["id"])
        if key is not None and key["position"] < p["position"]:
            key.update(revoked_at=p["at"], revoked_by=p["by"], position=p["position"])
