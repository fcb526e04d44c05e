"""spark_etl: the submission's Python entrypoint, under spark-submit when PySpark is installed.

Its `spec.inputs` / `spec.outputs` table URIs are resolved through the tenant's connections
into environment variables; on success a lineage edge runs from every input to every output.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from controlroom.commands.ports import PYTHON, Connections, JobContext, Launch
from controlroom.jobtypes.base import require_entrypoint
from controlroom.jobtypes.tables import (
    DRY_RUN_ENV,
    INPUTS_ENV,
    OUTPUTS_ENV,
    describe,
    dry_run,
    parse_spec_uris,
    resolve,
)
from controlroom.validation import JobRules, ToolNeeded

SPARK_SUBMIT = "spark-submit"


@dataclass(frozen=True)
class SparkEtl:
    """Plans a spark_etl attempt."""

    connections: Connections
    which: Callable[[str], str | None] = field(default=shutil.which)
    name: str = "spark_etl"
    rules: ClassVar[JobRules] = JobRules(
        python_entrypoint=True,
        # spark-submit is optional (without it the job runs as plain Python, and PySpark launches
        # itself); what code importing pyspark can't run without is a Java VM.
        tools=(ToolNeeded("java", "PySpark runs on a Java VM", when_imports="pyspark"),),
    )

    def plan(self, ctx: JobContext) -> Launch:
        """The entrypoint with its connections' DSNs and URIs in its environment."""
        entry = require_entrypoint(ctx)
        inputs = parse_spec_uris(ctx.spec, "inputs", table_required=True)
        outputs = parse_spec_uris(ctx.spec, "outputs", table_required=True)
        resolved = resolve(
            self.connections, ctx.tenant_id, [u.connection for u in (*inputs, *outputs)]
        )
        spark = self.which(SPARK_SUBMIT)
        argv = [spark, entry] if spark else [PYTHON, "-u", entry]
        env = {
            **resolved.env,
            INPUTS_ENV: describe(inputs, ctx.spec.get("inputs") or []),
            OUTPUTS_ENV: describe(outputs, ctx.spec.get("outputs") or []),
            DRY_RUN_ENV: "true" if dry_run(ctx.spec) else "false",
        }
        edges = [] if dry_run(ctx.spec) else [  # as URIs: the connection is the namespace
            (i.uri, o.uri) for i in inputs for o in outputs if i.entity != o.entity
        ]
        return Launch(argv=argv, env=env, redact=resolved.redact,
                      lineage_on_success=list(dict.fromkeys(edges)))
