"""Webhooks: the rules, the tenant's secret and subscriptions, and which URLs may be called."""
