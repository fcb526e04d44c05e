"""A fake Kubernetes API server: real HTTP in a thread, only what the executor uses.

No cluster can run here, so the cluster is the one thing faked. It creates and deletes
ConfigMaps, Secrets and Jobs, lists pods by label and serves a pod's log (followed), and it
really *runs* each Job's container command as a local subprocess: volumes become temp dirs (a
ConfigMap's items written into one, an emptyDir empty), their mount paths are rewritten in the
command, working dir and env, and the env is the container's `env` plus its `envFrom` Secret,
over an "image" environment of this interpreter (PATH) and this checkout (PYTHONPATH). stdout
and stderr go to one log, as a kubelet keeps it. Setting `unschedulable` keeps new pods
Pending with that scheduler message. Every request body is kept in `received`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import controlroom

REPO_ROOT = Path(controlroom.__file__).resolve().parent.parent
KILL_GRACE_S = 2.0
_CORE = re.compile(r"^/api/v1/namespaces/([^/]+)/(configmaps|secrets|pods)(?:/([^/]+))?(/log)?$")
_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakePod:
    """A Job's one pod: its object, its process and its log file."""

    def __init__(self, job: dict[str, Any]) -> None:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        labels = {**template["metadata"].get("labels", {}), "job-name": job["metadata"]["name"]}
        self.obj: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "uid": str(uuid.uuid4()),
                         "creationTimestamp": _now()},
            "spec": template["spec"], "status": {"phase": "Pending", "conditions": []},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="fake-pod-"))
        self.log = self.dir / "log"
        self.log.touch()

    def container_status(self, state: dict[str, Any]) -> None:
        container = self.obj["spec"]["containers"][0]
        self.obj["status"]["containerStatuses"] = [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "restartCount": 0, "state": state}]


