"""Webhooks: sending one, delivery state for workers, the API's reads, and the SSRF guard."""
