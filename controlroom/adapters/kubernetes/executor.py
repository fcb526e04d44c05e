"""Runs an attempt as a Kubernetes Job (the official client): a ConfigMap of its code, a Secret of
its environment, one batch/v1 Job; its pod's log is followed as the job's output.

The pod uploads its own `output/` files (`controlroom.runners.pod`), so `output_files()` is empty.
Every API call has a timeout (`API_TIMEOUT_S`) except the followed log, which stays open as
long as the container runs and is closed by `cleanup()`.
"""

from __future__ import annotations

import json
import logging

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from controlroom.adapters.kubernetes.execution import (
    API_TIMEOUT_S,
    TRANSPORT_ERRORS,
    KubernetesExecution,
)
from controlroom.adapters.kubernetes.manifests import Manifests, build, owned_by, selector
from controlroom.commands.ports import Attempt, Launch, PlanError
from controlroom.settings import KubernetesSettings

log = logging.getLogger("controlroom.kubernetes")


def api_client(context: str | None = None) -> client.ApiClient:
    """A client configured in-cluster (a service account), else from the kubeconfig."""
    cfg = client.Configuration()
    if context is None:
        try:
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except config.ConfigException:
            pass
    config.load_kube_config(context=context, client_configuration=cfg)
    return client.ApiClient(cfg)


class KubernetesExecutor:
    """Launches each attempt as a Job in the configured namespace."""

    def __init__(self, api: client.ApiClient, settings: KubernetesSettings) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.settings = settings
        self.namespace = settings.namespace or "default"

    def launch(self, *, files: dict[str, str], launch: Launch, env: dict[str, str],
               attempt: Attempt | None = None) -> KubernetesExecution:
        """Create the Secret, the ConfigMap and the Job; PlanError if Kubernetes refuses them."""
        if attempt is None:
            raise ValueError("a Kubernetes run needs its run id and attempt")
        m = build(self.settings, run_id=attempt.run_id, attempt=attempt.attempt, files=files,
                  argv=launch.argv, env={**launch.env, **env}, timeout_s=attempt.timeout_s)
        execution = KubernetesExecution(self, m.name, selector(attempt.run_id, attempt.attempt))
        try:
            self._create(m)
        except BaseException:
            execution.cleanup()
            raise
        execution.start()
        return execution

    def _create(self, m: Manifests) -> None:
        ns, t = self.namespace, API_TIMEOUT_S
        step = "Secret"
        try:
            self.core.create_namespaced_secret(ns, m.secret, _request_timeout=t)
            step = "ConfigMap"
            self.core.create_namespaced_config_map(ns, m.config_map, _request_timeout=t)
            step = "Job"
            job = self.batch.create_namespaced_job(ns, m.job, _request_timeout=t)
        except ApiException as e:  # never the body of a refused Secret: it may quote values
            detail = "" if step == "Secret" else f": {_message(e)}"
            raise PlanError("launch_failed", f"Kubernetes refused the job's {step} "
                            f"({e.status} {e.reason}){detail}") from None
        except TRANSPORT_ERRORS as e:
            raise PlanError("launch_failed", f"the Kubernetes API could not be reached ({e})") from None
        patch = owned_by({"metadata": {"name": m.name, "uid": job.metadata.uid}})
        try:  # so that the Job's TTL takes them along if no worker is left to clean up
            self.core.patch_namespaced_secret(m.name, ns, patch, _request_timeout=t)
            self.core.patch_namespaced_config_map(m.name, ns, patch, _request_timeout=t)
        except (ApiException, *TRANSPORT_ERRORS) as e:
            log.warning("could not make %s's Secret and ConfigMap owned by its Job: %s", m.name, e)


def _message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)
