"""One attempt running as a Kubernetes Job: its pod's log followed by a thread, its outcome read
from the Job's status when polled, its objects deleted on cleanup."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.rest import ApiException

from controlroom.adapters.kubernetes.status import KILLED, Outcome, failed, pending_reason
from controlroom.commands.ports import OutputFile

if TYPE_CHECKING:
    from controlroom.adapters.kubernetes.executor import KubernetesExecutor

log = logging.getLogger("controlroom.kubernetes")

API_TIMEOUT_S = 10.0
STATUS_INTERVAL_S = 1.0
"""The Job's status is read at most this often per running attempt."""
POD_WAIT_INTERVAL_S = 1.0
LOG_DRAIN_GRACE_S = 5.0
"""Once the Job is over, how long its log stream may take to deliver its last lines."""
MAX_LINE_CHARS = 64 * 1024
STDERR_MARK = "::stderr "
"""The pod log is one stream: the pod runner marks the job's stderr lines with this."""
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
_EOF = ("", None)


class KubernetesExecution:
    """One attempt's Job: its log followed by a thread, its status read when polled."""

    def __init__(self, executor: KubernetesExecutor, name: str, pods: str) -> None:
        self.x = executor
        self.name = name
        self.pods = pods
        self.created_at = time.monotonic()
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._eof = False
        self._log_done = threading.Event()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._response: Any = None
        self._pod: Any = None
        self._checked_at = 0.0
        self._outcome: Outcome | None = None
        self._decided_at = 0.0
        self._noted = False
        self._killed = False

    def start(self) -> None:
        """Start following the pod's log."""
        threading.Thread(target=self._follow, name=f"log-{self.name}", daemon=True).start()

    def _follow(self) -> None:
        try:
            pod = self._wait_for_pod()
            if pod is not None:
                self._stream(pod)
        except Exception as e:  # the outcome is still read from the Job's status
            if not self._stop.is_set():
                log.warning("%s: following the log failed: %s", self.name, e)
        finally:
            self._lines.put(_EOF)
            self._log_done.set()

    def _wait_for_pod(self) -> str | None:
        """The pod's name once it has left Pending (its log exists), None if stopped first."""
        while not self._stop.is_set():
            try:
                found = self.x.core.list_namespaced_pod(
                    self.x.namespace, label_selector=self.pods, _request_timeout=API_TIMEOUT_S).items
            except (ApiException, *TRANSPORT_ERRORS) as e:
                log.info("%s: listing its pods failed: %s", self.name, e)
                found = []
            if found:
                self._pod = found[0]
                if ((found[0].status and found[0].status.phase) or "Pending") != "Pending":
                    self._started.set()
                    return str(found[0].metadata.name)
            self._stop.wait(POD_WAIT_INTERVAL_S)
        return None

    def _stream(self, pod: str) -> None:
        self._response = self.x.core.read_namespaced_pod_log(
            pod, self.x.namespace, container="job", follow=True, _preload_content=False,
            _request_timeout=(API_TIMEOUT_S, None))
        with contextlib.closing(self._response) as response:
            for raw in response:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if text.startswith(STDERR_MARK):
                    self._lines.put(("stderr", text[len(STDERR_MARK):][:MAX_LINE_CHARS]))
                else:
                    self._lines.put(("stdout", text[:MAX_LINE_CHARS]))

    def lines(self, timeout: float) -> Iterator[tuple[str, str]]:
        """Log lines until `timeout` passes; after the log ended, only what is already queued."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                stream, text = (self._lines.get_nowait() if self._eof
                                else self._lines.get(timeout=remaining))
            except queue.Empty:
                return
            if text is None:
                self._eof = True
                continue
            yield stream, text

    def poll(self) -> int | None:
        """The exit code once the Job is over and its log (and any notes on why) delivered."""
        if self._outcome is None:
            self._outcome = self._observe()
            if self._outcome is None:
                return None
            self._decided_at = time.monotonic()
        if not self._log_done.is_set() and time.monotonic() - self._decided_at < LOG_DRAIN_GRACE_S:
            return None
        if not self._noted:  # notes go after the log; one more pump delivers them
            self._noted = True
            for note in self._outcome.notes:
                self._lines.put(("stderr", note))
            if self._outcome.notes:
                return None
        return self._outcome.code

    def _observe(self) -> Outcome | None:
        if self._killed:
            return Outcome(KILLED)
        now = time.monotonic()
        if now - self._checked_at < STATUS_INTERVAL_S:
            return None
        self._checked_at = now
        try:
            job = self.x.batch.read_namespaced_job(
                self.name, self.x.namespace, _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            if e.status == 404:
                return Outcome(1, ("job_deleted", "its Kubernetes Job was deleted before it ended"))
            log.warning("%s: reading its status failed: %s", self.name, e)
            return None
        except TRANSPORT_ERRORS as e:  # transient: the run's own timeout bounds the wait
            log.warning("%s: reading its status failed: %s", self.name, e)
            return None
        status = job.status
        if status is not None and status.succeeded:
            return Outcome(0)
        if status is not None and (status.failed or any(
                c.type == "Failed" and c.status == "True" for c in status.conditions or ())):
            return failed(job, self._latest_pod())
        bound = self.x.settings.pending_timeout_s
        if not self._started.is_set() and now - self.created_at > bound:
            detail = pending_reason(self._pod)
            self._stop.set()
            self._delete(self.x.batch.delete_namespaced_job, propagation_policy="Foreground")
            return Outcome(1, ("pending_timeout", f"the pod did not start within {bound:g} s: {detail}"),
                           [f"Kubernetes: {detail}"])
        return None

    def _latest_pod(self) -> Any:
        with contextlib.suppress(ApiException, *TRANSPORT_ERRORS):
            found = self.x.core.list_namespaced_pod(
                self.x.namespace, label_selector=self.pods, _request_timeout=API_TIMEOUT_S).items
            if found:
                self._pod = found[0]
        return self._pod

    def kill(self) -> None:
        """Delete the Job, its pod first (foreground propagation)."""
        self._killed = True
        if not self._started.is_set():
            self._stop.set()
        self._delete(self.x.batch.delete_namespaced_job, propagation_policy="Foreground")

    def output_files(self) -> Iterator[OutputFile]:
        """Nothing: the pod uploaded its outputs itself before it exited."""
        return iter(())

    def failure(self) -> tuple[str, str] | None:
        """Why the attempt ended without an exit code of the job's own, if it did."""
        return None if self._outcome is None else self._outcome.failure

    def cleanup(self) -> None:
        """Stop following the log; delete the Job, the ConfigMap and the Secret."""
        self._stop.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.shutdown()
        self._delete(self.x.batch.delete_namespaced_job, propagation_policy="Foreground")
        self._delete(self.x.core.delete_namespaced_config_map)
        self._delete(self.x.core.delete_namespaced_secret)

    def _delete(self, method: Any, **options: Any) -> None:
        try:
            method(self.name, self.x.namespace, _request_timeout=API_TIMEOUT_S, **options)
        except ApiException as e:
            if e.status != 404:
                log.warning("%s: delete failed: %s %s", self.name, e.status, e.reason)
        except TRANSPORT_ERRORS as e:
            log.warning("%s: delete failed: %s", self.name, e)
