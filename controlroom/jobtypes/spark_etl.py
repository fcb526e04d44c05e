"""spark_etl: the submission's Python entrypoint, under spark-submit when PySpark is installed.

Its `spec.inputs` / `spec.outputs` table URIs are resolved through the tenant's connections
into environment variables. Only the job's own code connects: a connection the tenant has not
configured leaves its variable unset (`env: null` in the URI's description) instead of
stopping the run. On success a lineage edge runs from every input to every output: the
declared flow every job type records (`JobTypes.plan`).
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
    spec_uris,
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
            self.connections, ctx.tenant_id, [u.connection for u in (*inputs, *outputs)],
            optional=True,
        )
        spark = self.which(SPARK_SUBMIT)
        argv = [spark, entry] if spark else [PYTHON, "-u", entry]
        texts = {key: [d.uri for d in spec_uris(ctx.spec, key)] for key in ("inputs", "outputs")}
        env = {
            **resolved.env,
            INPUTS_ENV: describe(inputs, texts["inputs"], resolved.missing),
            OUTPUTS_ENV: describe(outputs, texts["outputs"], resolved.missing),
            DRY_RUN_ENV: "true" if dry_run(ctx.spec) else "false",
        }
        return Launch(argv=argv, env=env, redact=resolved.redact)
