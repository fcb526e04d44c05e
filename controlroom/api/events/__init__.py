"""Live run events: a run's stream and the tenant feed (SSE or JSON pages)."""
