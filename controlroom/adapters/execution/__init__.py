"""Running attempts: queues, executors, the local sandbox and its uids, leases and the worker's spool."""
