"""The Kubernetes objects of one attempt, as plain dicts (pure): a ConfigMap holding its code,
a Secret holding its environment, and a batch/v1 Job running it through `controlroom.runners.pod`.

Secrets, the run token and the DSNs a job type resolves live only in the Secret, which the
container reads with `envFrom`; the Job and the ConfigMap never carry them.

Job code is untrusted, so the pod is locked down (docs/security-hardening.md): no
service-account token, a non-root uid/gid, a read-only root filesystem (only the working
dir and /tmp, both emptyDirs, are writable), no privilege escalation, every capability
dropped and the runtime's default seccomp profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from controlroom.commands.ports import PYTHON
from controlroom.settings import KubernetesSettings

CODE_MOUNT = "/controlroom/code"
"""The ConfigMap, read-only; the pod's runner copies it into the working dir."""
WORKDIR = "/workspace"
OUTPUT_DIR = f"{WORKDIR}/output"
TMP_DIR = "/tmp"
JOB_UID = JOB_GID = 65532
"""Not root, and no user of the image: the job owns nothing in it (its files stay read-only)."""
TMP_SIZE_LIMIT = "1Gi"
POD_RUNNER = ("python", "-m", "controlroom.runners.pod")
MAX_CODE_BYTES = 900 * 1024
"""A ConfigMap holds at most 1 MiB; this leaves room for its keys and metadata."""
DEADLINE_GRACE_S = 60
"""Kubernetes' own deadline is the run's timeout plus this: the worker times runs out first and
records `timeout`; the Job's deadline stops the pod when no worker is left to do it."""
TERMINATION_GRACE_S = 10
LABEL_RUN, LABEL_ATTEMPT = "controlroom/run-id", "controlroom/attempt"
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class Manifests:
    """The three objects of one attempt, all named `name`."""

    name: str
    config_map: dict[str, Any]
    secret: dict[str, Any]
    job: dict[str, Any]


def object_name(run_id: UUID, attempt: int) -> str:
    """`controlroom-run-<run id>-<attempt>`: a DNS label, unique per attempt."""
    return f"controlroom-run-{run_id}-{attempt}"


def labels(run_id: UUID, attempt: int) -> dict[str, str]:
    """The labels on every object (and pod) of the attempt."""
    return {"app.kubernetes.io/managed-by": "controlroom", LABEL_RUN: str(run_id),
            LABEL_ATTEMPT: str(attempt)}


def selector(run_id: UUID, attempt: int) -> str:
    """A label selector matching the attempt's pods."""
    return f"{LABEL_RUN}={run_id},{LABEL_ATTEMPT}={attempt}"


def code_items(files: dict[str, str]) -> list[dict[str, str]]:
    """ConfigMap keys can't hold `/`: each file gets key `f<n>` and its path as the item's path."""
    return [{"key": f"f{i}", "path": path} for i, path in enumerate(sorted(files))]


def build(
    settings: KubernetesSettings, *, run_id: UUID, attempt: int, files: dict[str, str],
    argv: list[str], env: dict[str, str], timeout_s: int | None,
) -> Manifests:
    """The ConfigMap, Secret and Job of one attempt; ValueError for what Kubernetes can't hold."""
    size = sum(len(c.encode()) for c in files.values())
    if size > MAX_CODE_BYTES:
        raise ValueError(f"the code is {size} bytes; a Kubernetes run takes at most {MAX_CODE_BYTES} "
                         "(it travels in a ConfigMap)")
    bad = sorted(k for k in env if not _SECRET_KEY.match(k))
    if bad:
        raise ValueError(f"environment names a Kubernetes Secret can't hold: {', '.join(bad)}")
    name = object_name(run_id, attempt)

    def meta() -> dict[str, Any]:
        return {"name": name, "labels": labels(run_id, attempt)}

    items = code_items(files)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(),
                  "data": {i["key"]: files[i["path"]] for i in items}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta(), "type": "Opaque",
              "stringData": dict(env)}
    return Manifests(name, config_map, secret, _job(settings, meta(), items, argv, timeout_s))


def _job(settings: KubernetesSettings, meta: dict[str, Any], items: list[dict[str, str]],
         argv: list[str], timeout_s: int | None) -> dict[str, Any]:
    name = meta["name"]
    container = {
        "name": "job",
        "image": settings.image,
        "command": [*POD_RUNNER, "--code", CODE_MOUNT, "--",
                    *("python" if a == PYTHON else a for a in argv)],
        "workingDir": WORKDIR,
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": WORKDIR},
                {"name": "TMPDIR", "value": TMP_DIR}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                {"name": "CONTROLROOM_OUTPUT_DIR", "value": OUTPUT_DIR}],
        "envFrom": [{"secretRef": {"name": name}}],
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": settings.memory},
            "limits": {"cpu": settings.cpu_limit or settings.cpu,
                       "memory": settings.memory_limit or settings.memory},
        },
        "volumeMounts": [{"name": "code", "mountPath": CODE_MOUNT, "readOnly": True},
                         {"name": "workspace", "mountPath": WORKDIR},
                         {"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": JOB_UID, "runAsGroup": JOB_GID,
            "readOnlyRootFilesystem": True,  # writable: the working dir and /tmp only
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # job code gets no cluster credentials
        "enableServiceLinks": False,  # nor the addresses of the namespace's services in its env
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": JOB_UID, "runAsGroup": JOB_GID, "fsGroup": JOB_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "code", "configMap": {"name": name, "items": items}},
                    {"name": "workspace", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
    }
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
        "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod},
    }
    if timeout_s:
        spec["activeDeadlineSeconds"] = int(timeout_s) + DEADLINE_GRACE_S
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def owned_by(job: dict[str, Any]) -> dict[str, Any]:
    """A patch making an object the Job's, so Kubernetes deletes it with the Job (its TTL)."""
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
           "uid": job["metadata"]["uid"], "blockOwnerDeletion": False}
    return {"metadata": {"ownerReferences": [ref]}}
