"""Attempts run as Kubernetes Jobs: the objects, launching them, following and reading their outcome."""
