"""Built-in job runners: run as `python -m controlroom.runners.<name>` in the job's directory.

They are separate processes, configured only through environment variables (see each
module and docs/jobs.md, "Job types"), and import nothing of the service but this package.
"""
