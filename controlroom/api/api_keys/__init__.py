"""API keys: the routes that issue, list and revoke them, and bearer authentication by key."""
