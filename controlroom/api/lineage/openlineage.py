"""POST /api/v1/lineage: OpenLineage events, as Marquez serves them (Spark, Airflow, dbt, …).

Each RunEvent (or JobEvent) is recorded on its job's stream, and every input → output
dataset pair becomes an edge of the lineage graph. A DatasetEvent (no job) names no edge
and is accepted without recording anything.

Every field of the OpenLineage spec is understood; a field outside it is refused by name
(422). Facets and `schemaURL` are not kept: the answer's `not_kept` names each one sent.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import msgspec
from litestar import Request, post

from controlroom.api.auth import Principal, requires
from controlroom.api.deps import Deps
from controlroom.api.gate.json_body import check_depth
from controlroom.api.problems import ProblemError, from_decode_error, invalid
from controlroom.api.runs.submission import check_storable
from controlroom.api.views import API
from controlroom.commands.lineage import LineageCommands
from controlroom.domain.lineage.model import job_id

MAX_DATASETS = 1_000
"""Inputs (and outputs) per event."""
MAX_EDGES = 10_000
"""Input-output pairs per event."""
LINEAGE = "lineage"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


Facets = dict[str, Any] | None
"""OpenLineage facets (open: any producer's own): understood, not kept — named in `not_kept`."""


class Dataset(msgspec.Struct, forbid_unknown_fields=True):
    """An OpenLineage dataset: the graph's entity is its name, in its namespace."""

    namespace: Name
    name: Name
    facets: Facets = None
    input_facets: Facets = msgspec.field(name="inputFacets", default=None)
    output_facets: Facets = msgspec.field(name="outputFacets", default=None)


class Job(msgspec.Struct, forbid_unknown_fields=True):
    """The OpenLineage job: namespace and name identify it across runs."""

    namespace: Name
    name: Name
    facets: Facets = None


class Run(msgspec.Struct, forbid_unknown_fields=True):
    """The OpenLineage run."""

    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = msgspec.field(name="runId")
    facets: Facets = None


class LineageEvent(msgspec.Struct, forbid_unknown_fields=True):
    """An OpenLineage RunEvent (JobEvent without `run`, DatasetEvent without `job`)."""

    event_time: datetime = msgspec.field(name="eventTime")
    schema_url: Annotated[str, msgspec.Meta(max_length=1024)] | None = msgspec.field(
        name="schemaURL", default=None)
    dataset: Facets = None
    """A DatasetEvent's dataset (it names no edge): understood, not kept."""
    producer: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    event_type: str | None = msgspec.field(name="eventType", default=None)
    run: Run | None = None
    job: Job | None = None
    inputs: Annotated[list[Dataset], msgspec.Meta(max_length=MAX_DATASETS)] = []
    outputs: Annotated[list[Dataset], msgspec.Meta(max_length=MAX_DATASETS)] = []


class LineageRecorded(msgspec.Struct):
    """What was recorded: the job's id, the run, and how many edges the event named."""

    job_id: str | None
    run_id: str | None
    edges: int
    not_kept: list[str] = []
    """Fields of the event that were understood but not recorded (facets, `schemaURL`)."""


def not_kept(event: LineageEvent) -> list[str]:
    """Where the event carries what is not recorded, as field paths (`inputs[0].facets`)."""
    found = [name for name, value in (("schemaURL", event.schema_url), ("dataset", event.dataset))
             if value is not None]
    found += [f"{name}.facets" for name, part in (("run", event.run), ("job", event.job))
              if part is not None and part.facets is not None]
    for side in ("inputs", "outputs"):
        for i, d in enumerate(getattr(event, side)):
            found += [f"{side}[{i}].{key}" for key, value in (
                ("facets", d.facets), ("inputFacets", d.input_facets),
                ("outputFacets", d.output_facets)) if value is not None]
    return found


_decode = msgspec.json.Decoder(LineageEvent)


def _body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body, gunzipped when the client compressed it (the Python client can)."""
    if (encoding or "").strip().lower() != "gzip":
        return raw
    inflate = zlib.decompressobj(wbits=31)
    try:
        body = inflate.decompress(raw, limit)
    except zlib.error:
        raise ProblemError(400, "Malformed body", "Content-Encoding is gzip but the body is not") from None
    if inflate.unconsumed_tail:
        raise ProblemError(413, "Payload too large", f"the decompressed body exceeds {limit} bytes")
    return body


def decode(raw: bytes) -> LineageEvent:
    """Decode and check one OpenLineage event."""
    check_depth(raw)  # again: a gzip body is only checked once inflated
    try:
        event = _decode.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise from_decode_error(e) from None
    check_storable(msgspec.to_builtins(event))  # every string of it is recorded, NUL can't be
    if len(event.inputs) * len(event.outputs) > MAX_EDGES:
        raise invalid("outputs", f"the inputs and outputs may pair into at most {MAX_EDGES} edges")
    return event


def _commands(deps: Deps) -> LineageCommands:
    if deps.lineage_commands is None:
        raise RuntimeError("no LineageCommands were given to Deps")
    return deps.lineage_commands


@post(f"{API}/lineage", guards=[requires("lineage:write")], status_code=201)
async def post_lineage(request: Request[Principal, str, Any]) -> LineageRecorded:
    """Record an OpenLineage event: each input → output dataset pair becomes an edge."""
    deps: Deps = request.app.state.deps
    limit = request.route_handler.resolve_request_max_body_size() or MAX_EDGES * 1024
    event = decode(_body(await request.body(), request.headers.get("content-encoding"), limit))
    unkept = not_kept(event)
    if event.job is None:
        return LineageRecorded(job_id=None, run_id=None, edges=0, not_kept=unkept)
    tenant = request.user.tenant_id
    jid = str(job_id(tenant, event.job.namespace, event.job.name))
    run_id = event.run.run_id if event.run is not None else ""
    edges = len({(i.namespace, i.name, o.namespace, o.name)
                 for i in event.inputs for o in event.outputs})
    if not edges:  # e.g. a START naming only inputs: nothing for the graph, nothing to keep
        return LineageRecorded(job_id=jid, run_id=run_id or None, edges=0, not_kept=unkept)
    def as_dicts(datasets: list[Dataset]) -> list[dict[str, str]]:
        return [{"namespace": d.namespace, "name": d.name} for d in datasets]  # facets not kept
    position = await deps.write(partial(
        _commands(deps).report, tenant, job_namespace=event.job.namespace,
        job_name=event.job.name, run_id=run_id, event_type=event.event_type,
        event_time=event.event_time, inputs=as_dicts(event.inputs),
        outputs=as_dicts(event.outputs), producer=event.producer,
    ))
    await deps.settle(position, LINEAGE)  # the graph shows it from the next request on
    return LineageRecorded(job_id=jid, run_id=run_id or None, edges=edges, not_kept=unkept)
