"""PostgreSQL plumbing: connections, the event store, migrations, embedded mode, LISTEN, read-your-writes."""
