"""Runs go to Kubernetes as batch/v1 Jobs: logs, progress, outputs, failures, cancel, Pending.

No Kubernetes cluster can run here, so the cluster is the one thing faked: `tests/kubernetes_fake.py`
is a real HTTP server in a thread implementing just the endpoints the executor calls, and it
really runs each Job's container command as a local subprocess (code from the ConfigMap, env
from the Secret). The official `kubernetes` client is pointed at it with a client
`Configuration` whose host is the fake's URL. The API is served for real (uvicorn on a free
port, in a thread) because the pod uploads its outputs over HTTP with its run token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s_client
from litestar.testing import TestClient

from controlroom.api.auth import ALL_SCOPES, issue_token
from controlroom.cli import bootstrap, build_app
from controlroom.settings import KubernetesSettings, Settings
from tests.conftest import job
from tests.kubernetes_fake import FakeKubernetes
from tests.live_events import free_port, serve_in_thread

PENDING_TIMEOUT_S = 3.0
TERMINAL = {"completed", "failed", "cancelled"}
SPARK_STYLE = """\
import os, sys
from pathlib import Path
print("::progress 10 reading orders", flush=True)
print("loaded 3 rows", flush=True)
print("2 rows had no customer", file=sys.stderr, flush=True)
out = Path(os.environ["CONTROLROOM_OUTPUT_DIR"])
(out / "report.csv").write_text("id,total\\n1,9\\n")
print("::progress 100 written", flush=True)
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        yield fake


@pytest.fixture(scope="module")
def api(
    make_server_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory, cluster: FakeKubernetes
) -> Iterator[httpx.Client]:
    """A client of an API really listening, whose worker runs jobs on the fake cluster by default."""
    port = free_port()  # the jobs reach the API here, so it is known before it starts
    secret = "k8s-secret-" + uuid.uuid4().hex
    settings = Settings(
        database_url=make_server_database(), data_dir=tmp_path_factory.mktemp("k8s-data"),
        jwt_secret=secret, port=port, worker_slots=4, executor="kubernetes",
        k8s=KubernetesSettings(namespace="jobs", image="controlroom:test",
                               pending_timeout_s=PENDING_TIMEOUT_S),
    )
    kube = k8s_client.ApiClient(k8s_client.Configuration(host=cluster.url))
    with bootstrap(settings, kube_client=kube) as services, \
            serve_in_thread(build_app(services), port) as url:
        token = issue_token(services.jwt_secret, tenant="acme", sub="alice", scopes=ALL_SCOPES, ttl_s=600)
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            yield http


