"""Pre-flight validation of jobs: syntax, schema and dependencies, without running anything.

Pure checks over a `Job`; what they need from the world (tools, connections, databases)
comes in through the ports of `controlroom.validation.ports`.
"""

from controlroom.validation.model import CHECKS, Check, Issue, Job, Report
from controlroom.validation.preflight import Preflight, undecodable
from controlroom.validation.rules import JOB_RULES, JobRules, rules_for
from controlroom.validation.uris import TableUri, UriError, parse_uri

__all__ = [
    "CHECKS", "JOB_RULES", "Check", "Issue", "Job", "JobRules", "Preflight", "Report", "TableUri",
    "UriError", "parse_uri", "rules_for", "undecodable",
]
