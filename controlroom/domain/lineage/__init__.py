"""Lineage: identities, the aggregate OpenLineage reports are recorded on, and a run's data flow."""
