"""docker-compose.yml's shape: health checks, restart policies, start order on health.

No container engine runs here, so the file's structure is what is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
CONTROLROOM_SERVICES = ("api", "worker", "projector")


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_every_service_restarts_unless_stopped() -> None:
    assert {name: s.get("restart") for name, s in _services().items()} == dict.fromkeys(
        _services(), "unless-stopped")


def test_postgres_redis_and_the_api_have_health_checks() -> None:
    services = _services()
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])


def test_control_room_services_start_once_postgres_and_redis_are_healthy() -> None:
    for name in CONTROLROOM_SERVICES:
        depends = _services()[name]["depends_on"]
        assert depends == {"postgres": {"condition": "service_healthy"},
                           "redis": {"condition": "service_healthy"}}, name