class FakeKubernetes:
    """The API server's state and the pods it runs."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[str, FakePod] = {}
        self.received: list[tuple[str, str, Any]] = []
        self.unschedulable: str | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubernetes:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for pod in list(self.pods.values()):
            self._stop(pod)
            shutil.rmtree(pod.dir, ignore_errors=True)
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, kind: str) -> list[Any]:
        """Bodies of the create requests for `kind` (configmaps, secrets, jobs)."""
        return [b for m, p, b in self.received if m == "POST" and p.endswith(f"/{kind}")]

    def deletes(self, kind: str) -> list[str]:
        """Paths (with query) of the DELETE requests for `kind`."""
        return [p for m, p, _ in self.received if m == "DELETE" and f"/{kind}/" in p]

    def exists(self, kind: str, name: str) -> bool:
        """Whether an object of `kind` named `name` exists now."""
        return any(k == kind and n == name for k, _, n in self.objects)

    def create(self, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(body))
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                    resourceVersion="1")
        if kind == "secrets":  # the API server keeps stringData as base64 data
            data = obj.setdefault("data", {})
            for k, v in (obj.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(v.encode()).decode()
        with self.lock:
            self.objects[(kind, ns, meta["name"])] = obj
        if kind == "jobs":
            obj["status"] = {}
            pod = FakePod(obj)
            with self.lock:
                self.pods[meta["name"]] = pod
            threading.Thread(target=self._run, args=(ns, obj, pod), daemon=True).start()
        return obj

    def delete(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.pop((kind, ns, name), None)
            pod = self.pods.pop(name, None) if kind == "jobs" else None
        if pod is not None:
            self._stop(pod)
            shutil.rmtree(pod.dir, ignore_errors=True)
        return obj

    def _stop(self, pod: FakePod) -> None:
        if pod.proc is not None and pod.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGTERM)
            try:
                pod.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait()

    def _run(self, ns: str, job: dict[str, Any], pod: FakePod) -> None:
        if self.unschedulable is not None:
            pod.obj["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                                "reason": "Unschedulable", "message": self.unschedulable}]
            return
        spec = pod.obj["spec"]
        container = spec["containers"][0]
        mounts = self._mount(ns, spec, container, pod.dir)

        def local(value: str) -> str:
            for path, where in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == path or value.startswith(path + "/"):
                    return str(where) + value[len(path):]
            return value

        env = {"PATH": f"{Path(sys.executable).parent}:{os.defpath}", "PYTHONPATH": str(REPO_ROOT),
               **self._env_from(ns, container)}
        env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
        env = {k: local(v) for k, v in env.items()}
        command = [local(a) for a in container["command"] + container.get("args", [])]
        with pod.log.open("wb") as out:
            pod.proc = subprocess.Popen(command, cwd=local(container["workingDir"]), env=env,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pod.obj["status"]["phase"] = "Running"
        pod.container_status({"running": {"startedAt": _now()}})
        job["status"] = {"active": 1, "startTime": _now()}
        deadline = job["spec"].get("activeDeadlineSeconds")
        try:
            code = pod.proc.wait(timeout=deadline)
            reason = None
        except subprocess.TimeoutExpired:
            self._stop(pod)
            code, reason = pod.proc.wait(), "DeadlineExceeded"
        code = 128 - code if code < 0 else code
        pod.obj["status"]["phase"] = "Succeeded" if code == 0 and not reason else "Failed"
        ended = "Completed" if code == 0 else "Error"
        pod.container_status({"terminated": {"exitCode": code, "reason": ended, "finishedAt": _now()}})
        if pod.obj["status"]["phase"] == "Succeeded":
            job["status"] = {"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": _now()}]}
        else:
            message = ("Job was active longer than specified deadline" if reason
                       else "Job has reached the specified backoff limit")
            job["status"] = {"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded",
                 "message": message, "lastTransitionTime": _now()}]}

    def _mount(self, ns: str, spec: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, Path]:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            where = root / mount["name"]
            where.mkdir()
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = self._wait_for("configmaps", ns, volume["configMap"]["name"])["data"]
                for item in volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                    target = where / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
            mounts[mount["mountPath"]] = where
        return mounts

    def _env_from(self, ns: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            secret = self._wait_for("secrets", ns, source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        return env

    def _wait_for(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        """As a kubelet does: the pod waits until the object it needs exists."""
        deadline = time.monotonic() + 10
        while (obj := self.objects.get((kind, ns, name))) is None:
            assert time.monotonic() < deadline, f"{kind}/{name} never appeared"
            time.sleep(0.05)
        return obj

    def follow(self, name: str) -> Iterator[bytes]:
        """The log of pod `name`, as it grows, until its process has ended."""
        pod = next((p for p in list(self.pods.values()) if p.obj["metadata"]["name"] == name), None)
        if pod is None:
            return
        with pod.log.open("rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                if pod.proc is None or pod.proc.poll() is not None:
                    if not (rest := f.read()):
                        return
                    yield rest
                time.sleep(0.05)


def _handler(k8s: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else None

        def _send(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, what: str) -> None:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404, "message": f"{what} not found"})

        def handle_one(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = self._body() if method in ("POST", "PATCH", "DELETE") else None
            k8s.received.append((method, self.path, body))
            if m := _JOBS.match(url.path):
                ns, name = m[1], m[2]
                self._route("jobs", method, ns, name, body)
            elif m := _CORE.match(url.path):
                ns, kind, name, log = m[1], m[2], m[3], m[4]
                if kind == "pods" and log:
                    self._log(name, query)
                elif kind == "pods":
                    self._pods(query.get("labelSelector", ""))
                else:
                    self._route(kind, method, ns, name, body)
            else:
                self._not_found(url.path)

        def _route(self, kind: str, method: str, ns: str, name: str | None, body: Any) -> None:
            if method == "POST":
                self._send(201, k8s.create(kind, ns, body))
                return
            obj = k8s.objects.get((kind, ns, name or ""))
            if obj is None:
                self._not_found(f"{kind} {name!r}")
            elif method == "GET":
                self._send(200, obj)
            elif method == "PATCH":
                obj["metadata"].update((body or {}).get("metadata", {}))
                self._send(200, obj)
            elif method == "DELETE":
                k8s.delete(kind, ns, name or "")
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        def _pods(self, selector: str) -> None:
            wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
            items = [p.obj for p in list(k8s.pods.values())
                     if all(p.obj["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
            self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

        def _log(self, name: str, query: dict[str, str]) -> None:
            pod = next((p for p in list(k8s.pods.values()) if p.obj["metadata"]["name"] == name), None)
            if pod is None or pod.proc is None:
                self._send(400, {"kind": "Status", "status": "Failure", "code": 400,
                                 "message": f"container in pod {name} is waiting to start"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks = k8s.follow(name) if query.get("follow") == "true" else iter([pod.log.read_bytes()])
            with contextlib.suppress(OSError):
                for chunk in chunks:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            self.handle_one("GET")

        def do_POST(self) -> None:
            self.handle_one("POST")

        def do_PATCH(self) -> None:
            self.handle_one("PATCH")

        def do_DELETE(self) -> None:
            self.handle_one("DELETE")

    return Handler