def submit(api: httpx.Client, source: str, **spec: Any) -> str:
    body = {"job_type": "spark_etl", "code": {"files": [{"path": "main.py", "content": source}]},
            "spec": {"description": "nightly orders", **spec}, "timeout_s": 600}
    resp = api.post("/api/v1/jobs/run", json=body)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def wait_for(api: httpx.Client, run_id: str, statuses: set[str] = TERMINAL,
             timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in statuses or time.monotonic() > deadline:
            assert run["status"] in statuses, run
            return run
        time.sleep(0.1)


def until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def job_of(cluster: FakeKubernetes, run_id: str) -> dict[str, Any]:
    jobs = [j for j in cluster.bodies("jobs") if j["metadata"]["labels"]["controlroom/run-id"] == run_id]
    assert len(jobs) == 1
    return jobs[0]


def test_a_python_job_runs_as_a_kubernetes_job_with_its_log_progress_and_output_artifact(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    run_id = submit(api, SPARK_STYLE)
    run = wait_for(api, run_id)
    assert run["status"] == "completed", run
    assert run["exit_code"] == 0
    assert run["progress"]["percent"] == 100
    assert "loaded 3 rows" in api.get(f"/api/v1/runs/{run_id}/logs").text
    stderr = api.get(f"/api/v1/runs/{run_id}/logs", params={"stream": "stderr"}).text
    assert "2 rows had no customer" in stderr and "::stderr" not in stderr
    report = next(a for a in run["artifacts"] if a["path"] == "report.csv")
    assert api.get(report["url"]).text == "id,total\n1,9\n"

    job = job_of(cluster, run_id)
    name = f"controlroom-run-{run_id}-1"
    assert job["metadata"]["name"] == name
    assert job["metadata"]["labels"]["controlroom/attempt"] == "1"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 60
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "controlroom:test"
    assert container["command"][-3:] == ["python", "-u", "main.py"]
    assert container["envFrom"] == [{"secretRef": {"name": name}}]
    until(lambda: not any(cluster.exists(kind, name) for kind in ("jobs", "configmaps", "secrets")))


def test_a_failing_job_fails_the_run_with_its_exit_code_and_stderr(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    run_id = submit(api, "import sys\nprint('bad input row 7', file=sys.stderr)\nsys.exit(3)\n")
    run = wait_for(api, run_id)
    assert run["status"] == "failed"
    assert run["exit_code"] == 3
    assert run["error"]["reason"] == "exit_code"
    assert "bad input row 7" in run["error"]["message"]


def test_cancelling_a_running_job_deletes_its_kubernetes_job_in_the_foreground(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    source = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)\n"
    run_id = submit(api, source)
    until(lambda: "tick" in api.get(f"/api/v1/runs/{run_id}/logs").text, timeout=30)
    name = f"controlroom-run-{run_id}-1"
    pod = cluster.pods[name]
    assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code in (200, 202)
    run = wait_for(api, run_id)
    assert run["status"] == "cancelled"
    assert any(name in p and "propagationPolicy=Foreground" in p for p in cluster.deletes("jobs"))
    assert pod.proc is not None and pod.proc.poll() is not None
    assert not cluster.exists("jobs", name)


def test_secrets_reach_the_job_only_through_the_kubernetes_secret_and_never_its_log(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    value = "s3cr3t-" + uuid.uuid4().hex
    source = "import os\nprint('token is', os.environ['API_TOKEN'])\nassert os.environ['CONTROLROOM_TOKEN']\n"
    run_id = submit(api, source, secrets={"API_TOKEN": value})
    run = wait_for(api, run_id)
    assert run["status"] == "completed", run
    assert "token is ***" in api.get(f"/api/v1/runs/{run_id}/logs").text
    name = f"controlroom-run-{run_id}-1"
    secret = next(s for s in cluster.bodies("secrets") if s["metadata"]["name"] == name)
    assert secret["stringData"]["API_TOKEN"] == value
    token = secret["stringData"]["CONTROLROOM_TOKEN"]
    others = [b for m, p, b in cluster.received if name in json.dumps(b) and "/secrets" not in p]
    assert others, "the Job and ConfigMap were received"
    for body in others:
        assert value not in json.dumps(body) and token not in json.dumps(body)
    assert value not in json.dumps(run)


def test_a_pod_stuck_pending_fails_the_run_with_the_reason_within_the_configured_bound(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    cluster.unschedulable = "0/3 nodes are available: 3 Insufficient memory."
    try:
        started = time.monotonic()
        run_id = submit(api, "print('never runs')\n")
        run = wait_for(api, run_id, timeout=PENDING_TIMEOUT_S + 15)
        elapsed = time.monotonic() - started
    finally:
        cluster.unschedulable = None
    assert run["status"] == "failed"
    assert run["error"]["reason"] == "pending_timeout"
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient memory." in run["error"]["message"]
    assert run["exit_code"] is None
    assert PENDING_TIMEOUT_S <= elapsed < PENDING_TIMEOUT_S + 10
    assert "Insufficient memory" in api.get(f"/api/v1/runs/{run_id}/logs").text
    until(lambda: not cluster.exists("jobs", f"controlroom-run-{run_id}-1"))


def test_a_run_asking_for_the_local_executor_runs_locally_beside_a_kubernetes_default(
    api: httpx.Client, cluster: FakeKubernetes
) -> None:
    run_id = submit(api, "print('on the worker itself')\n", executor="local")
    run = wait_for(api, run_id)
    assert run["status"] == "completed"
    assert "on the worker itself" in api.get(f"/api/v1/runs/{run_id}/logs").text
    assert not [j for j in cluster.bodies("jobs") if run_id in json.dumps(j)]


def test_a_deployment_without_kubernetes_refuses_runs_asking_for_it_before_they_run(
    client: TestClient[Any], auth: dict[str, str]
) -> None:
    body = job("print(1)\n", spec={"description": "x", "executor": "kubernetes"})
    report = client.post("/api/v1/jobs/validate", json=body, headers=auth).json()
    assert report["valid"] is False
    deps = next(c for c in report["checks"] if c["name"] == "dependencies")
    assert deps["errors"][0]["path"] == "spec.executor"
    assert "CONTROLROOM_K8S_NAMESPACE" in deps["errors"][0]["message"]
    refused = client.post("/api/v1/jobs/run", json=body, headers=auth)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "spec.executor"
    unknown = job("print(1)\n", spec={"description": "x", "executor": "nomad"})
    assert client.post("/api/v1/jobs/run", json=unknown, headers=auth).status_code == 422
