"""The lineage graph the API reads: kept in memory per tenant, current from `lineage_edges`."""
