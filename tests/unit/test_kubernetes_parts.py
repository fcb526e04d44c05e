"""The Kubernetes executor's pure parts: manifests, failure reasons, routing, settings, pre-flight.

Status objects are the `kubernetes` client's own models, built as the client would decode them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1JobStatus,
    V1Pod,
    V1PodCondition,
    V1PodStatus,
)

from controlroom.adapters.execution.local_executor import LocalExecutor
from controlroom.adapters.execution.routing_executor import RoutingExecutor
from controlroom.adapters.kubernetes.manifests import DEADLINE_GRACE_S, MAX_CODE_BYTES, build, owned_by
from controlroom.adapters.kubernetes.status import failed, pending_reason
from controlroom.adapters.runs.preflight import LocalTools
from controlroom.cli.wiring import NO_KUBERNETES, executor
from controlroom.commands.ports import PYTHON, Attempt, Launch, PlanError
from controlroom.settings import KubernetesSettings, Settings, from_env
from controlroom.validation import Job, Preflight

UNUSED = Path("/nonexistent")
RUN = uuid.UUID("6f1c1a52-53b4-4c1e-9a56-2f1c9f0a8e11")
K8S = KubernetesSettings(namespace="jobs", image="registry.example/controlroom:1.2", cpu="2",
                         memory="4Gi", memory_limit="6Gi", service_account="runner",
                         ttl_after_finished_s=600)


def manifests(**overrides: object) -> object:
    args: dict[str, object] = dict(
        run_id=RUN, attempt=2, files={"main.py": "print(1)", "lib/util.py": "X = 1"},
        argv=[PYTHON, "-u", "main.py"], env={"API_TOKEN": "s3cr3t", "CONTROLROOM_TOKEN": "tok"},
        timeout_s=900,
    )
    args.update(overrides)
    return build(K8S, **args)  # type: ignore[arg-type]


def test_the_job_is_named_and_labelled_after_its_run_and_attempt_and_never_retried() -> None:
    m = manifests()
    name = f"controlroom-run-{RUN}-2"
    assert m.name == m.job["metadata"]["name"] == m.config_map["metadata"]["name"] == name
    assert len(name) <= 63
    labels = m.job["spec"]["template"]["metadata"]["labels"]
    assert labels["controlroom/run-id"] == str(RUN) and labels["controlroom/attempt"] == "2"
    spec = m.job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 900 + DEADLINE_GRACE_S
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert "activeDeadlineSeconds" not in manifests(timeout_s=None).job["spec"]


def test_the_container_runs_the_launch_with_python_under_the_pod_runner_with_configured_resources() -> None:
    pod = manifests().job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/controlroom:1.2"
    assert container["command"] == ["python", "-m", "controlroom.runners.pod", "--code", "/controlroom/code",
                                    "--", "python", "-u", "main.py"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"},
                                      "limits": {"cpu": "2", "memory": "6Gi"}}
    assert pod["serviceAccountName"] == "runner"
    assert pod["automountServiceAccountToken"] is False


def test_the_pod_is_locked_down_for_untrusted_code() -> None:
    pod = manifests().job["spec"]["template"]["spec"]  # type: ignore[attr-defined]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    for context in (pod["securityContext"], pod["containers"][0]["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in container and "add" not in container["capabilities"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_only_the_working_dir_and_tmp_are_writable_and_both_are_empty_dirs() -> None:
    pod = manifests().job["spec"]["template"]["spec"]  # type: ignore[attr-defined]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]
                if not m.get("readOnly")}
    assert set(writable) == {container["workingDir"], "/tmp"}
    assert all("emptyDir" in v for v in writable.values())
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == container["workingDir"]
    assert env["CONTROLROOM_OUTPUT_DIR"].startswith(container["workingDir"] + "/")


def test_code_goes_in_the_config_map_and_the_environment_only_in_the_secret() -> None:
    m = manifests()
    items = m.job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"]
    assert {i["path"]: m.config_map["data"][i["key"]] for i in items} == {
        "main.py": "print(1)", "lib/util.py": "X = 1"}
    assert all("/" not in key for key in m.config_map["data"])
    assert m.secret["stringData"] == {"API_TOKEN": "s3cr3t", "CONTROLROOM_TOKEN": "tok"}
    for public in (m.job, m.config_map):
        assert "s3cr3t" not in json.dumps(public) and "tok\"" not in json.dumps(public)


def test_code_too_big_for_a_config_map_or_env_names_a_secret_cant_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="ConfigMap"):
        manifests(files={"main.py": "x" * (MAX_CODE_BYTES + 1)})
    with pytest.raises(ValueError, match="BAD NAME"):
        manifests(env={"BAD NAME": "v"})


def test_the_secret_and_config_map_are_made_the_jobs_so_its_ttl_removes_them() -> None:
    patch = owned_by({"metadata": {"name": "j", "uid": "u-1"}})
    assert patch["metadata"]["ownerReferences"][0] == {
        "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-1", "blockOwnerDeletion": False}


def _job(reason: str, message: str) -> V1Job:
    condition = V1JobCondition(type="Failed", status="True", reason=reason, message=message)
    return V1Job(status=V1JobStatus(failed=1, conditions=[condition]))


def _pod(*, terminated: V1ContainerStateTerminated | None = None,
         waiting: V1ContainerStateWaiting | None = None) -> V1Pod:
    status = V1ContainerStatus(name="job", image="i", image_id="", ready=False, restart_count=0,
                               state=V1ContainerState(terminated=terminated, waiting=waiting))
    return V1Pod(status=V1PodStatus(phase="Pending", container_statuses=[status]))


def test_an_oom_killed_container_fails_with_its_exit_code_and_says_so_in_the_log() -> None:
    pod = _pod(terminated=V1ContainerStateTerminated(exit_code=137, reason="OOMKilled"))
    outcome = failed(_job("BackoffLimitExceeded", "Job has reached the specified backoff limit"), pod)
    assert outcome.code == 137 and outcome.failure is None
    assert outcome.notes == ["Kubernetes: the container was terminated: OOMKilled (exit code 137)"]


def test_a_job_past_its_kubernetes_deadline_fails_as_a_timeout_naming_deadline_exceeded() -> None:
    outcome = failed(_job("DeadlineExceeded", "Job was active longer than specified deadline"), None)
    assert outcome.failure is not None and outcome.failure[0] == "timeout"
    assert "DeadlineExceeded: Job was active longer than specified deadline" in outcome.failure[1]


def test_a_plain_error_exit_needs_no_note_the_jobs_stderr_explains_it() -> None:
    pod = _pod(terminated=V1ContainerStateTerminated(exit_code=3, reason="Error"))
    outcome = failed(_job("BackoffLimitExceeded", "limit"), pod)
    assert (outcome.code, outcome.failure, outcome.notes) == (3, None, [])


def test_a_pending_pod_is_explained_by_its_image_problem_or_the_schedulers_verdict() -> None:
    pulling = _pod(waiting=V1ContainerStateWaiting(reason="ImagePullBackOff", message="Back-off pulling x"))
    assert pending_reason(pulling) == "ImagePullBackOff: Back-off pulling x"
    unscheduled = V1Pod(status=V1PodStatus(phase="Pending", conditions=[V1PodCondition(
        type="PodScheduled", status="False", reason="Unschedulable", message="0/3 nodes are available")]))
    assert pending_reason(unscheduled) == "Unschedulable: 0/3 nodes are available"
    assert "no pod was created" in pending_reason(None)


def test_a_run_asking_for_kubernetes_on_a_worker_without_it_fails_with_a_clear_reason() -> None:
    routing = executor(Settings(data_dir="/tmp/unused"))  # type: ignore[arg-type]
    with pytest.raises(PlanError) as raised:
        routing.launch(files={"main.py": ""}, launch=Launch(argv=[PYTHON, "main.py"]), env={},
                       attempt=Attempt(RUN, 1, executor="kubernetes"))
    assert raised.value.reason == "executor_unavailable"
    assert raised.value.message == NO_KUBERNETES


def test_runs_without_an_executor_of_their_own_take_the_workers_default() -> None:
    chosen: list[str] = []

    class Recording:
        def __init__(self, name: str) -> None:
            self.name = name

        def launch(self, **_: object) -> object:
            chosen.append(self.name)
            return object()

    routing = RoutingExecutor({"local": Recording("local"), "kubernetes": Recording("kubernetes")},
                              "kubernetes")
    for asked in (None, "local", "kubernetes"):
        routing.launch(files={}, launch=Launch(argv=[]), env={}, attempt=Attempt(RUN, 1, executor=asked))
    assert chosen == ["kubernetes", "local", "kubernetes"]
    assert isinstance(executor(Settings(data_dir=UNUSED)).executors["local"], LocalExecutor)


def test_kubernetes_settings_come_from_the_environment_and_a_bad_executor_is_refused() -> None:
    s = from_env({"CONTROLROOM_EXECUTOR": "kubernetes", "CONTROLROOM_K8S_NAMESPACE": "jobs",
                  "CONTROLROOM_K8S_CPU": "500m", "CONTROLROOM_K8S_PENDING_TIMEOUT_S": "30"})
    assert s.executor == "kubernetes" and s.executors == ("local", "kubernetes")
    assert (s.k8s.namespace, s.k8s.cpu, s.k8s.pending_timeout_s) == ("jobs", "500m", 30.0)
    assert from_env({}).executors == ("local",)
    with pytest.raises(ValueError, match="CONTROLROOM_EXECUTOR"):
        from_env({"CONTROLROOM_EXECUTOR": "nomad"})


def test_pre_flight_reports_a_kubernetes_run_where_kubernetes_is_not_configured() -> None:
    job = Job.of("spark_etl", [{"path": "main.py", "content": "print(1)"}], {"executor": "kubernetes"})
    report = asyncio.run(Preflight(LocalTools()).validate(job, "acme"))
    assert not report.valid
    [(check, issue)] = report.errors()
    assert (check, issue.path) == ("dependencies", "spec.executor")
    assert "CONTROLROOM_K8S_NAMESPACE" in issue.message
    configured = Preflight(LocalTools(), executors=("local", "kubernetes"))
    assert asyncio.run(configured.validate(job, "acme")).valid
