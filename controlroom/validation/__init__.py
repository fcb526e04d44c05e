"""Pre-flight validation of jobs: syntax, schema and dependencies, without running anything.

Pure checks over a `Job`; what they need from the world (tools, connections, databases)
comes in through the ports of `controlroom.validation.ports`.
"""

from controlroom.validation.model import CHECKS, Check, Issue, Job, Report
from controlroom.validation.preflight import Preflight, undecodable
from controlroom.validation.rules import DEFAULT_RULES, FilesNeeded, JobRules, ToolNeeded
from controlroom.validation.uris import TableUri, UriError, parse_uri

__all__ = [
    "CHECKS", "DEFAULT_RULES", "Check", "FilesNeeded", "Issue", "Job", "JobRules", "Preflight",
    "Report", "TableUri", "ToolNeeded", "UriError", "parse_uri", "undecodable",
]
