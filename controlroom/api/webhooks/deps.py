"""What the webhook routes need from the composition root, behind small protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from controlroom.commands.webhooks.handlers import WebhookCommands
from controlroom.commands.webhooks.inbound import InboundOutcomes


class CallbackGuardPort(Protocol):
    """The SSRF guard, as submit and subscribe see it."""

    async def refusal(self, url: str) -> str | None: ...


class WebhookReadsPort(Protocol):
    """Tenant-scoped webhook reads and delivery-state changes."""

    async def deliveries(self, tenant_id: str, run_id: UUID) -> tuple[list[Any], list[Any]] | None: ...

    async def subscriptions(self, tenant_id: str) -> list[Any]: ...

    async def subscription(self, tenant_id: str, subscription_id: UUID) -> Any: ...

    async def redeliver(self, tenant_id: str, delivery_id: UUID) -> Any: ...

    async def replay(self, tenant_id: str, subscription_id: UUID, from_position: int) -> int: ...

    async def tenant_of_run(self, run_id: UUID) -> str | None: ...

    async def verification_secrets(self, tenant_id: str) -> list[str]: ...

    async def claim_inbound(
        self, tenant_id: str, webhook_id: str
    ) -> tuple[int | None, str | None] | None: ...

    async def finish_inbound(self, tenant_id: str, webhook_id: str, status: int, response: str) -> None: ...

    async def release_inbound(self, tenant_id: str, webhook_id: str) -> None: ...


@dataclass
class WebhookDeps:
    """Secrets and subscriptions (commands), inbound outcomes, reads and the SSRF guard."""

    commands: WebhookCommands
    outcomes: InboundOutcomes
    reads: WebhookReadsPort
    guard: CallbackGuardPort
