"""The scope vocabulary shared by JWTs and API keys (DESIGN.md §6)."""

from __future__ import annotations

ALL_SCOPES = (
    "jobs:write", "runs:read", "runs:write", "lineage:read", "lineage:write",
    "artifacts:read", "artifacts:write", "webhooks:write", "admin",
)
DEFAULT_SCOPES = ("jobs:write", "runs:read", "runs:write", "artifacts:read")
"""What a token or key gets when none are asked for: submit and watch runs."""
