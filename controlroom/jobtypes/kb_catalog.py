"""kb_catalog: catalogs schemas or tables into `output/catalog.json` and `output/catalog.md`.

`spec.inputs` are `<connection>://<schema>` (every table of the schema) or
`<connection>://<schema>.<table>`. Lineage: an edge from each catalogued table
(`schema.table`) to the catalog entity `catalog://<job_name>` (percent-encoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from controlroom.commands.ports import PYTHON, Connections, JobContext, Launch, PlanError
from controlroom.jobtypes.tables import (
    INPUTS_ENV,
    describe,
    entity_uri,
    parse_spec_uris,
    resolve,
    spec_uris,
)
from controlroom.validation import JobRules

RUNNER = "controlroom.runners.kb_catalog"
CATALOG_ENTITY_ENV = "CONTROLROOM_CATALOG_ENTITY"
CATALOG_SCHEME = "catalog"


def catalog_entity(job_name: str) -> str:
    """The lineage entity a kb_catalog job with this name writes."""
    return entity_uri(CATALOG_SCHEME, job_name)


@dataclass(frozen=True)
class KbCatalog:
    """Plans a kb_catalog attempt."""

    connections: Connections
    name: str = "kb_catalog"
    rules: ClassVar[JobRules] = JobRules(inputs_need_table=False, connects_inputs=True)
    """An input may name a whole schema: the catalog covers every table in it. The runner
    connects to each input to read its catalog."""

    def plan(self, ctx: JobContext) -> Launch:
        """Run the catalog runner over the resolved inputs."""
        inputs = parse_spec_uris(ctx.spec, "inputs", table_required=False)
        if not inputs:
            raise PlanError("no_inputs", "spec.inputs must name what to catalog: "
                                         "<connection>://<schema> or <connection>://<schema>.<table>")
        declared = spec_uris(ctx.spec, "inputs")
        for uri, item in zip(inputs, declared, strict=True):
            if uri.connection is None:
                raise PlanError("invalid_uri", f"{item.field}: name the connection to read, "
                                               "as in <connection>://<schema>")
        resolved = resolve(self.connections, ctx.tenant_id, [u.connection for u in inputs])
        env = {
            **resolved.env,
            INPUTS_ENV: describe(inputs, [d.uri for d in declared]),
            CATALOG_ENTITY_ENV: catalog_entity(ctx.job_name),
        }
        return Launch(argv=[PYTHON, "-I", "-u", "-m", RUNNER], env=env, redact=resolved.redact)
