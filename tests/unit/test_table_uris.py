"""A table URI renders back to text that parses to the same table, connection included."""

from __future__ import annotations

import pytest

from controlroom.jobtypes.schema_migration import in_connection
from controlroom.runners.kb_catalog import table_uri
from controlroom.validation.uris import TableUri, lineage_entity, parse_uri, quote_identifier


@pytest.mark.parametrize("text", [
    "supabase://public.orders", 'supabase://public."Orders"', 'wh://"my schema"."a""b"',
    "public.orders", "x.y_1$",
])
def test_a_parsed_uri_renders_back_to_itself(text: str) -> None:
    uri = parse_uri(text)
    assert parse_uri(uri.uri) == uri
    assert lineage_entity(uri.uri) == (uri.entity, uri.connection)


def test_lineage_keeps_the_connection_of_a_table_uri_as_namespace() -> None:
    assert lineage_entity(TableUri("supabase", "public", "orders").uri) == ("public.orders", "supabase")


def test_identifiers_are_quoted_only_where_bare_ones_would_read_differently() -> None:
    assert [quote_identifier(n) for n in ("orders", "Orders", "a b", 'q"t', "1x")] == [
        "orders", '"Orders"', '"a b"', '"q""t"', '"1x"']


def test_job_types_name_changed_and_catalogued_tables_through_their_connection() -> None:
    assert in_connection("warehouse", "public", "Accounts") == 'warehouse://public."Accounts"'
    assert in_connection("not a connection", "public", "audit") == "public.audit"
    table = {"connection": "supabase", "schema": "public", "name": "Big Orders"}
    assert table_uri(table) == 'supabase://public."Big Orders"'
    assert lineage_entity(table_uri(table)) == ("public.Big Orders", "supabase")
