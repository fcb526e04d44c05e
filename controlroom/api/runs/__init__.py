"""Runs: submitting and validating jobs, reading, reporting on and cancelling runs."""
