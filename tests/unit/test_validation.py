"""Pre-flight validation: every failure mode names its check, the file or field, line and column.

The checks run with the real adapters (this machine's Graphviz, a real connection refusal);
`LocalTools(path="", bundled={})` is the real adapter on an empty PATH, i.e. a worker without
any tools; `LocalTools(path="")` a worker whose only Graphviz is the one installed with Control
Room (graphviz-pure).
Connections and tables that must answer in a particular way come from small in-memory
implementations of their ports, said so where used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlroom.adapters.runs.preflight import LocalTools, PostgresTables
from controlroom.api.schemas import JobType
from controlroom.commands.errors import ConnectionNotFoundError
from controlroom.jobtypes import default_job_types
from controlroom.runners.graphviz import bundled_dot
from controlroom.validation import CHECKS, Issue, Job, Preflight, Report, undecodable
from controlroom.validation.requirements import parse_requirements
from controlroom.validation.uris import TableUri, UriError, parse_uri

TOOLS = LocalTools()
NO_TOOLS = LocalTools(path="", bundled={})
BUNDLED_ONLY = LocalTools(path="")


class Connections:
    """In-memory Connections port: `dsns` by name (None: the lookup itself fails)."""

    def __init__(self, dsns: dict[str, str] | None) -> None:
        self.dsns = dsns

    def names(self, tenant_id: str) -> list[str]:
        if self.dsns is None:
            raise OSError("connections read model unavailable")
        return sorted(self.dsns)

    def dsn(self, tenant_id: str, name: str) -> str:
        if self.dsns is None or name not in self.dsns:
            raise ConnectionNotFoundError(name)
        return self.dsns[name]


class Tables:
    """In-memory Tables port: the `present` (schema, table) pairs exist; `delay_s` before answering."""

    def __init__(self, *present: tuple[str, str | None], delay_s: float = 0.0) -> None:
        self.present, self.delay_s = set(present), delay_s

    def exist(self, dsn: str, names: Sequence[tuple[str, str | None]]) -> list[bool]:
        time.sleep(self.delay_s)
        return [n in self.present for n in names]


JOB_RULES = default_job_types().rules()

WAREHOUSE = Preflight(TOOLS, job_rules=JOB_RULES, connections=Connections({"wh": "postgresql://x"}),
                      tables=Tables(("public", "orders"), ("public", None)))


def run(job_type: str = "spark_etl", files: dict[str, str] | None = None, spec: dict[str, Any] | None = None,
        preflight: Preflight | None = None) -> Report:
    files = {"main.py": "print('ok')\n"} if files is None else files
    job = Job.of(job_type, [{"path": p, "content": c} for p, c in files.items()], spec or {})
    return asyncio.run((preflight or Preflight(TOOLS, job_rules=JOB_RULES)).validate(job, "tenant"))


def errors(report: Report, check: str) -> list[Issue]:
    return next(c for c in report.checks if c.name == check).errors


def warnings(report: Report, check: str) -> list[Issue]:
    return next(c for c in report.checks if c.name == check).warnings


def only(report: Report, check: str) -> Issue:
    """The report fails exactly `check`, with exactly one error: that error."""
    failed = [(c.name, e) for c in report.checks for e in c.errors]
    assert not report.valid and len(failed) == 1 and failed[0][0] == check, report
    return failed[0][1]


def test_a_small_valid_job_passes_every_check_in_order() -> None:
    report = run(files={"main.py": "import os, json\nimport lib.util\n", "lib/util.py": "X = 1\n"})
    assert report.valid and [c.name for c in report.checks] == list(CHECKS)
    assert all(c.ok and not c.errors and not c.warnings for c in report.checks)


# -- syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "source", "line", "column", "message"), [
    ("main.py", "x = 1\ndef f(:\n    pass\n", 2, 7, "invalid syntax"),
    ("main.py", "if True:\nprint(1)\n", 2, 1, "expected an indented block"),
    ("main.py", "é = 'ü' +* 2\n", 1, 10, "invalid syntax"),  # columns count characters
    ("m/001.sql", "CREATE TABLE t (id int);\n\nSELEC 1;\n", 3, 1, 'syntax error at or near "SELEC"'),
    ("m/002.SQL", "SELECT 'é', ü FROM x WHERE ;", 1, 28, 'syntax error at or near ";"'),
    ("m/003.sql", "SELECT 1 FROM", 1, 14, "syntax error at end of input"),
    ("g.dot", "digraph {\n  a -> b;\n  b -> ;\n}\n", 3, 8, "syntax error near ';'"),
    # where the quoted string starts (Graphviz 2.43) or where the input ends (16.1.0, graphviz-pure)
    ("g.gv", 'graph {\n  a -- b [label="x];\n}\n', (2, 4), None, "syntax error scanning a quoted string"),
])
@pytest.mark.parametrize("tools", [TOOLS, BUNDLED_ONLY], ids=["host", "bundled"])
def test_a_file_that_does_not_parse_is_a_syntax_error_at_its_line_and_column(
    path: str, source: str, line: int | tuple[int, ...], column: int | None, message: str,
    tools: LocalTools,
) -> None:
    preflight = Preflight(tools, job_rules=JOB_RULES)
    issue = only(run(files={"main.py": "print(1)\n", path: source}, preflight=preflight), "syntax")
    assert (issue.path, issue.column) == (path, column)
    assert issue.line in (line if isinstance(line, tuple) else (line,))
    assert issue.message.startswith(message)


def test_files_of_other_kinds_are_not_parsed() -> None:
    assert run(files={"main.py": "print(1)", "README.md": "def (", "data.csv": "SELEC"}).valid


@pytest.mark.parametrize("tools", [TOOLS, BUNDLED_ONLY], ids=["host", "bundled"])
def test_graphviz_warnings_are_warnings_not_errors(tools: LocalTools) -> None:
    # non-ASCII labels: graphviz-pure's text-width estimates warn about them, which is noise here
    source = 'digraph { a -> 1a; b [label="café 東京"] }\n'
    report = run(files={"main.py": "", "g.dot": source}, preflight=Preflight(tools, job_rules=JOB_RULES))
    assert report.valid
    (warning,) = warnings(report, "syntax")
    assert (warning.path, warning.line) == ("g.dot", 1) and "1a" in warning.message


def test_without_graphviz_dot_files_are_unparsed_and_diagram_export_lacks_its_tool() -> None:
    report = run("diagram_export", {"g.dot": "digraph { a -> }"},
                 preflight=Preflight(NO_TOOLS, job_rules=JOB_RULES))
    issue = only(report, "dependencies")
    assert issue.path == "job_type" and "dot is not installed" in issue.message
    assert "apt-get install graphviz" in issue.message and "graphviz-pure" in issue.message
    assert "Graphviz is not installed" in warnings(report, "syntax")[0].message


def test_without_system_graphviz_the_one_installed_with_control_room_stands_in() -> None:
    assert BUNDLED_ONLY.which("dot") is not None, "pip install . brings graphviz-pure on this platform"
    assert BUNDLED_ONLY.which("dot") == bundled_dot() and BUNDLED_ONLY.which("nop") is None
    report = run("diagram_export", {"g.dot": "digraph { a -> b }"},
                 preflight=Preflight(BUNDLED_ONLY, job_rules=JOB_RULES))
    assert report.valid and not [w for c in report.checks for w in c.warnings], report


# -- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("job_type", "files", "spec", "path", "message"), [
    ("schema_migration", {"main.py": ""}, {"target": "wh"}, "code.files", "needs a .sql migration"),
    ("schema_migration", {"a.sql": "SELECT 1"}, {}, "spec.target", "needs a database"),
    ("schema_migration", {"a.sql": "SELECT 1"}, {"target": 5}, "spec.target", "must be the name"),
    ("schema_migration", {"a.sql": ""}, {"outputs": ["public"]}, "spec.target", "needs a database"),
    ("diagram_export", {"main.py": ""}, {}, "code.files", "needs a Graphviz .dot or .gv source"),
    ("spark_etl", {"job.sql": "SELECT 1"}, {}, "code.files", "runs a Python entrypoint"),
    ("spark_etl", {"main.py": "", "run.sh": ""}, {"entrypoint": "run.sh"}, "spec.entrypoint", "not a .py"),
    ("spark_etl", {"main.py": ""}, {"inputs": ["orders"]}, "spec.inputs[0]", "the table is missing"),
    ("spark_etl", {"main.py": ""}, {"outputs": ["a.b", "a.b.c"]}, "spec.outputs[1]", "expected"),
    ("kb_catalog", {}, {"inputs": ["other://public"]}, "spec.inputs[0]",
     "unknown connection 'other': kb_catalog connects to it before it can run"),
    ("schema_migration", {"a.sql": ""}, {"target": "other"}, "spec.target", "unknown connection 'other'"),
    ("schema_migration", {"a.sql": ""}, {"inputs": {"target": "other://public"}}, "spec.inputs.target",
     "PUT /api/v1/connections/other"),
    ("spark_etl", {"main.py": ""}, {"inputs": {"source": "a.b.c"}}, "spec.inputs.source", "expected"),
])
def test_what_a_job_type_needs_is_a_schema_error_naming_the_field(
    job_type: str, files: dict[str, str], spec: dict[str, Any], path: str, message: str
) -> None:
    issue = only(run(job_type, files, spec, WAREHOUSE), "schema")
    assert (issue.path, issue.line, issue.column) == (path, None, None)
    assert message in issue.message


def test_without_connections_every_connection_is_unknown() -> None:
    issue = only(run("schema_migration", {"a.sql": ""}, {"outputs": ["wh://public"]}), "schema")
    assert issue.message.startswith("unknown connection 'wh'; this tenant has no connections: "
                                    "schema_migration connects to it before it can run.")
    assert "PUT /api/v1/connections/wh" in issue.message


def test_a_connection_only_the_jobs_code_uses_is_a_warning_saying_how_to_configure_it() -> None:
    spec = {"text": "copy", "inputs": {"source": "supabase://schema.table",
                                       "target": "supabase://schema.output_table"}}
    report = run(spec=spec, preflight=WAREHOUSE)
    assert report.valid, report
    schema = next(c for c in report.checks if c.name == "schema")
    assert schema.ok and schema.severity == "warning" and not schema.errors
    assert [(w.path, w.severity) for w in schema.warnings] == [
        ("spec.inputs.source", "warning"), ("spec.inputs.target", "warning")]
    assert all("connection 'supabase' is not configured for this tenant" in w.message
               and "$CONTROLROOM_CONNECTION_SUPABASE" in w.message
               and "PUT /api/v1/connections/supabase" in w.message for w in schema.warnings)


def test_each_check_and_finding_says_its_severity() -> None:
    report = run(files={"main.py": "def (:\n"}, spec={"inputs": ["nowhere://public.t"]})
    by_name = {c.name: c for c in report.checks}
    assert by_name["syntax"].severity == "error" and by_name["syntax"].errors[0].severity == "error"
    assert by_name["schema"].severity == "warning" and by_name["schema"].warnings[0].severity == "warning"
    assert by_name["dependencies"].severity is None


def test_the_object_form_of_inputs_reads_every_role_but_target() -> None:
    spec = {"inputs": {"source": "wh://public.orders", "lookup": 'wh://Public."Orders"',
                       "target": "wh://public.missing"}}
    issue = only(run(spec=spec, preflight=WAREHOUSE), "schema")  # the target is written, not looked up
    assert issue.path == "spec.inputs.lookup"
    assert issue.message == "table 'public.Orders' does not exist in connection 'wh'"


def test_a_dsn_in_place_of_a_uri_is_refused_without_echoing_it() -> None:
    issue = only(run(spec={"inputs": ["postgres://bob:hunter2@db.example/prod"]}), "schema")
    assert issue.path == "spec.inputs[0]" and "named connection" in issue.message
    assert "hunter2" not in issue.message


def test_kb_catalog_inputs_may_name_a_schema_and_migrations_may_target_an_output_connection() -> None:
    assert run("kb_catalog", {}, {"inputs": ["wh://public"]}, WAREHOUSE).valid
    assert run("schema_migration", {"a.sql": "SELECT 1"}, {"outputs": ["wh://public"]}, WAREHOUSE).valid


def test_source_tables_are_looked_up_through_their_connection() -> None:
    spec = {"inputs": ["wh://public.orders", 'wh://Public."Orders"'], "outputs": ["wh://public.new"]}
    issue = only(run(spec=spec, preflight=WAREHOUSE), "schema")
    assert issue.path == "spec.inputs[1]"
    assert issue.message == "table 'public.Orders' does not exist in connection 'wh'"


def test_an_unreachable_database_or_connection_store_is_a_warning_not_a_failure() -> None:
    down = Preflight(TOOLS, job_rules=JOB_RULES, connections=Connections({"wh": "postgresql://x@127.0.0.1:1/db"}),
                     tables=PostgresTables())
    slow = Preflight(TOOLS, job_rules=JOB_RULES, connections=Connections({"wh": "postgresql://x"}),
                     tables=Tables(delay_s=1.0), lookup_timeout_s=0.05)
    unknown = Preflight(TOOLS, job_rules=JOB_RULES, connections=Connections(None))
    for preflight, says in ((down, "could not be reached"), (slow, "did not answer within 0.05 s"),
                            (unknown, "connections could not be read")):
        report = run(spec={"inputs": ["wh://public.orders"]}, preflight=preflight)
        assert report.valid, report
        (warning,) = warnings(report, "schema")
        assert warning.path == "spec.inputs[0]" and says in warning.message


@pytest.mark.parametrize(("text", "expected"), [
    ("public.orders", TableUri(None, "public", "orders")),
    ("Supabase_1://Public.Orders", TableUri("Supabase_1", "public", "orders")),
    ('wh://"My Schema"."a""b"', TableUri("wh", "My Schema", 'a"b')),
    ("wh://public", None),
    ("wh://public.orders.x", None), ("://a.b", None), ("wh://.a", None), ("wh://a." + "x" * 64, None),
])
def test_the_uri_grammar(text: str, expected: TableUri | None) -> None:
    if expected is None:
        with pytest.raises(UriError):
            parse_uri(text)
    else:
        assert parse_uri(text) == expected
    assert parse_uri("wh://public", table_required=False) == TableUri("wh", "public", None)


def test_every_job_type_of_the_api_is_a_plugin_that_declares_its_rules() -> None:
    assert set(get_args(JobType)) <= set(JOB_RULES)
    assert JOB_RULES["diagram_export"].tools and JOB_RULES["schema_migration"].needs_target


def test_a_request_that_did_not_decode_reports_only_its_schema_errors() -> None:
    report = undecodable([Issue("job_type", None, None, "Expected `str`")])
    assert not report.valid and [c.name for c in report.checks] == list(CHECKS)
    assert [c.ok for c in report.checks] == [True, False, True]


# -- dependencies ---------------------------------------------------------------------------


def test_an_unresolvable_import_is_an_error_at_the_import() -> None:
    source = "import os, no_such_module_x\n\ndef f():\n    from no_such_pkg_y.sub import z\n"
    report = run(files={"main.py": source})
    found = [(e.line, e.column) for e in errors(report, "dependencies")]
    assert found == [(1, 12), (4, 5)] and errors(report, "syntax") == []


def test_optional_relative_and_local_imports_are_not_required() -> None:
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nope_a\n"
        "try:\n    import nope_b\nexcept ImportError:\n    nope_b = None\n"
        "from . import sibling\nimport helpers, pkg.mod, native\nimport jobs_lib\n"
    )
    files = {"jobs/main.py": source, "jobs/helpers.py": "", "pkg/mod.py": "", "native.so": "",
             "jobs/jobs_lib/__init__.py": ""}
    assert run(files=files, spec={"entrypoint": "jobs/main.py"}).valid


def test_requirements_txt_declares_imports_by_their_distribution_names() -> None:
    requirements = ("# pinned\nPyYAML==6.0  # yaml\nFoo-Bar[extra]>=1 ; python_version >= '3'\n"
                    "win_only ; os_name == 'nt'\nbaz==1 \\\n  --hash=sha256:00\n-r other.txt\n./local\n")
    source = "import yaml, foo_bar, baz\nimport win_only\n"
    issue = only(run(files={"main.py": source, "requirements.txt": requirements}), "dependencies")
    assert (issue.path, issue.line, issue.column) == ("main.py", 2, 8)
    assert "'win_only'" in issue.message


def test_an_unreadable_requirement_is_an_error_at_its_line_and_column() -> None:
    issue = only(run(files={"main.py": "", "requirements.txt": "ok==1\n\npkg===\n"}), "dependencies")
    assert (issue.path, issue.line, issue.column) == ("requirements.txt", 3, 4)
    assert parse_requirements("a\nb[\n").problems[0][:2] == (2, 3)


def test_code_importing_pyspark_needs_java_on_the_worker() -> None:
    source = "import os\ntry:\n    import pyspark\nexcept ImportError:\n    pass\nfrom pyspark.sql import x\n"
    files = {"main.py": source, "requirements.txt": "pyspark\n"}
    issue = only(run(files=files, preflight=Preflight(NO_TOOLS, job_rules=JOB_RULES)), "dependencies")
    assert (issue.path, issue.line, issue.column) == ("main.py", 6, 1) and "java" in issue.message
    assert run(files=files).valid == (TOOLS.which("java") is not None)


# -- robustness -----------------------------------------------------------------------------

paths = st.sampled_from(["main.py", "a.sql", "g.dot", "g.gv", "requirements.txt", "x/y.py", "notes"])
contents = st.text(max_size=300) | st.sampled_from(["(" * 500, "SELECT " + "(" * 3000, "digraph {" * 300,
                                                     "-" * 50_000 + "1", "\x00", "pkg[" * 50])
job_types = st.sampled_from([*sorted(JOB_RULES), "future_type"])
uris = st.lists(st.text(max_size=30) | st.just("wh://public.orders"), max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(paths, contents, max_size=5), job_types, uris,
       st.sampled_from([TOOLS, NO_TOOLS, BUNDLED_ONLY]))
def test_any_file_contents_get_a_report_never_a_crash(
    files: dict[str, str], job_type: str, inputs: list[str], tools: LocalTools
) -> None:
    preflight = Preflight(tools, job_rules=JOB_RULES, connections=Connections({"wh": "postgresql://x"}),
                          tables=Tables())
    report = run(job_type, files, {"inputs": inputs}, preflight)
    assert [c.name for c in report.checks] == list(CHECKS)
    assert report.valid == all(not c.errors for c in report.checks)
    for issue in (i for c in report.checks for i in (*c.errors, *c.warnings)):
        assert issue.message and (issue.line is None or issue.line >= 1)
        assert issue.column is None or issue.column >= 1
