"""Runs the three checks of one job: parsing inline, tool and database lookups off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence

from controlroom.commands.ports import Connections
from controlroom.validation import dependencies, schema
from controlroom.validation.model import Findings, Issue, Job, Report, SourceFile, report
from controlroom.validation.ports import Tables, Tools
from controlroom.validation.rules import DEFAULT_RULES, JobRules
from controlroom.validation.schema import Named
from controlroom.validation.syntax import dot_errors, parser_of, python_trees, sql_errors

log = logging.getLogger("controlroom.validation")

LOOKUP_TIMEOUT_S = 5.0
"""Connections and tables are looked up within this; past it they are warnings, not errors."""
INLINE_CHARS = 256 * 1024
"""Code up to this size is parsed on the event loop (a thread hop costs more than the parse)."""
UNREACHABLE = "the database could not be reached"


class Preflight:
    """Validates jobs against the worker's tools and the tenant's connections and databases."""

    def __init__(self, tools: Tools, *, connections: Connections | None = None,
                 tables: Tables | None = None, job_rules: Mapping[str, JobRules] | None = None,
                 lookup_timeout_s: float = LOOKUP_TIMEOUT_S,
                 executors: Collection[str] = ("local",), default_executor: str = "local") -> None:
        self.tools = tools
        self.job_rules = dict(job_rules or {})
        """What each job type demands (declared by the job type plugins)."""
        self.executors = tuple(executors)
        self.default_executor = default_executor
        self.connections = connections
        self.tables = tables
        self.lookup_timeout_s = lookup_timeout_s

    async def validate(self, job: Job, tenant_id: str) -> Report:
        """The report of `job`; never raises for what the job contains."""
        syntax, shape, deps = Findings(), Findings(), Findings()
        rules = self.job_rules.get(job.job_type, DEFAULT_RULES)
        if sum(len(f.content) for f in job.files) <= INLINE_CHARS:
            named = self.parse(job, rules, syntax, shape, deps)
        else:
            named = await asyncio.to_thread(self.parse, job, rules, syntax, shape, deps)
        dots = [f for f in job.files if parser_of(f.path) == "dot"]
        wanted = [n for n in named if n.connection is not None]
        if dots or wanted:  # tasks cost event-loop turns: only when there is something to wait for
            await asyncio.gather(self._dot(dots, syntax),
                                 self._lookups(job.job_type, wanted, tenant_id, shape))
        order = {f.path: i for i, f in enumerate(job.files)}
        syntax.errors.sort(key=lambda e: (order.get(e.path or "", 0), e.line or 0, e.column or 0))
        return report([syntax.check("syntax"), shape.check("schema"), deps.check("dependencies")])

    def parse(self, job: Job, rules: JobRules, syntax: Findings, shape: Findings,
              deps: Findings) -> list[Named]:
        """The CPU-bound part: Python and SQL parsed, the job's shape and imports checked."""
        trees = python_trees(job, syntax)
        for f in job.files:
            if parser_of(f.path) == "sql":
                sql_errors(f, syntax)
        dependencies.check(job, rules, trees, self.tools, deps)
        dependencies.executor(job, self.executors, self.default_executor, deps)
        return schema.shape(job, rules, shape)

    async def _dot(self, files: list[SourceFile], syntax: Findings) -> None:
        results = await asyncio.gather(
            *(asyncio.to_thread(self.tools.parse_dot, f.content) for f in files), return_exceptions=True
        )
        for f, result in zip(files, results, strict=True):
            if result is None:
                syntax.warn(f.path, "not parsed: Graphviz is not installed on the worker")
            elif isinstance(result, TimeoutError):
                syntax.warn(f.path, "not parsed: Graphviz took too long to read it")
            elif isinstance(result, BaseException):
                log.warning("Graphviz failed on %s: %r", f.path, result)
                syntax.warn(f.path, "not parsed: Graphviz could not be run")
            else:
                dot_errors(f, result[0], result[1], syntax)

    async def _lookups(self, job_type: str, wanted: Sequence[Named], tenant_id: str,
                       found: Findings) -> None:
        if not wanted:
            return
        known = await self._names(tenant_id)
        sources = [n for n in schema.connections(job_type, wanted, known, found)
                   if n.source and n.uri]
        exists: dict[str, bool | str] = {}
        by_connection: dict[str, list[Named]] = {}
        for n in sources:
            by_connection.setdefault(n.connection or "", []).append(n)
        answers = await asyncio.gather(
            *(self._exist(tenant_id, name, group) for name, group in by_connection.items())
        )
        for answer in answers:
            exists.update(answer)
        schema.tables(sources, exists, found)

    async def _names(self, tenant_id: str) -> set[str] | None:
        if self.connections is None:
            return set()
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                return set(await asyncio.to_thread(self.connections.names, tenant_id))
        except Exception as e:  # unavailable: a warning, never a rejection
            log.warning("could not list connections of %s: %s", tenant_id, type(e).__name__)
            return None

    async def _exist(self, tenant_id: str, name: str, group: list[Named]) -> dict[str, bool | str]:
        if self.tables is None or self.connections is None:
            return {n.field: "table lookups are not configured" for n in group}
        connections, tables = self.connections, self.tables

        names = [(n.uri.schema, n.uri.table) for n in group if n.uri is not None]

        def ask() -> list[bool]:
            return tables.exist(connections.dsn(tenant_id, name), names)

        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                found = await asyncio.to_thread(ask)
        except TimeoutError:
            return {n.field: f"the database did not answer within {self.lookup_timeout_s:g} s"
                    for n in group}
        except Exception as e:  # the message could carry a host or user name: not echoed
            log.info("table lookup through connection %r failed: %s", name, type(e).__name__)
            return {n.field: UNREACHABLE for n in group}
        return {n.field: bool(ok) for n, ok in zip(group, found, strict=True)}


def undecodable(issues: list[Issue]) -> Report:
    """The report of a request that did not decode: its schema errors; nothing else could run."""
    skipped = [Issue("body", None, None, "not checked: the request itself is invalid (see schema)")]
    return report([
        Findings(warnings=list(skipped)).check("syntax"),
        Findings(errors=list(issues)).check("schema"),
        Findings(warnings=list(skipped)).check("dependencies"),
    ])
