"""Lineage: OpenLineage reports in, the lineage graph out."""
