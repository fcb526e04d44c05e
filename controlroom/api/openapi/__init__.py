"""The OpenAPI document: generated from the routes, then made truthful."""
