"""Run command handlers, and what a run keeps to be understood and reproduced."""
