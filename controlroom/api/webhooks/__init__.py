"""Webhooks: secrets, subscriptions, replay and delivery logs, and inbound reports on runs."""
