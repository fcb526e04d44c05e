"""Webhooks on the write side: secrets and subscriptions, the webhook deliverer, inbound reports."""
