"""Settings: each declared once, read from the environment, and documented as declared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from controlroom.domain.webhooks.rules import parse_schedule
from controlroom.settings import (
    KubernetesSettings,
    SandboxSettings,
    Settings,
    WebhookSettings,
    default_data_dir,
    from_env,
)
from controlroom.settings_env import Declared, declared
from controlroom.settings_table import documented, rows

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"


def _at(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for name in path:
        value = getattr(value, name)
    return value


def _sample(setting: Declared) -> tuple[str, Any]:
    """A value for the variable, and what the field then holds."""
    kind = setting.type
    if get_origin(kind) is not None and type(None) in get_args(kind):
        [kind] = [k for k in get_args(kind) if k is not type(None)]
    if get_origin(kind) is Literal:
        choice = get_args(kind)[-1]
        return f" {choice.upper()} ", choice
    if get_origin(kind) is tuple:
        return f"/a{os.pathsep}{os.pathsep}/b", ("/a", "/b")
    samples: dict[Any, tuple[str, Any]] = {
        bool: ("Yes", True), int: ("7", 7), float: ("2.5", 2.5), str: ("x", "x"), Path: ("/x", Path("/x")),
    }
    return samples[kind]


def test_nothing_set_gives_the_declared_defaults() -> None:
    assert from_env({}) == Settings(data_dir=default_data_dir())
    assert from_env({name: "" for name in (s.env.name for s in declared(Settings))}) == from_env({})


def test_every_variable_reaches_its_own_field() -> None:
    settings = list(declared(Settings))
    assert len({s.env.name for s in settings}) == len(settings), "a variable is declared twice"
    for s in settings:
        raw, expected = _sample(s)
        got = _at(from_env({s.env.name: raw}), s.path)
        assert got == expected and got != s.default, (s.env.name, raw, got)


def test_optional_values_stay_unset_and_booleans_need_a_yes() -> None:
    s = from_env({})
    assert (s.database_url, s.lease_renew_s, s.db_write_pool, s.webhooks.retry_schedule) == (None,) * 4
    for raw, on in (("1", True), ("true", True), ("YES", True), ("0", False), ("no", False), ("on", False)):
        assert from_env({"CONTROLROOM_TRANSACTION_POOLER": raw}).transaction_pooler is on
    schedule = from_env({"CONTROLROOM_WEBHOOK_RETRY_SCHEDULE": "0,5,30"}).webhooks.retry_schedule
    assert schedule is not None and parse_schedule(schedule) == (0.0, 5.0, 30.0)


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("CONTROLROOM_PORT", "eighty", "must be an integer"),
    ("CONTROLROOM_LEASE_TIMEOUT_S", "1m", "must be a number"),
    ("CONTROLROOM_EXECUTOR", "nomad", "must be one of local, kubernetes, not 'nomad'"),
    ("CONTROLROOM_JOB_NETWORK", "bridge", "must be one of host, none, not 'bridge'"),
])
def test_a_bad_value_is_refused_naming_its_variable(name: str, raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"{name} {says}"):
        from_env({name: raw})


def test_settings_are_still_built_with_keywords(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, port=9000, webhooks=WebhookSettings(timeout_s=1.0),
                 k8s=KubernetesSettings(namespace="jobs"), sandbox=SandboxSettings(network="none"))
    assert (s.port, s.webhooks.timeout_s, s.executors, s.sandbox.network) == (
        9000, 1.0, ("local", "kubernetes"), "none")
    assert Settings(data_dir=tmp_path).webhooks is not Settings(data_dir=tmp_path).webhooks


def test_the_configuration_table_in_the_docs_is_the_declared_one() -> None:
    declared_rows, documented_rows = rows(), documented(OPERATIONS.read_text())
    problems = [f"missing from the docs: {name}" for name in declared_rows if name not in documented_rows]
    problems += [f"in the docs but not a setting: {name}" for name in documented_rows
                 if name not in declared_rows]
    problems += [f"{name} should read:\n  {row}\nnot:\n  {documented_rows[name]}"
                 for name, row in declared_rows.items()
                 if name in documented_rows and documented_rows[name] != row]
    assert not problems, ("docs/operations.md's configuration table disagrees with controlroom/settings.py "
                          "(`python -m controlroom.settings_table docs/operations.md` rewrites it):\n"
                          + "\n".join(problems))
