"""Why a Kubernetes Job ended, or why its pod never started, read from their status (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KILLED = -15
"""What a deleted Job's job ended with: like a process stopped by SIGTERM."""
SELF_EXPLAINED = {"Completed", "Error"}
"""Container end reasons the job's own output already explains (anything else gets a note)."""


@dataclass(frozen=True)
class Outcome:
    """An exit code; (reason, message) when the platform ended the job; lines for its log."""

    code: int
    failure: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


def failed(job: Any, pod: Any) -> Outcome:
    """The outcome of a failed Job (`V1Job`), with its pod (`V1Pod` or None)."""
    condition = next((c for c in (job.status.conditions if job.status else None) or ()
                      if c.type == "Failed" and c.status == "True"), None)
    ended = _terminated(pod)
    if condition is not None and condition.reason == "DeadlineExceeded":
        what = f"DeadlineExceeded: {condition.message or 'the Job ran past its deadline'}"
        return Outcome(ended.exit_code if ended is not None and ended.exit_code else 1,
                       ("timeout", f"Kubernetes stopped the job: {what}"), [f"Kubernetes: {what}"])
    if ended is not None:
        code = ended.exit_code or 1
        if ended.reason in SELF_EXPLAINED:
            return Outcome(code)
        note = f"Kubernetes: the container was terminated: {ended.reason} (exit code {code})"
        return Outcome(code, None, [note + (f": {ended.message}" if ended.message else "")])
    why = "; ".join(t for t in (_condition_text(condition), _pod_text(pod)) if t) or "the Job failed"
    return Outcome(1, ("pod_failed", f"Kubernetes: {why}"), [f"Kubernetes: {why}"])


def pending_reason(pod: Any) -> str:
    """Why a pod is still Pending: an image or config problem, the scheduler's verdict, or none."""
    if pod is None or pod.status is None:
        return ("no pod was created (a quota or an admission policy may refuse it; "
                "`kubectl describe job` tells)")
    for status in pod.status.container_statuses or ():
        waiting = status.state.waiting if status.state is not None else None
        if waiting is not None and waiting.reason:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    for c in pod.status.conditions or ():
        if c.type == "PodScheduled" and c.status == "False":
            reason = c.reason or "Unschedulable"
            return f"{reason}: {c.message}" if c.message else reason
    return f"the pod is still {pod.status.phase or 'Pending'}"


def _terminated(pod: Any) -> Any:
    if pod is None or pod.status is None:
        return None
    for status in pod.status.container_statuses or ():
        if status.state is not None and status.state.terminated is not None:
            return status.state.terminated
    return None


def _condition_text(condition: Any) -> str:
    if condition is None:
        return ""
    return ": ".join(t for t in (condition.reason, condition.message) if t)


def _pod_text(pod: Any) -> str:
    if pod is None or pod.status is None or not (pod.status.reason or pod.status.message):
        return ""
    return "pod " + ": ".join(t for t in (pod.status.reason, pod.status.message) if t)
