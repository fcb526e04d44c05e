"""Webhooks on the write side: secrets and subscriptions, the delivery worker, inbound reports."""
