"""The Run aggregate, its statuses and its retry backoff."""
